"""The first thing to run on a GPU machine: does the CUDA path do what the CPU proxies say it does?

    PYTHONPATH=. python -m minibert gpu-check                   # BERT-base and BERT-large, writes gpu-check.json
    PYTHONPATH=. python -m minibert gpu-check --models base     # one model, a few minutes

Random-weight models of the presets' shapes (minibert.config PRESETS): nothing is downloaded or installed.
Each check is a function of (device, model config) that returns figures, each with the range it is expected
in; docs/gpu.md says where each range comes from and what to do when a figure is outside it.

  precision    logits under bf16 autocast against fp32, same weights and batch (eval mode)
  syncs        a few training steps (forward, backward, fused AdamW) under torch.cuda.set_sync_debug_mode
               ("warn"): the warnings counted, and the host-syncing operators tools/dispatch.py counts
  speed        tokens/s and MFU of training steps at SST-2 shapes (32 sentences of 14-64 tokens) and IMDB
               shapes (512 tokens), eager and torch.compile; the peak memory of the eager steps against
               training/memory.py's estimate
  attention    which SDPA kernel runs, named by torch.profiler, on a padded and an unpadded batch
  resume       a tiny train() run stopped after epoch 1 and resumed, against one run straight through
  torchrun     the same tiny run on 2 processes (torchrun) against 1; skipped with fewer than 2 GPUs

The checks also run on a CPU (tests/test_gpu_check.py runs them on tiny shapes); the command itself
refuses without CUDA, since its ranges are for a GPU.
"""
import contextlib
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoint import save_pretrained
from ..cli import Parser, main_wrapper
from ..config import PRESETS, BertConfig
from ..heads import SequenceClassifier
from ..model import Bert
from ..tokenizer import pad_batch
from ..training.config import TrainConfig
from ..training.device import DTYPES, autocast, to_device
from ..training.memory import estimate
from ..training.trainer import train
from .bench import matmul_ceiling, model_flops, optimizer_for
from .dispatch import DispatchCounter

# (batch, shortest, longest) of each shape's synthetic batch; lengths uniform in between, padded to a multiple of 8
SST2 = (32, 14, 64)  # SST-2's sentences: ~14 tokens on average, few past 64
IMDB = {"base": (16, 512, 512), "large": (8, 512, 512)}  # most IMDB reviews fill max_length 512
# Expected ranges. A GPU has not measured them yet: they are expectations, explained in docs/gpu.md.
LOGITS_DIFF = 5e-2  # bf16 keeps 8 significant bits: ~0.4% per rounding
MFU = {"sst2": (0.03, 0.40), "imdb": (0.20, 0.60)}  # short sentences are launch-bound; 512 tokens are matmul-bound
COMPILE_SPEEDUP = (0.8, 2.5)  # compiled over eager tokens/s
ADAMW_BYTES = 16  # fp32 weights, gradients and AdamW's two moments: the least a training step holds, per parameter
ESTIMATE_OVER_PEAK = (1.0, 2.0)  # training.memory's estimate: never below the peak (it would let an OOM through)


def figure(check: str, name: str, value, expect=None, unit: str = "", note: str = "", ok=None) -> dict:
    """One line of the table. expect: (low, high) (either may be None), a value it must equal, or None
    (a figure to read, not to judge); ok: whether value is in it (given, for an expectation said in words)."""
    if ok is not None or expect is None:
        pass
    elif isinstance(expect, tuple):
        ok = (expect[0] is None or value >= expect[0]) and (expect[1] is None or value <= expect[1])
    else:
        ok = value == expect
    return {"check": check, "figure": name, "value": value, "unit": unit, "expect": expect, "ok": ok, "note": note}


def random_classifier(config: BertConfig, device, seed: int = 0) -> SequenceClassifier:
    """A seeded random-weight [CLS] classifier of this shape: no checkpoint needed."""
    torch.manual_seed(seed)
    return SequenceClassifier(Bert(config), num_labels=2, pooling="cls").to(device)


def synthetic_batch(config: BertConfig, shape: tuple, device, seed: int = 0) -> dict:
    """Random token ids of lengths uniform in [shortest, longest], [CLS] first, right-padded to the longest
    rounded up to a multiple of 8 as the trainer pads on a GPU; lengths stay on the host (to_device)."""
    batch_size, shortest, longest = shape
    rng = np.random.default_rng(seed)
    lengths = rng.integers(shortest, longest + 1, batch_size)
    ids = [[101, *rng.integers(1000, config.vocab_size, n - 1).tolist()] for n in lengths]
    T = min(-(-int(lengths.max()) // 8) * 8, config.max_position_embeddings)
    batch = pad_batch(ids, length=T)
    batch["labels"] = torch.from_numpy(rng.integers(0, 2, batch_size))
    return to_device(batch, device)


def inputs(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k != "labels"}


def step(model, opt, batch, device, precision, scaler=None):
    """One training step, the trainer's way (fp16 with a GradScaler); the loss stays on the device."""
    opt.zero_grad(set_to_none=True)
    with autocast(device, precision):
        loss = F.cross_entropy(model(**inputs(batch)).float(), batch["labels"])
    if scaler is None:
        loss.backward()
        opt.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    return loss.detach()


def grad_scaler(precision: str):
    """fp16's loss scaling (a GradScaler), None for bf16 and fp32, which need none."""
    return torch.amp.GradScaler("cuda") if precision == "fp16" else None


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---- the checks ---------------------------------------------------------------------------------

def check_precision(device, config: BertConfig, precision: str = "bf16", shape=SST2) -> list[dict]:
    """Max |diff| of the logits under autocast against fp32, same weights, same batch, eval mode."""
    clf = random_classifier(config, device).eval()
    batch = synthetic_batch(config, shape, device)
    with torch.no_grad():
        fp32 = clf(**inputs(batch)).float()
        with autocast(device, precision):
            low = clf(**inputs(batch)).float()
    return [figure("precision", f"logits {precision} vs fp32, max |diff|", (low - fp32).abs().max().item(),
                   (None, LOGITS_DIFF), note=f"max |logit| {fp32.abs().max().item():.3g}")]


def check_syncs(device, config: BertConfig, precision: str, shape=SST2, steps: int = 3) -> list[dict]:
    """Host syncs per training step, after one warm-up step: on CUDA the warnings of set_sync_debug_mode("warn")
    (what the device really did), everywhere the host-syncing operators DispatchCounter sees."""
    clf = random_classifier(config, device).train()
    opt, scaler = optimizer_for(clf), grad_scaler(precision)
    batch = synthetic_batch(config, shape, device)
    step(clf, opt, batch, device, precision, scaler)  # warm-up: AdamW's state, the allocator, cuBLAS handles
    synchronize(device)
    with warnings.catch_warnings(record=True) as caught, DispatchCounter() as count:
        warnings.simplefilter("always")
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(steps):
                step(clf, opt, batch, device, precision, scaler)
        finally:
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("default")
    synced = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message)]
    expect = 0 if scaler is None else (0, 1)  # fp16: the GradScaler may read its inf check on the host
    out = [figure("syncs", "dispatched host-syncing ops / step", count.syncs / steps, expect,
                  note=", ".join(count.sync_ops))]
    if device.type == "cuda":
        out.append(figure("syncs", "CUDA sync warnings / step", len(synced) / steps, expect,
                          note=synced[0][:80] if synced else ""))
    return out


def check_speed(device, config: BertConfig, precision: str, shape: tuple, label: str, ceiling: float,
                steps: int = 10, mfu: tuple | None = None) -> list[dict]:
    """Training tokens/s (real tokens) and MFU at one shape, eager then compiled, and eager's peak memory.
    ceiling: the matmul FLOP/s MFU is measured against (bench.matmul_ceiling)."""
    batch = synthetic_batch(config, shape, device)
    lengths = batch["lengths"].tolist()
    flops = model_flops(config, lengths, training=True)
    out, rates, logits = [], {}, {}
    for mode in ("eager", "compile"):
        clf = random_classifier(config, device)  # seeded: the same weights for both modes
        model = torch.compile(clf, dynamic=False) if mode == "compile" else clf
        with torch.no_grad():  # before any step, in eval mode (no dropout): both compute the same numbers
            model.eval()
            with autocast(device, precision):
                logits[mode] = model(**inputs(batch)).float()
        model.train()
        opt, scaler = optimizer_for(clf), grad_scaler(precision)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t = time.perf_counter()
        for _ in range(2):  # warm-up: compiles the training graph once, allocates AdamW's state
            step(model, opt, batch, device, precision, scaler)
        synchronize(device)
        warmup = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(steps):
            step(model, opt, batch, device, precision, scaler)
        synchronize(device)
        seconds = (time.perf_counter() - t) / steps
        rates[mode] = sum(lengths) / seconds
        expect = tuple(m * ceiling / flops * sum(lengths) for m in mfu) if mfu else None
        out += [figure("speed", f"{label} {mode} tokens/s", rates[mode], expect, "tokens/s",
                       note=f"warm-up {warmup:.1f} s"),
                figure("speed", f"{label} {mode} MFU", flops / seconds / ceiling, mfu)]
        if mode == "eager" and device.type == "cuda":
            params = sum(p.numel() for p in clf.parameters())
            total = torch.cuda.get_device_properties(device).total_memory
            peak = torch.cuda.max_memory_allocated(device)
            guess = estimate(config, shape[0], batch["input_ids"].shape[1], precision)["total"]
            out += [figure("memory", f"{label} eager peak allocated", peak, (ADAMW_BYTES * params, total), "bytes"),
                    figure("memory", f"{label} memory.estimate / peak", guess / peak, ESTIMATE_OVER_PEAK,
                           note=f"estimate {guess / 2**30:.2f} GiB")]
        del clf, model, opt
    out += [figure("speed", f"{label} compile / eager tokens/s", rates["compile"] / rates["eager"], COMPILE_SPEEDUP),
            figure("speed", f"{label} compile vs eager logits, max |diff|",
                   (logits["compile"] - logits["eager"]).abs().max().item(),
                   (None, LOGITS_DIFF if precision != "fp32" else 1e-4))]
    return out


# aten's SDPA backends, by the operator torch.profiler records for each
SDPA_BACKENDS = {"_scaled_dot_product_flash_attention_for_cpu": "flash (CPU)",
                 "_scaled_dot_product_flash_attention": "flash",
                 "_scaled_dot_product_efficient_attention": "memory-efficient",
                 "_scaled_dot_product_cudnn_attention": "cuDNN",
                 "_scaled_dot_product_attention_math": "math"}


def sdpa_kernels(model, batch) -> tuple[list[str], list[str]]:
    """(SDPA backends, CUDA attention kernels) that one forward runs, as torch.profiler records them."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof, torch.no_grad():
        model(**inputs(batch))
        synchronize(next(model.parameters()).device)
    names = {e.key for e in prof.key_averages()}
    backends = sorted({b for op, b in SDPA_BACKENDS.items() if f"aten::{op}" in names})
    kernels = sorted(n for n in names if not n.startswith("aten::")
                     and any(w in n.lower() for w in ("fmha", "flash", "attention", "cudnn")))
    return backends, kernels


def check_attention(device, config: BertConfig, precision: str) -> list[dict]:
    """The SDPA backend (and on CUDA the kernel) of a padded batch (an additive float mask is passed) and of
    an unpadded one (no mask), in train mode (attention dropout on) and eval mode."""
    clf = random_classifier(config, device)
    padded = synthetic_batch(config, (8, 9, 40), device)
    full = synthetic_batch(config, (8, 40, 40), device)
    expected = {  # what torch's SDPA dispatcher documents; docs/gpu.md says why
        ("cuda", "padded"): ("memory-efficient", "cuDNN"), ("cuda", "unpadded"): ("flash", "cuDNN"),
        ("cpu", "train"): ("math",), ("cpu", "eval"): ("flash (CPU)",)}
    out = []
    for mode in ("train", "eval"):
        clf.train(mode == "train")
        for name, batch in (("padded", padded), ("unpadded", full)):
            with autocast(device, precision):
                backends, kernels = sdpa_kernels(clf, batch)
            allowed = expected.get((device.type, name)) or expected.get((device.type, mode))
            out.append(figure("attention", f"SDPA backend, {mode}, {name}", ", ".join(backends) or "none seen",
                              " or ".join(allowed), note=" ".join(kernels)[:100],
                              ok=bool(backends) and set(backends) <= set(allowed)))
    # read after the calls: torch settles the order at the first one (on some GPUs it puts cuDNN first)
    names = {0: "math", 1: "flash", 2: "memory-efficient", 3: "cuDNN", 4: "overrideable"}  # SDPBackend's values
    order = [names.get(int(b), str(b)) for b in torch._C._get_sdp_priority_order()]
    out.insert(0, figure("attention", "SDPA priority order", ", ".join(order), None,
                         note="the first backend that supports a call runs it"))
    return out


# ---- tiny train() runs: a synthetic dataset and a random checkpoint in a temporary folder ----------

WORDS = {1: "good great fine lovely superb".split(), 0: "bad awful poor dull boring".split()}
FILLER = "the film was a and it story this one plot".split()


def write_tiny_task(folder: Path, config: BertConfig, examples: int = 64, seed: int = 0) -> tuple[Path, Path]:
    """(model folder, data folder): the random [CLS] classifier of `config` saved with save_pretrained beside a
    WordPiece vocab of the words used, and an SST-2-layout folder (train.tsv, validation.tsv: sentence, label)
    whose label is told by one word of each sentence, so that a run learns something in two epochs."""
    model_dir, data_dir = folder / "model", folder / "sst2"
    clf = random_classifier(config, "cpu", seed)
    save_pretrained(clf.encoder, model_dir)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *FILLER, *WORDS[0], *WORDS[1]]
    (model_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
    data_dir.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", examples), ("validation", examples // 2)):
        rows = ["sentence\tlabel"]
        for i in range(n):
            label = i % 2
            words = [*rng.choice(FILLER, int(rng.integers(3, 12))), rng.choice(WORDS[label])]
            rng.shuffle(words)
            rows.append(f"{' '.join(words)}\t{label}")
        (data_dir / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    return model_dir, data_dir


def tiny_train_config(model_dir: Path, data_dir: Path, out: Path, device, precision: str) -> TrainConfig:
    return TrainConfig(model=str(model_dir), dataset="sst2", data_dir=str(data_dir), split="official", epochs=2,
                       lr=1e-4, batch_size=8, max_length=32, out=str(out), device=str(device), precision=precision,
                       seed=0)


def quiet(fn, *args):
    """fn(*args) with its progress lines kept off gpu-check's table."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)


def epoch_losses(run: Path) -> list[float]:
    return [json.loads(line)["train_loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def check_resume(device, config: BertConfig, precision: str) -> list[dict]:
    """A two-epoch train() run stopped after epoch 1 and resumed, against the same run straight through."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir, data_dir = write_tiny_task(tmp, config)
        whole = quiet(train, tiny_train_config(model_dir, data_dir, tmp / "whole", device, precision))
        cfg = tiny_train_config(model_dir, data_dir, tmp / "split", device, precision)
        stopped = quiet(train, replace(cfg, stop_after_epoch=1))
        resumed = quiet(train, replace(cfg, resume=True))
        loss = max(abs(a - b) for a, b in zip(epoch_losses(tmp / "whole"), epoch_losses(tmp / "split")))
    exact = device.type == "cpu"  # a GPU's kernels may sum in another order from run to run
    return [figure("resume", "stopped after epoch", stopped.get("epoch"), 1),
            figure("resume", "resumed vs straight through: train loss, max |diff|", loss, (None, 0 if exact else 1e-3)),
            figure("resume", "resumed vs straight through: best epoch equal",
                   resumed["best_epoch"] == whole["best_epoch"], True)]


def check_torchrun(device, config: BertConfig, precision: str) -> list[dict]:
    """The tiny run on 2 processes (torchrun, DDP) against 1, through the `train` command: same data, same
    global batch; each rank draws its own dropout, so the losses agree only roughly."""
    if device.type == "cuda" and torch.cuda.device_count() < 2:
        why = f"{torch.cuda.device_count()} GPU visible; 2 are needed"
        return [figure("torchrun", "2 processes vs 1", "skipped", None, note=why)]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir, data_dir = write_tiny_task(tmp, config)
        for world in (1, 2):
            cfg = tiny_train_config(model_dir, data_dir, tmp / f"world{world}", device.type, precision)
            launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}"]
                      if world > 1 else [sys.executable])
            args = ["-m", "minibert", "train", "--model", cfg.model, "--dataset", "sst2", "--data-dir", cfg.data_dir,
                    "--split", "official", "--epochs", "2", "--lr", str(cfg.lr), "--batch-size", "8",
                    "--max-length", "32", "--out", cfg.out, "--device", device.type, "--precision", precision]
            t = time.perf_counter()
            done = subprocess.run(launch + args, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
                return [figure("torchrun", f"{world} process(es) exit status", done.returncode, 0, note=tail[0][:100])]
            results[world] = (time.perf_counter() - t, epoch_losses(Path(cfg.out)))
    loss_diff = max(abs(a - b) for a, b in zip(results[1][1], results[2][1]))
    return [figure("torchrun", "2 processes vs 1: train loss, max |diff|", loss_diff, (None, 0.1)),
            figure("torchrun", "2 processes / 1 process seconds", results[2][0] / results[1][0], None,
                   note="start-up dominates a run this small")]


# ---- the command --------------------------------------------------------------------------------

def run_checks(device, models: list[str], log=print) -> list[dict]:
    """Every check on a CUDA device for each model of `models` (presets), as one list of figures; logs each."""
    # bf16 where the GPU computes it natively (compute capability 8.0 and up), else fp16: what `auto` means
    precision = "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    ceiling = matmul_ceiling(device, DTYPES.get(precision, torch.float32))
    log(f"matmul ceiling {ceiling / 1e12:.1f} TFLOP/s ({precision}); precision {precision}")
    figures = []
    for name in models:
        config = PRESETS[name][1]
        steps = [lambda: check_precision(device, config, precision),
                 lambda: check_syncs(device, config, precision),
                 lambda: check_speed(device, config, precision, SST2, "sst2", ceiling, mfu=MFU["sst2"]),
                 lambda: check_speed(device, config, precision, IMDB[name], "imdb", ceiling, mfu=MFU["imdb"]),
                 lambda: check_attention(device, config, precision)]
        if name == models[0]:  # the mechanics of a run, once: they do not depend on the model's size
            steps += [lambda: check_resume(device, config, precision),
                      lambda: check_torchrun(device, config, precision)]
        for check in steps:
            for f in check():
                figures.append({"model": name, **f})
                log(format_figure(figures[-1]))
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return figures


def _value(v, unit: str = "") -> str:
    if isinstance(v, bool) or isinstance(v, str) or v is None:
        return str(v)
    if unit == "bytes":
        return f"{v / 2**30:.2f} GiB"
    if unit == "tokens/s":
        return f"{v:,.0f}"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def format_figure(f: dict) -> str:
    expect = f["expect"]
    if isinstance(expect, tuple):  # (low, high): "low..high", "..high", "low.."
        expect = "..".join(_value(x, f["unit"]) if x is not None else "" for x in expect)
    verdict = {True: "ok", False: "OUT OF RANGE", None: ""}[f["ok"]]
    expect = "" if expect is None else _value(expect)
    line = f"{f['model']:6s} {f['figure']:52s} {_value(f['value'], f['unit']):>14s}  {expect:>24s}  {verdict}"
    return line + (f"  ({f['note']})" if f["note"] else "")


HEADER = f"{'model':6s} {'figure':52s} {'value':>14s}  {'expected':>24s}"


def no_cuda_message() -> str:
    build = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
    return f"gpu-check needs a CUDA GPU; torch sees none here (torch {torch.__version__}, {build})"


@main_wrapper
def main(argv=None) -> int:
    p = Parser(prog="python -m minibert gpu-check", description=__doc__.split("\n")[0])
    p.add_argument("--models", default="base,large", help="comma-separated presets to check (default: base,large)")
    p.add_argument("--out", default="gpu-check.json", help="where to write the figures (default: gpu-check.json)")
    try:
        args = p.parse_args(argv)
    except SystemExit as e:  # a bad flag (Parser printed its one line) or --help
        return e.code
    models = args.models.split(",")
    unknown = [m for m in models if m not in ("base", "large")]
    if unknown:
        raise ValueError(f"--models: {', '.join(unknown)} is not base or large")
    if not torch.cuda.is_available():
        print(no_cuda_message(), file=sys.stderr)
        return 2
    device = torch.device("cuda", torch.cuda.current_device())
    print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    print(HEADER)
    figures = run_checks(device, models)
    machine = {"gpu": torch.cuda.get_device_name(device), "gpus": torch.cuda.device_count(), "torch": torch.__version__,
               "cuda": torch.version.cuda, "platform": platform.platform()}
    Path(args.out).write_text(json.dumps({"machine": machine, "figures": figures}, indent=2, default=str) + "\n")
    out_of_range = [f for f in figures if f["ok"] is False]
    print(f"wrote {args.out}; {len(out_of_range)} of {len(figures)} figures out of their expected range"
          + (" (docs/gpu.md says what to do)" if out_of_range else ""))
    return 1 if out_of_range else 0


if __name__ == "__main__":
    sys.exit(main())
