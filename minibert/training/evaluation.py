"""Where a classifier runs and how it is scored: device, precision, pooled features, metrics.

    from minibert.training.evaluation import setup_device, resolve_precision, extract, evaluate
    device, rank, world = setup_device("auto")
    feats, labels = extract(clf, encoded_test, 32, device, resolve_precision("auto", device), pad_id)
    metrics = evaluate(clf, feats, labels)      # weighted_f1, macro_f1, accuracy, loss, preds, labels

The trainer, eval.py, the grid and CKA share these, so none of them needs to import the training loop.
With several processes (torchrun) each rank extracts every world-th batch and `evaluate` gathers the
predictions, so that every rank computes the metrics of the whole test set.
"""
import math
import os
from contextlib import nullcontext

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from ..data.encoding import batches
from .metrics import classification_metrics

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def world_size() -> int:
    """Number of processes torchrun started (1 without torchrun): the one place WORLD_SIZE is read."""
    return int(os.environ.get("WORLD_SIZE", 1))


def setup_device(name: str = "auto") -> tuple[torch.device, int, int]:
    """(device, rank, world size); joins the process group when started by torchrun."""
    rank, local, world = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)), world_size()
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
        torch.set_float32_matmul_precision("high")  # fp32 matmuls (the fp32 precision mode, the head) on TF32 tensor cores
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device, rank, world


def resolve_precision(precision: str, device: torch.device) -> str:
    """auto -> bf16 on GPUs that have it, else fp16; fp32 on a CPU. Refuses what the device cannot do."""
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"  # autocast on a CPU is slower than fp32 on most CPUs; ask for bf16 explicitly
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("--precision fp16 needs a GPU (a CPU has no fp16 autocast with loss scaling); "
                         "use --precision bf16 or fp32 on a CPU")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no bf16; use fp16 or fp32")
    return precision


def autocast(device: torch.device, precision: str):
    """The autocast context of a precision mode (none for fp32)."""
    return nullcontext() if precision == "fp32" else torch.autocast(device.type, dtype=DTYPES[precision])


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def extract(clf, enc, batch_size, device, precision, pad_id, rank=0, world=1, features=None, desc="features"):
    """Pooled features (n, H) in fp32 and labels (n,) of this rank's share of `enc` (every world-th batch).

    `features(clf, input_ids, attention_mask, token_type_ids)` computes one batch's features; default:
    clf.features, the pooled vector the head reads. A progress bar shows on a terminal.
    """
    clf.eval()
    features = features or (lambda c, *inputs: c.features(*inputs))
    feats, labels = [], [torch.zeros(0, dtype=torch.long, device=device)]
    n_batches = math.ceil(len(enc) / batch_size)
    bar = tqdm(total=n_batches, desc=desc, unit="batch", leave=False, disable=True if rank else None)
    for i, batch in enumerate(batches(enc, batch_size, shuffle=False, pad_id=pad_id)):
        bar.update()
        if i % world == rank:
            b = to_device(batch, device)
            with autocast(device, precision):
                f = features(clf, b["input_ids"], b["attention_mask"], b["token_type_ids"])
            feats.append(f.float())
            labels.append(b["labels"])
    bar.close()
    if not feats:  # this rank got no batch: an empty (0, H) block keeps the gather's shapes consistent
        feats.append(torch.zeros(0, clf.config.hidden_size, device=device))
    return torch.cat(feats), torch.cat(labels)


def gather(t: torch.Tensor, world: int) -> torch.Tensor:
    """Concatenate a tensor over all ranks (on the CPU); itself when there is one process."""
    if world == 1:
        return t.cpu()
    parts = [None] * world
    dist.all_gather_object(parts, t.cpu())
    return torch.cat(parts)


@torch.no_grad()
def evaluate(clf, feats, labels, world=1, head=None) -> dict:
    """Metrics of the head on pooled features (fp32, dropout off), gathered over ranks. Also returns preds.

    `head(features) -> logits` defaults to clf.head.
    """
    clf.eval()
    logits = (head or clf.head)(feats)
    losses = gather(F.cross_entropy(logits, labels, reduction="none"), world)
    preds, labels = gather(logits.argmax(-1), world).numpy(), gather(labels, world).numpy()
    loss = losses.mean().item()
    return {**classification_metrics(labels, preds), "loss": loss if math.isfinite(loss) else None,
            "preds": preds, "labels": labels}
