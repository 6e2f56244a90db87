"""How a classifier is scored: pooled features of a split, then the head's metrics.

    from minibert.training.device import setup_device, resolve_precision
    from minibert.training.evaluation import extract, evaluate
    device, rank, world = setup_device("auto")
    feats, labels = extract(clf, encoded_test, 32, device, resolve_precision("auto", device), pad_id)
    metrics = evaluate(clf, feats, labels)      # weighted_f1, macro_f1, accuracy, loss, preds, labels

The trainer, eval.py, the grid and CKA share these, so none of them needs to import the training loop.
With several processes (torchrun) each rank extracts every world-th batch and `evaluate` gathers the
predictions, so that every rank computes the metrics of the whole test set.
"""
import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from ..data.encoding import batches
from .device import autocast, length_multiple, to_device
from .metrics import classification_metrics


@torch.no_grad()
def extract(clf, enc, batch_size, device, precision, pad_id, rank=0, world=1, features=None, desc="features"):
    """Pooled features (n, H) in fp32 and labels (n,) of this rank's share of `enc` (every world-th batch).

    `features(clf, input_ids, attention_mask, token_type_ids, lengths)` computes one batch's features; default:
    clf.features, the pooled vector the head reads. A progress bar shows on a terminal.
    """
    clf.eval()
    features = features or (lambda c, *inputs: c.features(*inputs))
    feats, labels = [], [torch.zeros(0, dtype=torch.long, device=device)]
    n_batches = math.ceil(len(enc) / batch_size)
    bar = tqdm(total=n_batches, desc=desc, unit="batch", leave=False, disable=True if rank else None)
    for i, batch in enumerate(batches(enc, batch_size, shuffle=False, pad_id=pad_id,
                                      multiple_of=length_multiple(torch.device(device)))):
        bar.update()
        if i % world == rank:
            b = to_device(batch, device)
            with autocast(device, precision):
                f = features(clf, b["input_ids"], b["attention_mask"], b["token_type_ids"], b["lengths"])
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
