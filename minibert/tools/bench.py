"""Throughput benchmark: minibert against the Hugging Face reference, in one process, on equal work.

    python -m minibert bench                       # CPU, fp32, a MiniLM-shaped model (a few minutes)
    python -m minibert bench --device cuda         # GPU, bf16 autocast, BERT-base shapes (--model large)

Both systems get the same config and weights (minibert's, saved with save_pretrained and loaded by
`transformers` with SDPA attention), the same inputs, device and dtype. Timed calls are interleaved
A/B/B/A... so that a noisy machine slows both alike; warm-up calls are not timed; each row reports
the median. Before any timing, the outputs (logits, loss, gradients) of the two are compared on the
very batches that are timed, so the rows compare equal work.

Rows:
  forward      encoder forward (inference) at a fixed batch x length, no padding: pure compute
  clf forward  the classifier's forward on real SST-2 sentences padded to the longest (a user's collator)
  train step   forward + backward + AdamW (fused, HF Trainer's default) of the classifier, on both batches
  epoch        training steps over real SST-2 / IMDB text with each system's natural batching; minibert:
               the trainer's length-grouped batches padded to their longest (rounded up to a multiple of 8
               on a GPU: device.length_multiple; encoding.batches). Reference, two ways: padded to
               max_length (the common tutorial recipe) and the Trainer's group_by_length
               (LengthGroupedSampler + padding to the batch's longest).
               Reported as real tokens/s.
  dispatch     what one training forward + backward of the classifier asks of the device, counted with
               tools/dispatch.py: kernel-launching (non-view) operators and host-syncing ones, on the
               padded SST-2 batch with [CLS] and with mean pooling (the reference's mean: its encoder, the
               same masked mean, its dropout and classifier) and on MRPC sentence pairs. Not timed: the
               counts are the same on a CPU and a GPU, and fewer of each is a faster small-batch GPU step.

Model FLOPs (PaLM, appendix B; nanoGPT's estimate_mfu), per real token of a sequence of length T:
  forward 2N + 4LHT, training 6N + 12LHT, N = the matmul weights of the layers (embeddings are lookups),
  4LHT = the two attention matmuls QK^T and AV. Padding is not counted: work on it is not useful.
MFU = achieved model FLOP/s over the ceiling measured here: the best of a few large matmuls on the same
device and dtype (not the datasheet peak).
"""
import json
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoint import hf_classifier_state_dict, key_map, save_pretrained
from ..cli import Parser, main_wrapper
from ..config import PRESETS, BertConfig
from ..data import encoding
from ..heads import SequenceClassifier
from ..model import Bert
from ..training.device import length_multiple, to_device
from .bench_data import (
    data_root,
    load_tokenizer_for_bench,
    minibert_batches,
    padded_batch,
    real_split,
    reference_batches,
)
from .dispatch import DispatchCounter
from .parity import import_transformers

MINILM = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
TINY = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
MODELS = {"minilm": MINILM, "base": PRESETS["base"][1], "large": PRESETS["large"][1], "tiny": TINY}


@dataclass
class Settings:
    """What to run. `defaults(device)` gives the CPU (small, minutes) or CUDA (real shapes) choice."""
    device: str = "cpu"
    model: str = "minilm"
    batch: int = 16  # fixed-shape rows: batch x length
    length: int = 128
    sst2_batch: int = 32  # real sentences in the padded-batch rows
    repeats: int = 5
    warmup: int = 1
    epoch_examples: dict = field(default_factory=lambda: {"sst2": 256, "imdb": 32})
    epoch_batch: int = 16
    epoch_repeats: int = 1
    data_dir: str | None = None
    tokenizer: str | None = None
    seed: int = 0

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.device.startswith("cuda") else torch.float32


def defaults(device: str) -> Settings:
    if device.startswith("cuda"):
        return Settings(device=device, model="base", batch=32, repeats=20, warmup=3,
                        epoch_examples={"sst2": 8192, "imdb": 1024}, epoch_batch=32, epoch_repeats=3)
    return Settings(device=device)


# ---- the two systems -----------------------------------------------------------------------

def make_pair(config: BertConfig, device, seed: int = 0, num_labels: int = 2):
    """minibert's SequenceClassifier and transformers' *ForSequenceClassification with the same weights."""
    tf = import_transformers()
    torch.manual_seed(seed)
    ours = SequenceClassifier(Bert(config), num_labels, pooling="cls")
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(ours, tmp)
        cls = tf.BertForSequenceClassification if config.flavour == "bert" else tf.DistilBertForSequenceClassification
        ref = cls.from_pretrained(tmp, attn_implementation="sdpa")
    return ours.to(device), ref.to(device)


def sync_reference(ours: SequenceClassifier, ref):
    """Copy minibert's current weights into the reference, so that the two start each row equal (training
    with dropout on moves them apart)."""
    ref.load_state_dict(hf_classifier_state_dict(ours))


def logits_of(model, batch):
    if isinstance(model, SequenceClassifier):  # lengths (on the host) spare it a sync, as in the trainer
        return model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), batch.get("lengths"))
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                 token_type_ids=batch.get("token_type_ids")).logits


def reference_mean_logits(ref, batch):
    """The reference with minibert's mean pooling (heads.mean_pool's formula: real tokens but [CLS]): its
    encoder, the masked mean, its classifier's dropout and linear layer. Its BertModel also runs its pooler,
    unused here: 2 of the reference's counted kernels (a linear layer and tanh)."""
    h = ref.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       token_type_ids=batch.get("token_type_ids")).last_hidden_state
    keep = batch["attention_mask"].clone()
    keep[:, 0] = 0
    keep = keep.unsqueeze(-1).to(h.dtype)
    return ref.classifier(ref.dropout((h * keep).sum(1) / keep.sum(1).clamp(min=1.0)))


def encoder_of(model):
    """The bare encoder's forward: minibert's Bert, HF's BertModel / DistilBertModel."""
    if isinstance(model, SequenceClassifier):
        enc = model.encoder
        return lambda b: enc(b["input_ids"], b["attention_mask"], b.get("token_type_ids")).last_hidden_state
    enc = model.base_model
    return lambda b: enc(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state


def optimizer_for(model):
    """AdamW, fused where torch has the kernel: the HF Trainer's default (adamw_torch_fused), for both."""
    return torch.optim.AdamW(model.parameters(), lr=2e-5, fused=True)


def train_step(model, opt, batch):
    """One optimiser step on the batch; returns the loss tensor (never .item(): no host sync per step)."""
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(logits_of(model, batch).float(), batch["labels"])
    loss.backward()
    opt.step()
    return loss.detach()


# ---- equal work: both systems agree on what is timed ---------------------------------------

def _grads_by_hf_name(ours: SequenceClassifier) -> dict[str, torch.Tensor]:
    """Our gradients under HF's parameter names (qkv split back into query, key, value)."""
    enc = ours.encoder
    prefix = "bert." if enc.config.flavour == "bert" else "distilbert."
    params = dict(enc.named_parameters())
    out = {}
    for name, hf_names in key_map(enc.config).items():
        pieces = params[name].grad.chunk(len(hf_names)) if len(hf_names) > 1 else [params[name].grad]
        out.update({prefix + h: g for h, g in zip(hf_names, pieces)})
    for name, p in ours.named_parameters():
        if name.startswith(("classifier.", "pre_classifier.")):
            out[name] = p.grad
    return out


def compare(ours, ref, batch, autocast) -> dict:
    """Max |diff| of logits (eval mode), and of loss and gradients (relative to the largest gradient) of
    one backward pass with dropout off, on the very batch that is then timed."""
    ours.eval(), ref.eval()
    with torch.no_grad(), autocast():
        logits = max_abs(logits_of(ours, batch), logits_of(ref, batch))
        hidden = encoder_of(ours)(batch), encoder_of(ref)(batch)
    real = batch["attention_mask"].bool()
    hidden_diff = max_abs(hidden[0][real], hidden[1][real])
    losses = []
    for m in (ours, ref):
        m.zero_grad(set_to_none=True)
        with autocast():
            loss = F.cross_entropy(logits_of(m, batch).float(), batch["labels"])
        loss.backward()
        losses.append(loss.detach())
    theirs = {n: p.grad for n, p in ref.named_parameters() if p.grad is not None}
    mine = _grads_by_hf_name(ours)
    scale = max(g.abs().max().item() for g in theirs.values())
    grad = max(max_abs(mine[n], g) for n, g in theirs.items()) / scale
    for m in (ours, ref):
        m.zero_grad(set_to_none=True)
        m.train()
    return {"logits": logits, "hidden_real_tokens": hidden_diff, "loss": max_abs(*losses), "grad_rel": grad}


def max_abs(a, b) -> float:
    return (a.float() - b.float()).abs().max().item()


# ---- timing ----------------------------------------------------------------------------------

def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def interleaved(fns: dict, repeats: int, warmup: int, device, reverse: bool = False) -> dict[str, list[float]]:
    """Seconds per call of each function, calls interleaved A B B A A B ... after `warmup` untimed calls each
    (B A A B ... with reverse)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    _sync(device)
    times = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in (names if (r + reverse) % 2 == 0 else names[::-1]):
            t = time.perf_counter()
            fns[name]()
            _sync(device)
            times[name].append(time.perf_counter() - t)
    return times


def matmul_ceiling(device, dtype, n: int | None = None, tries: int = 5) -> float:
    """FLOP/s of the best of a few n x n matmuls: the hardware limit MFU is measured against."""
    n = n or (8192 if str(device).startswith("cuda") else 2048)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(tries):
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def matmul_params(config: BertConfig) -> int:
    """N of the FLOPs formula: weights of every Linear in the layers (qkv, proj, up, down)."""
    H, I = config.hidden_size, config.intermediate_size
    return config.num_hidden_layers * (4 * H * H + 2 * H * I)


def model_flops(config: BertConfig, lengths, training: bool) -> float:
    """Model FLOPs of one pass over sequences of these real lengths (see the module docstring)."""
    lengths = np.asarray(lengths, dtype=np.float64)
    L, H = config.num_hidden_layers, config.hidden_size
    fwd = (2 * matmul_params(config) * lengths + 4 * L * H * lengths ** 2).sum()
    return 3 * fwd if training else fwd


# ---- inputs ----------------------------------------------------------------------------------

def fixed_batch(config, B, T, device, seed=0) -> dict:
    """Random token ids, no padding."""
    g = torch.Generator().manual_seed(seed)
    batch = {"input_ids": torch.randint(1000, config.vocab_size, (B, T), generator=g),
             "attention_mask": torch.ones(B, T, dtype=torch.long),
             "token_type_ids": torch.zeros(B, T, dtype=torch.long),
             "labels": torch.randint(0, 2, (B,), generator=g), "lengths": torch.full((B,), T)}
    return to_device(batch, device)


# ---- the rows --------------------------------------------------------------------------------

class Bench:
    """Holds the two systems and the settings; each method measures one row and returns its dict."""

    def __init__(self, s: Settings):
        self.s = s
        self.device = torch.device(s.device)
        self.config = MODELS[s.model]
        self.ours, self.ref = make_pair(self.config, self.device, s.seed)
        self.ceiling = matmul_ceiling(self.device, s.dtype)
        self.checks = {}

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.s.dtype, enabled=self.s.dtype != torch.float32)

    def row(self, name, times, tokens, flops, unit="tokens/s") -> dict:
        """A table row from the timings: throughput of each system, their ratio, achieved FLOP/s and MFU."""
        out = {"row": name, "unit": unit}
        for who in ("minibert", "reference"):
            sec = statistics.median(times[who])
            out[who] = tokens / sec
            out[f"{who}_seconds"] = sec
            out[f"{who}_tflops"] = flops / sec / 1e12
            out[f"{who}_mfu"] = flops / sec / self.ceiling
        out["ratio"] = out["minibert"] / out["reference"]
        return out

    def check(self, name, batch):
        sync_reference(self.ours, self.ref)
        self.checks[name] = compare(self.ours, self.ref, batch, self.autocast)

    def forward(self, name, batch, encoder: bool) -> dict:
        """Inference throughput (no grad, eval mode) of the encoder or of the whole classifier."""
        self.check(name, batch)
        fns = {}
        for who, model in (("minibert", self.ours), ("reference", self.ref)):
            model.eval()
            fn = encoder_of(model) if encoder else (lambda m: lambda b: logits_of(m, b))(model)
            fns[who] = (lambda f: lambda: self._no_grad(f, batch))(fn)
        times = interleaved(fns, self.s.repeats, self.s.warmup, self.device)
        lengths = batch["attention_mask"].sum(1).tolist()
        return self.row(name, times, sum(lengths), model_flops(self.config, lengths, training=False))

    def _no_grad(self, fn, batch):
        with torch.no_grad(), self.autocast():
            return fn(batch)

    def train(self, name, batch) -> dict:
        """Forward + backward + AdamW of the classifier (train mode: dropout on), the loss left on device."""
        self.check(name, batch)
        fns = {}
        for who, model in (("minibert", self.ours), ("reference", self.ref)):
            model.train()
            opt = optimizer_for(model)
            fns[who] = (lambda m, o: lambda: self._step(m, o, batch))(model, opt)
        times = interleaved(fns, self.s.repeats, self.s.warmup, self.device)
        lengths = batch["attention_mask"].sum(1).tolist()
        return self.row(name, times, sum(lengths), model_flops(self.config, lengths, training=True))

    def _step(self, model, opt, batch):
        with self.autocast():
            return train_step(model, opt, batch)

    def epoch(self, dataset: str, root: Path, tok, reference_max_length: bool) -> dict:
        """Training over a sample of real text, each system batching its own way; real tokens/s."""
        split, max_length = real_split(dataset, root, self.s.epoch_examples[dataset], self.s.seed)
        enc = encoding.encode(split, tok, max_length)
        sync_reference(self.ours, self.ref)
        def to_dev(bs):
            return [to_device(b, self.device) for b in bs]
        ours = to_dev(minibert_batches(enc, self.s.epoch_batch, self.s.seed, tok.pad_id, max_length,
                                       length_multiple(torch.device(self.s.device))))
        theirs = to_dev(reference_batches(enc, self.s.epoch_batch, max_length if reference_max_length else None,
                                          self.s.seed, tok.pad_id))
        assert len(ours) == len(theirs), "both batchings cut the same examples into as many batches"
        opts = {"minibert": optimizer_for(self.ours), "reference": optimizer_for(self.ref)}
        for who, model, batches in (("minibert", self.ours, ours), ("reference", self.ref, theirs)):
            model.train()  # warm-up: one untimed step on the longest batch (allocator, kernels)
            self._step(model, opts[who], max(batches, key=lambda b: b["input_ids"].numel()))
        times = {"minibert": [], "reference": []}
        for _ in range(self.s.epoch_repeats):
            # interleaved step by step (the two have as many batches), so that a change in the machine's
            # load during the epoch falls on both alike
            steps = {"minibert": [], "reference": []}
            for i, pair in enumerate(zip(ours, theirs)):
                t = interleaved({"minibert": lambda: self._step(self.ours, opts["minibert"], pair[0]),
                                 "reference": lambda: self._step(self.ref, opts["reference"], pair[1])},
                                repeats=1, warmup=0, device=self.device, reverse=i % 2 == 1)
                for who in steps:
                    steps[who] += t[who]
            for who in times:
                times[who].append(sum(steps[who]))
        how = f"ref padded to {max_length}" if reference_max_length else "ref group_by_length"
        slots = {who: sum(b["input_ids"].numel() for b in bs) for who, bs in (("minibert", ours), ("reference", theirs))}
        out = self.row(f"epoch {dataset} x{len(enc)} ({how})", times, int(enc.lengths.sum()),
                       model_flops(self.config, enc.lengths, training=True), unit="real tokens/s")
        out["padding"] = {who: 1 - int(enc.lengths.sum()) / n for who, n in slots.items()}
        return out

    def dispatch(self, name, batch, pooling: str) -> dict:
        """Kernel-launching and host-syncing operators of one training forward + backward (dropout on), each
        system on the same batch, under the autocast the timed rows use."""
        if pooling == "cls":
            systems = {"minibert": (self.ours, logits_of), "reference": (self.ref, logits_of)}
        else:  # the same encoder weights under a mean-pooling head
            mean = SequenceClassifier(self.ours.encoder, self.ours.num_labels, pooling="mean").to(self.device)
            systems = {"minibert": (mean, logits_of), "reference": (self.ref, reference_mean_logits)}
        out = {"row": name, "pooling": pooling}
        for who, (model, logits) in systems.items():
            model.train()
            model.zero_grad(set_to_none=True)  # else the backward adds each gradient to the last: more kernels
            with DispatchCounter() as count, self.autocast():
                F.cross_entropy(logits(model, batch).float(), batch["labels"]).backward()
            model.zero_grad(set_to_none=True)
            out[f"{who}_kernels"], out[f"{who}_syncs"] = count.kernels, count.syncs
            out[f"{who}_sync_ops"] = dict(count.sync_ops)
        out["kernel_ratio"] = out["minibert_kernels"] / out["reference_kernels"]
        return out


def run(s: Settings, log=print) -> dict:
    """Every row; returns the JSON-able result."""
    torch.manual_seed(s.seed)
    b = Bench(s)
    tok = load_tokenizer_for_bench(s.tokenizer)
    root = data_root(s.data_dir)
    rows = []
    fixed = fixed_batch(b.config, s.batch, s.length, b.device, s.seed)
    shape = f"{s.batch}x{s.length}"
    steps = [lambda: b.forward(f"encoder forward {shape}", fixed, encoder=True)]
    dispatch = []
    if root is not None:
        split, _ = real_split("sst2", root, s.sst2_batch, s.seed)
        sst2 = padded_batch(tok, split, b.device)
        pad = 1 - sst2["attention_mask"].float().mean().item()
        steps.append(lambda: b.forward(f"clf forward sst2 {s.sst2_batch} ({pad:.0%} pad)", sst2, encoder=False))
        dispatch += [b.dispatch(f"[CLS] sst2 {s.sst2_batch} ({pad:.0%} pad)", sst2, "cls"),
                     b.dispatch(f"mean sst2 {s.sst2_batch} ({pad:.0%} pad)", sst2, "mean")]
        if (root / "mrpc").is_dir():
            mrpc = padded_batch(tok, real_split("mrpc", root, s.sst2_batch, s.seed)[0], b.device)
            mpad = 1 - mrpc["attention_mask"].float().mean().item()
            dispatch.append(b.dispatch(f"[CLS] mrpc pairs {s.sst2_batch} ({mpad:.0%} pad)", mrpc, "cls"))
        else:
            log(f"no {root / 'mrpc'}: the sentence-pair dispatch row is skipped")
        for d in dispatch:
            log("\n".join(format_dispatch(d)))
    steps.append(lambda: b.train(f"train step {shape}", fixed))
    if root is not None:
        steps.append(lambda: b.train(f"train step sst2 {s.sst2_batch} ({pad:.0%} pad)", sst2))
        for name in s.epoch_examples:
            for at_max in (True, False):
                steps.append((lambda n, m: lambda: b.epoch(n, root, tok, m))(name, at_max))
    else:
        log("no real data folder found (--data-dir): the SST-2 and epoch rows are skipped")
    for step in steps:
        rows.append(step())
        log(format_row(rows[-1]))
    return {"machine": machine(b.device), "settings": {**vars(s), "dtype": str(s.dtype)},
            "model": {**vars(b.config), "matmul_params": matmul_params(b.config)},
            "ceiling_tflops": b.ceiling / 1e12, "rows": rows, "dispatch": dispatch, "checks": b.checks}


def machine(device) -> dict:
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__, "threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        info["transformers"] = import_transformers().__version__
    except ImportError:
        pass
    return info


def _rate(x: float) -> str:
    return f"{x:,.0f}" if x < 1e6 else f"{x / 1e6:,.2f}M"


HEADER = f"{'row':52s} {'minibert':>10s} {'reference':>10s} {'ratio':>6s} {'MFU mb':>7s} {'MFU ref':>7s}"


def format_row(r: dict) -> str:
    return (f"{r['row']:52s} {_rate(r['minibert']):>10s} {_rate(r['reference']):>10s} {r['ratio']:5.2f}x "
            f"{r['minibert_mfu']:7.1%} {r['reference_mfu']:7.1%}")


def format_dispatch(d: dict) -> list[str]:
    """Two table lines of a dispatch row: kernel-launching operators and host syncs per training step."""
    syncs = f"{d['minibert_syncs'] / d['reference_syncs']:5.2f}x" if d["reference_syncs"] else "     -"
    return [f"{'kernels/step ' + d['row']:52s} {d['minibert_kernels']:>10d} {d['reference_kernels']:>10d} "
            f"{d['kernel_ratio']:5.2f}x",
            f"{'host syncs/step ' + d['row']:52s} {d['minibert_syncs']:>10d} {d['reference_syncs']:>10d} "
            f"{syncs}"]


def table(result: dict) -> str:
    lines = [HEADER, *map(format_row, result["rows"])]
    lines += [line for d in result["dispatch"] for line in format_dispatch(d)]
    m, cfg = result["machine"], result["model"]
    lines.append(f"throughput in tokens/s (epoch rows: real tokens/s); {result['settings']['dtype']}, "
                 f"{cfg['num_hidden_layers']}x{cfg['hidden_size']}; ceiling {result['ceiling_tflops']:.3f} TFLOP/s "
                 f"(matmul); {m.get('gpu', m['processor'])}, {m['threads']} threads, torch {m['torch']}")
    return "\n".join(lines)


@main_wrapper
def main(argv=None) -> int:
    p = Parser(prog="python -m minibert bench", description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda: bf16 autocast, BERT-base shapes)")
    p.add_argument("--model", default=None, choices=list(MODELS), help="shape (default: minilm on CPU, base on CUDA)")
    p.add_argument("--batch", type=int, default=None, help="batch size of the fixed-shape rows")
    p.add_argument("--length", type=int, default=None, help="sequence length of the fixed-shape rows")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per system and row (median reported)")
    p.add_argument("--sst2", type=int, default=None, help="examples of SST-2 in the epoch rows")
    p.add_argument("--imdb", type=int, default=None, help="examples of IMDB in the epoch rows (0: skip)")
    p.add_argument("--data-dir", default=None,
                   help="the real data folder, one sub-folder per dataset (default: $MINIBERT_DATA)")
    p.add_argument("--tokenizer", default=None, help="tokenizer dir or preset (default: bert-base-uncased's vocab)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", default="bench.json", help="where to write the results")
    try:
        args = p.parse_args(argv)
    except SystemExit as e:  # a bad flag (Parser printed its one line) or --help: main() returns the status
        return e.code
    if args.threads:
        torch.set_num_threads(args.threads)
    s = defaults(args.device)
    for name in ("model", "batch", "length", "repeats"):
        if getattr(args, name) is not None:
            setattr(s, name, getattr(args, name))
    for name in ("sst2", "imdb"):
        n = getattr(args, name)
        if n is not None:
            s.epoch_examples = {k: v for k, v in {**s.epoch_examples, name: n}.items() if v > 0}
    s.data_dir, s.tokenizer = args.data_dir, args.tokenizer
    print(HEADER)
    result = run(s)
    print(table(result))
    print("equal work (max |diff| minibert vs reference on the timed batches):")
    for name, c in result["checks"].items():
        print(f"  {name}: " + ", ".join(f"{k} {v:.2g}" for k, v in c.items()))
    Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
