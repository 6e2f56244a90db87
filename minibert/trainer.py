"""The training loop: fine-tune or linear-probe one configuration, evaluate every epoch, keep the best.

    from minibert.trainer import TrainConfig, train
    result = train(TrainConfig(model="large", corrupt="top:0.5"))   # what `python train.py ...` does

A run is one directory (`out`):
    config.json      every argument, versions, device, precision, dataset notes
    corruption.json  the corruption report (also inside result.json)
    metrics.jsonl    one line per epoch: test weighted/macro F1, accuracy, loss; train loss, tokens/s
    result.json      the best epoch and its metrics, the majority baseline, `diverged`, time, tokens/s
    model/           with save_model: the best epoch's classifier (HF-compatible safetensors + tokenizer)
    checkpoint.pt    only while unfinished: what a resume needs (deleted at the end unless keep_checkpoint)
Every file is written to a temporary name and renamed, so a crash never leaves half a file.
Scores are fractions in [0, 1]; printed summaries show percentages like the paper.

Protocol (the paper, section 4): AdamW, lr from {1e-5, 2e-5, 5e-5} (lr="sweep" runs all three as
sub-runs out/lr_1e-05, ... and keeps the best), 10 epochs, batch 32, evaluate after every epoch, report
the best epoch's weighted F1. What the paper leaves open follows BERT's recipe: weight decay 0.01 on
matrices only, linear warmup over 10% of the steps then linear decay to 0, gradients clipped at norm 1.
A run whose best weighted F1 is at or below the majority-class baseline is flagged `diverged` (the
paper's 16.98% outliers); so is one stopped by a NaN/inf loss.

Resume: checkpoint.pt holds model, optimiser, scheduler, grad-scaler and RNG states after each epoch.
The batch order is a pure function of (seed, epoch), so that is all a resumed run needs to end exactly
where an uninterrupted one does. MINIBERT_STOP_AFTER_EPOCH=N (or stop_after_epoch=N) stops a run after
epoch N as if it had been killed there; tests use it.

Multi-GPU (`torchrun --nproc_per_node=N train.py ...`): batch_size stays the global batch; each rank
takes every N-th micro-batch, DDP averages gradients, every rank evaluates every N-th test batch and the
predictions are gathered so that all ranks agree on the metrics. Rank 0 writes the files.
"""
import json
import math
import os
import platform
import re
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from .checkpoint import TOKENIZER_FILES, load_pretrained, resolve, save_pretrained
from .config import PRESETS, BertConfig
from .corrupt import corrupt, parse_spec
from .data import batches, encode
from .datasets import DATASETS, load_dataset
from .heads import SequenceClassifier
from .metrics import classification_metrics, majority_baseline
from .tokenizer import load_tokenizer

PAPER_LRS = (1e-5, 2e-5, 5e-5)
METRICS = ("weighted_f1", "macro_f1", "accuracy")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
LOG_EVERY = 20  # optimiser steps between the loss syncs that feed the progress bar and the NaN check


@dataclass
class TrainConfig:
    # what
    model: str = "base"            # preset base|large|distil, a checkpoint directory, or a hub id
    dataset: str = "sst2"
    data_dir: str | None = None    # local folder with the dataset's files; None = the Hugging Face Hub
    split: str = "paper"           # paper (Table 1 sizes) | official
    limit: int | None = None       # cap train and test at this many examples each
    max_length: int | None = None  # None = the dataset's default (128 for SST-2)
    corrupt: str = "none"          # corruption spec, see minibert/corrupt.py
    pooling: str = "cls"           # cls | mean
    mode: str = "finetune"         # finetune | probe
    seed: int = 0
    # how
    lr: float | str = "sweep"      # a learning rate, or "sweep" over PAPER_LRS
    epochs: int = 10
    batch_size: int = 32           # examples per optimiser step, over all ranks and accumulation steps
    grad_accum: int = 1
    weight_decay: float = 0.01
    warmup: float = 0.1            # fraction of all steps
    grad_clip: float = 1.0
    metric: str = "weighted_f1"    # picks the best epoch and the best lr
    precision: str = "auto"        # auto | bf16 | fp16 | fp32
    compile: bool = False
    device: str = "auto"
    # where
    out: str | None = None         # None = runs/<dataset>-<model>-<corrupt>-<mode>-<pooling>-lr<lr>-s<seed>
    save_model: bool = False
    resume: bool = False
    keep_checkpoint: bool = False
    cache_dir: str | None = None   # token cache folder (tokenise each split once across runs)
    stop_after_epoch: int | None = None


# Fields that do not change what a run computes: a resume may differ in them.
NOT_IDENTITY = {"out", "resume", "keep_checkpoint", "stop_after_epoch", "device", "compile", "cache_dir",
                "save_model"}


def validate(cfg: TrainConfig) -> TrainConfig:
    """Check every argument that needs no files; returns cfg with lr as a float (or "sweep")."""
    def choice(name, options):
        if getattr(cfg, name) not in options:
            raise ValueError(f"--{name.replace('_', '-')} must be one of {', '.join(options)}, got {getattr(cfg, name)!r}")
    if cfg.dataset not in DATASETS:
        raise ValueError(f"unknown dataset {cfg.dataset!r}; known: {', '.join(DATASETS)}")
    choice("split", ("paper", "official"))
    choice("mode", ("finetune", "probe"))
    choice("pooling", ("cls", "mean"))
    choice("precision", ("auto", "bf16", "fp16", "fp32"))
    choice("metric", METRICS)
    lr = cfg.lr
    if lr != "sweep":
        try:
            lr = float(lr)
        except ValueError:
            raise ValueError(f"--lr must be a number such as 2e-5, or 'sweep', got {cfg.lr!r}") from None
        if not (lr > 0 and math.isfinite(lr)):
            raise ValueError(f"--lr must be positive, got {cfg.lr!r}")
    for name, low in (("epochs", 1), ("batch_size", 1), ("grad_accum", 1), ("limit", 1), ("max_length", 2)):
        value = getattr(cfg, name)
        if value is not None and value < low:
            raise ValueError(f"--{name.replace('_', '-')} must be at least {low}, got {value}")
    world = int(os.environ.get("WORLD_SIZE", 1))
    if cfg.batch_size % (cfg.grad_accum * world):
        raise ValueError(f"--batch-size {cfg.batch_size} must be divisible by --grad-accum {cfg.grad_accum} "
                         f"x {world} processes")
    if not 0 <= cfg.warmup < 1 or cfg.weight_decay < 0 or cfg.grad_clip <= 0:
        raise ValueError("need 0 <= --warmup < 1, --weight-decay >= 0 and --grad-clip > 0")
    if cfg.model in PRESETS:  # a bad spec is caught before any download; other models once config.json is read
        parse_spec(cfg.corrupt, PRESETS[cfg.model][1].num_hidden_layers)
    paths = {k: str(getattr(cfg, k)) for k in ("model", "data_dir", "out", "cache_dir") if getattr(cfg, k) is not None}
    return replace(cfg, lr=lr, **paths)  # Path arguments become strings, as the command line gives them


def default_out(cfg: TrainConfig) -> Path:
    lr = cfg.lr if cfg.lr == "sweep" else f"{cfg.lr:g}"
    name = f"{cfg.dataset}-{Path(cfg.model).name}-{cfg.corrupt}-{cfg.mode}-{cfg.pooling}-lr{lr}-s{cfg.seed}"
    return Path("runs") / re.sub(r"[^\w.%+@=-]+", "_", name)


# ---- devices and precision ----------------------------------------------------------------------

def setup_device(name: str = "auto") -> tuple[torch.device, int, int]:
    """(device, rank, world size); joins the process group when started by torchrun."""
    rank, world, local = (int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)))
    try:
        device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name} asks for a GPU, but torch sees no CUDA device here")
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.fp32_precision = "tf32"  # fp32 matmuls (the fp32 precision mode, the head) on tensor cores
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device, rank, world


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"  # autocast on a CPU is slower than fp32 on most CPUs; ask for bf16 explicitly


def autocast(device: torch.device, precision: str):
    return nullcontext() if precision == "fp32" else torch.autocast(device.type, dtype=DTYPES[precision])


# ---- data and evaluation ------------------------------------------------------------------------

@dataclass
class Prepared:
    """What every run of one configuration shares (a sweep prepares once): checkpoint, data, tokens."""
    checkpoint: Path
    config: BertConfig
    dataset: object
    tokenizer: object
    max_length: int
    train: object  # Encoded
    test: object


def prepare(cfg: TrainConfig) -> Prepared:
    """Resolve the model, check the corruption spec, load and tokenise the data; all input errors land here."""
    checkpoint = resolve(cfg.model)
    config = BertConfig.from_json(checkpoint / "config.json")
    parse_spec(cfg.corrupt, config.num_hidden_layers)
    ds = load_dataset(cfg.dataset, cfg.data_dir, cfg.split, cfg.seed, cfg.limit)
    tokenizer = load_tokenizer(checkpoint)
    max_length = min(cfg.max_length or ds.spec.max_length, config.max_position_embeddings)
    train_enc = encode(ds.train, tokenizer, max_length, cfg.cache_dir)
    test_enc = encode(ds.test, tokenizer, max_length, cfg.cache_dir)
    world = int(os.environ.get("WORLD_SIZE", 1))
    if cfg.mode == "finetune" and len(train_enc) <= cfg.batch_size // (cfg.grad_accum * world) * (world - 1):
        raise ValueError(f"{len(train_enc)} training examples leave some of the {world} processes without a batch; "
                         "use fewer processes or a smaller --batch-size")
    return Prepared(checkpoint, config, ds, tokenizer, max_length, train_enc, test_enc)


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def extract(clf, enc, batch_size, device, precision, pad_id, rank=0, world=1):
    """Pooled features (n, H) in fp32 and labels (n,) of this rank's share of `enc` (every world-th batch)."""
    clf.eval()
    feats, labels = [torch.zeros(0, clf.config.hidden_size, device=device)], [torch.zeros(0, dtype=torch.long, device=device)]
    for i, batch in enumerate(batches(enc, batch_size, shuffle=False, pad_id=pad_id)):
        if i % world == rank:
            b = to_device(batch, device)
            with autocast(device, precision):
                f = clf.features(b["input_ids"], b["attention_mask"], b["token_type_ids"])
            feats.append(f.float())
            labels.append(b["labels"])
    return torch.cat(feats), torch.cat(labels)


def _gather(t: torch.Tensor, world: int) -> torch.Tensor:
    if world == 1:
        return t.cpu()
    parts = [None] * world
    dist.all_gather_object(parts, t.cpu())
    return torch.cat(parts)


@torch.no_grad()
def evaluate(clf, feats, labels, world=1) -> dict:
    """Metrics of the head on pooled features (fp32, dropout off), gathered over ranks. Also returns preds."""
    clf.eval()
    logits = clf.head(feats)
    losses = _gather(F.cross_entropy(logits, labels, reduction="none"), world)
    preds, labels = _gather(logits.argmax(-1), world).numpy(), _gather(labels, world).numpy()
    loss = losses.mean().item()
    return {**classification_metrics(labels, preds), "loss": loss if math.isfinite(loss) else None,
            "preds": preds, "labels": labels}


# ---- files --------------------------------------------------------------------------------------

def write_atomic(path: Path, text: str):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, obj):
    write_atomic(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def check_out_dir(out: Path, cfg: TrainConfig) -> dict | None:
    """Refuse a folder that holds something else; return the result of an identical finished run."""
    if not out.is_dir() or not any(out.iterdir()):
        return None
    try:
        old = json.loads((out / "config.json").read_text())["args"]
    except (OSError, ValueError, KeyError):
        raise ValueError(f"--out {out} is not empty and holds no minibert run; pick a new --out") from None
    new = asdict(cfg)
    diff = [f"{k} {old.get(k)!r} vs {new[k]!r}" for k in new if k not in NOT_IDENTITY and old.get(k) != new[k]]
    if diff:
        raise ValueError(f"--out {out} holds a different run ({'; '.join(diff[:3])}); pick a new --out")
    if (out / "result.json").is_file():
        result = json.loads((out / "result.json").read_text())
        if result.get("status") == "done":
            if os.environ.get("RANK", "0") == "0":
                print(f"{out} holds this run, finished: reporting it, not rerunning")
            return result
    if not cfg.resume:
        raise ValueError(f"--out {out} holds an unfinished run of this configuration; "
                         "pass --resume to continue it, or pick a new --out")
    return None


def start_out_dir(out: Path, cfg, data: Prepared, device, precision, world) -> None:
    """Create the run folder and record the run's config.json (kept as is when resuming)."""
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "config.json").is_file():
        write_json(out / "config.json", run_info(cfg, data, device, precision, world))


def run_info(cfg, data: Prepared, device, precision, world) -> dict:
    def v(pkg):
        try:
            return version(pkg)
        except PackageNotFoundError:
            return None
    return {"args": asdict(cfg), "device": str(device), "world_size": world, "precision": precision,
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "max_length": data.max_length, "num_train": len(data.train), "num_test": len(data.test),
            "label_names": data.dataset.label_names, "dataset_notes": data.dataset.notes,
            "checkpoint": str(data.checkpoint), "command": sys.argv,
            "versions": {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
                         **{p: v(p) for p in ("minibert", "numpy", "scikit-learn", "tokenizers")}}}


def save_model(clf, directory: Path, data: Prepared):
    """The classifier as HF-compatible safetensors, with the tokenizer files beside it."""
    save_pretrained(clf, directory, data.dataset.label_names)
    for name in (*TOKENIZER_FILES, "special_tokens_map.json"):
        if (data.checkpoint / name).is_file():
            shutil.copyfile(data.checkpoint / name, directory / name)


def linear_schedule(warmup: int, total: int):
    """lr multiplier: 0 -> 1 over `warmup` steps, then 1 -> 0 at `total` (HF's linear schedule)."""
    return lambda step: step / max(1, warmup) if step < warmup else max(0.0, (total - step) / max(1, total - warmup))


# ---- the runs -----------------------------------------------------------------------------------

def train(cfg: TrainConfig) -> dict:
    """Run one configuration (or an lr sweep of three) and return its result.json contents."""
    cfg = validate(cfg)
    if cfg.stop_after_epoch is None and os.environ.get("MINIBERT_STOP_AFTER_EPOCH"):
        cfg = replace(cfg, stop_after_epoch=int(os.environ["MINIBERT_STOP_AFTER_EPOCH"]))
    cfg = replace(cfg, out=str(cfg.out or default_out(cfg)))
    data = prepare(cfg)
    return sweep(cfg, data) if cfg.lr == "sweep" else run(cfg, data)


def sweep(cfg: TrainConfig, data: Prepared) -> dict:
    """The paper's protocol: one sub-run per lr in PAPER_LRS, keep the best by cfg.metric."""
    out = Path(cfg.out)
    if finished := check_out_dir(out, cfg):
        return finished
    device, rank, world = setup_device(cfg.device)
    if rank == 0:
        start_out_dir(out, cfg, data, device, resolve_precision(cfg.precision, device), world)
    runs = {}
    for lr in PAPER_LRS:
        runs[lr] = run(replace(cfg, lr=lr, out=str(out / f"lr_{lr:g}")), data)
        if runs[lr]["status"] != "done":
            return runs[lr]  # stopped by the test hook: so is the sweep
    # a diverged sub-run never wins over one that learned something
    best_lr = max(runs, key=lambda lr: (not runs[lr]["diverged"], runs[lr]["best"][cfg.metric]))
    result = {**runs[best_lr], "run_dir": f"lr_{best_lr:g}", "seconds": sum(r["seconds"] for r in runs.values()),
              "sweep": {f"{lr:g}": {"best_epoch": r["best_epoch"], **r["best"], "diverged": r["diverged"]}
                        for lr, r in runs.items()}}
    if rank == 0:
        write_json(out / "result.json", result)
    return result


def run(cfg: TrainConfig, data: Prepared) -> dict:
    """Train one configuration at one lr; see the module docstring for what it writes."""
    out = Path(cfg.out)
    if finished := check_out_dir(out, cfg):
        return finished
    t_start = time.time()
    device, rank, world = setup_device(cfg.device)
    main = rank == 0
    precision = resolve_precision(cfg.precision, device)
    if main:
        start_out_dir(out, cfg, data, device, precision, world)

    # The model: pre-trained encoder, corrupted as asked, with a fresh head (drawn from the seeded RNG).
    torch.manual_seed(cfg.seed)
    encoder = load_pretrained(data.checkpoint)
    report = corrupt(encoder, cfg.corrupt, seed=cfg.seed)
    ds = data.dataset
    clf = SequenceClassifier(encoder, len(ds.label_names), cfg.pooling).to(device)
    if main:
        write_json(out / "corruption.json", report.to_dict())
        print(report)
    probe = cfg.mode == "probe"
    if probe:  # only the final linear layer trains (DistilBERT's new pre_classifier stays as initialised)
        clf.requires_grad_(False).classifier.requires_grad_(True)
    if cfg.pooling == "mean" and clf.encoder.pooler is not None:
        clf.encoder.pooler.requires_grad_(False)  # unused by mean pooling; DDP wants a gradient for every trainable

    # The optimiser: AdamW, decay on matrices only (not biases or LayerNorm), warmup + linear decay.
    params = [p for p in clf.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, fused=device.type == "cuda")
    # Probe mode has no DDP (each rank trains the same head on the same cached features).
    shard_rank, shard_world = (0, 1) if probe else (rank, world)
    micro = cfg.batch_size // (cfg.grad_accum * shard_world)
    n_micro = math.ceil(len(data.train) / micro) // shard_world  # per rank; ranks need equal counts
    steps_per_epoch = math.ceil(n_micro / cfg.grad_accum)
    total_steps = cfg.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(math.ceil(cfg.warmup * total_steps), total_steps))
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")  # fp16 needs loss scaling; bf16 not

    # Resume from the last completed epoch.
    start_epoch, history, prior_seconds, train_tokens, train_seconds = 0, [], 0.0, 0, 0.0
    ckpt_path = out / "checkpoint.pt"
    if ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        clf.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        torch.set_rng_state(ckpt["rng"].cpu())
        if device.type == "cuda" and ckpt["cuda_rng"] is not None:
            torch.cuda.set_rng_state(ckpt["cuda_rng"].cpu(), device)
        start_epoch, history, prior_seconds = ckpt["epoch"], ckpt["history"], ckpt["seconds"]
        train_tokens, train_seconds = ckpt["train_tokens"], ckpt["train_seconds"]
        if main:
            print(f"resuming {out} after epoch {start_epoch}")

    ddp = None
    model = clf
    if world > 1 and not probe:
        ddp = model = torch.nn.parallel.DistributedDataParallel(clf, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile and not probe:
        model = torch.compile(model)

    pad_id = data.tokenizer.pad_id
    majority = majority_baseline(data.train.labels, data.test.labels)
    if probe:  # the frozen encoder sees every example once; the epochs run on the cached features
        t0 = time.time()
        train_feats, train_labels = extract(clf, data.train, cfg.batch_size, device, precision, pad_id)
        test_feats, test_labels = extract(clf, data.test, cfg.batch_size, device, precision, pad_id)
        if start_epoch == 0:
            train_tokens, train_seconds = int(data.train.lengths.sum()), time.time() - t0

    def micro_batches(epoch):
        """(batch, real tokens) for this rank: a pure function of (seed, epoch)."""
        if probe:
            order = torch.from_numpy(np.random.default_rng([cfg.seed, epoch]).permutation(len(train_labels))).to(device)
            for i in range(0, len(order), micro):
                yield {"features": train_feats[order[i:i + micro]], "labels": train_labels[order[i:i + micro]]}, 0
            return
        for i, batch in enumerate(batches(data.train, micro, shuffle=True, seed=cfg.seed, epoch=epoch, pad_id=pad_id)):
            if i >= n_micro * world:
                break
            if i % world == rank:
                yield batch, int(batch["attention_mask"].sum())  # counted on the CPU: no device sync

    nonfinite = False
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.time()
        clf.train(not probe)  # a probe's encoder stays in eval mode: no dropout, frozen statistics
        loss_sum, n_loss, tokens = torch.zeros((), device=device), 0, 0
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step", leave=False,
                   disable=True if not main else None)  # None: off when stderr is not a terminal
        for i, (batch, ntok) in enumerate(micro_batches(epoch)):
            group_start = i - i % cfg.grad_accum
            group_size = min(cfg.grad_accum, n_micro - group_start)
            last = i + 1 == group_start + group_size
            b = to_device(batch, device)
            with ddp.no_sync() if ddp is not None and not last else nullcontext():  # sync grads once per step
                with autocast(device, precision):
                    logits = clf.head(b["features"]) if probe else model(b["input_ids"], b["attention_mask"], b["token_type_ids"])
                    loss = F.cross_entropy(logits, b["labels"])
                scaler.scale(loss / group_size).backward()
            loss_sum += loss.detach()  # stays on the device: no sync per step
            n_loss, tokens = n_loss + 1, tokens + ntok
            if not last:
                continue
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            bar.update()
            if bar.n % LOG_EVERY == 0 or bar.n == steps_per_epoch:
                stat = loss_sum / n_loss
                if world > 1 and not probe:
                    dist.all_reduce(stat)  # every rank sees a NaN on any rank, and stops at the same step
                mean = stat.item()
                if not math.isfinite(mean):
                    nonfinite = True
                    break
                bar.set_postfix(loss=f"{mean:.4f}", tok_s=f"{tokens * shard_world / (time.time() - t0):,.0f}")
        bar.close()
        train_seconds += time.time() - t0
        train_tokens += tokens * shard_world

        # Evaluate: pooled features of the test set, then the head in fp32 with dropout off.
        if not probe:
            test_feats, test_labels = extract(clf, data.test, cfg.batch_size, device, precision, pad_id, rank, world)
        m = evaluate(clf, test_feats, test_labels, shard_world)
        train_loss = (loss_sum / max(n_loss, 1)).item()
        record = {"epoch": epoch + 1, **{k: m[k] for k in (*METRICS, "loss")},
                  "train_loss": train_loss if math.isfinite(train_loss) else None,
                  "lr": scheduler.get_last_lr()[0], "seconds": round(time.time() - t0, 3),
                  "tokens_per_s": round(tokens * shard_world / max(time.time() - t0, 1e-9), 1)}
        if nonfinite:
            record["nonfinite_loss"] = True
        history.append(record)
        best = max(history, key=lambda r: r[cfg.metric])  # ties: the earliest epoch
        if main:
            if cfg.save_model and best is record and not nonfinite:
                save_model(clf, out / "model", data)
            write_atomic(out / "metrics.jsonl", "".join(json.dumps(r, allow_nan=False) + "\n" for r in history))
            print(f"epoch {epoch + 1}/{cfg.epochs} | train loss {train_loss:.4f} | test weighted F1 "
                  f"{100 * m['weighted_f1']:.2f} macro F1 {100 * m['macro_f1']:.2f} acc {100 * m['accuracy']:.2f} "
                  f"loss {m['loss'] if m['loss'] is None else round(m['loss'], 4)} | {record['tokens_per_s']:,.0f} tok/s "
                  f"| {record['seconds']:.1f}s{' | best' if best is record else ''}", flush=True)
        if nonfinite:
            if main:
                print(f"error: non-finite training loss in epoch {epoch + 1}; stopping this run and marking it "
                      "diverged (lower the lr, or use --precision bf16/fp32 instead of fp16)", file=sys.stderr)
            break
        if main and (epoch + 1 < cfg.epochs or cfg.keep_checkpoint):  # after the last, result.json is what counts
            state = {"epoch": epoch + 1, "model": clf.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": torch.get_rng_state(),
                     "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                     "history": history, "seconds": prior_seconds + time.time() - t_start,
                     "train_tokens": train_tokens, "train_seconds": train_seconds}
            torch.save(state, out / "checkpoint.pt.tmp")
            os.replace(out / "checkpoint.pt.tmp", ckpt_path)
        if cfg.stop_after_epoch == epoch + 1 and epoch + 1 < cfg.epochs:
            if main:
                print(f"stopped after epoch {epoch + 1} (stop_after_epoch); continue with --resume")
            return {"status": "stopped", "epoch": epoch + 1, "out": str(out)}

    best = max(history, key=lambda r: r[cfg.metric])
    reason = None
    if nonfinite:
        reason = f"non-finite training loss in epoch {history[-1]['epoch']}"
    elif best["weighted_f1"] <= majority["weighted_f1"]:
        reason = "best weighted F1 at or below the majority-class baseline"
    result = {"status": "done", "best_epoch": best["epoch"], "best": {k: best[k] for k in (*METRICS, "loss")},
              "majority_f1": majority["weighted_f1"], "majority": majority, "diverged": reason is not None,
              "diverged_reason": reason, "lr": cfg.lr, "epochs_run": len(history), "metric": cfg.metric,
              "seconds": round(prior_seconds + time.time() - t_start, 2),
              "tokens_per_s": round(train_tokens / max(train_seconds, 1e-9), 1),
              "model": cfg.model, "dataset": cfg.dataset, "corrupt": cfg.corrupt, "mode": cfg.mode,
              "pooling": cfg.pooling, "seed": cfg.seed, "corruption": report.to_dict(),
              "model_dir": str(out / "model") if cfg.save_model else None}
    if main:
        write_json(out / "result.json", result)
        if not cfg.keep_checkpoint:
            ckpt_path.unlink(missing_ok=True)
        print(f"best epoch {best['epoch']}: weighted F1 {100 * best['weighted_f1']:.2f} (majority baseline "
              f"{100 * majority['weighted_f1']:.2f}){' DIVERGED: ' + reason if reason else ''} -> {out / 'result.json'}")
    if world > 1:
        dist.barrier()  # rank 0 has written everything before any rank returns
    return result
