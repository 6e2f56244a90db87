"""Weight drift during fine-tuning: how far each part of the encoder has moved from where it started.

    start = snapshot(clf)                 # once, before the first step (after corruption)
    ...train an epoch...
    weight_drift(clf, start)              # {"attn": [per layer], "ffn": [...], "norm": [...], "layer": [...],
                                          #  "embeddings": x, "pooler": x or None}

Each number is a relative change ||W_t - W_0|| / ||W_0||, where W is all the parameters of a group (weights
and biases together, as one vector): per layer its attention (the fused qkv and the output projection),
its feed-forward (up and down), its two LayerNorms, and the whole layer; then the embedding block and
BERT's pooler. It answers "do corrupted layers move more than intact ones, and when?"

Cheap enough for every epoch: the snapshot is the only copy (in each parameter's own dtype, on its device),
differences are taken one tensor at a time in float32 on that device, and one transfer brings the sums back.
"""
import torch
import torch.nn as nn


def _encoder(model: nn.Module) -> nn.Module:
    """The encoder of a classifier (its `.encoder`), or the model itself."""
    return getattr(model, "encoder", model)


@torch.no_grad()
def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every encoder parameter, by state-dict name: the W_0 that weight_drift() measures from."""
    return {name: p.detach().clone() for name, p in _encoder(model).named_parameters()}


def _group(name: str) -> tuple[str, int | None]:
    """Which group a parameter belongs to: ("attn" | "ffn" | "norm", layer index) or ("embeddings" | "pooler", None)."""
    parts = name.split(".")
    if parts[0] != "layers":
        return parts[0], None
    part = {"attention": "attn", "ffn": "ffn", "attn_norm": "norm", "ffn_norm": "norm"}[parts[2]]
    return part, int(parts[1])


@torch.no_grad()
def weight_drift(model: nn.Module, start: dict[str, torch.Tensor]) -> dict:
    """Relative weight change of every group of the encoder since `start` (a snapshot()); see the module doc.
    Lists are indexed by layer (0 = layer 1); "pooler" is None for DistilBERT."""
    enc = _encoder(model)
    if set(start) != {name for name, _ in enc.named_parameters()}:
        raise ValueError("weight_drift: the snapshot was taken of a different model (its parameter names differ)")
    keys, moved, size = [], [], []  # per parameter: its group, ||W_t - W_0||^2 and ||W_0||^2, as 0-dim tensors
    for name, p in enc.named_parameters():
        w0 = start[name].float()
        keys.append(_group(name))
        moved.append(torch.dist(p.detach().float(), w0).square())  # stays on the device: no wait per parameter
        size.append(w0.square().sum())
    both = torch.stack(moved + size).double().tolist()  # the one transfer to the host (a sync) per call
    moved, size = both[:len(moved)], both[len(moved):]

    sums = {}  # (group, layer) -> [moved^2, size^2]
    for key, m, s in zip(keys, moved, size):
        for k in (key, ("layer", key[1])) if key[1] is not None else (key,):
            acc = sums.setdefault(k, [0.0, 0.0])
            acc[0] += m
            acc[1] += s

    def rel(key):
        m, s = sums[key]
        return (m / s) ** 0.5 if s > 0 else float("nan")  # a group that started at exactly 0 has no scale

    L = len(enc.layers)
    return {**{g: [rel((g, i)) for i in range(L)] for g in ("attn", "ffn", "norm", "layer")},
            "embeddings": rel(("embeddings", None)),
            "pooler": rel(("pooler", None)) if ("pooler", None) in sums else None}
