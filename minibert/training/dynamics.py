"""Healing dynamics: what a run logs per epoch about its encoder, beside the scores.

    dyn = Dynamics.start(clf, data, track_cka=True)   # after corruption, before the first step
    ...train an epoch...
    record.update(dyn.measure(clf))                   # {"drift": {...}, "cka": [per hidden state]}

drift (always): drift.weight_drift() against the encoder as fine-tuning found it, i.e. the corrupted
pre-trained weights: per layer its attention, feed-forward, LayerNorms and the whole layer, then the
embeddings and the pooler, each ||W_t - W_0|| / ||W_0||. A resumed run needs no stored copy of W_0:
trainer.fit() rebuilds the corrupted encoder from the checkpoint, the spec and the seed (corruption is
seeded and bit-identical) and starts the Dynamics before it loads the training state.

cka (track_cka=True): debiased linear CKA (cka.linear_cka) of each hidden state, mean-pooled over real
tokens as the healing analysis does (study/layer_cka.py), against the clean pre-trained encoder's on a fixed,
seeded sample of CKA_SAMPLE test examples. The clean features are computed once, at the start.
"""
import math
from dataclasses import dataclass

import numpy as np
import torch

from ..checkpoint import load_pretrained
from ..data.encoding import Encoded
from .cka import layer_features, linear_cka
from .drift import snapshot, weight_drift

CKA_SAMPLE = 256  # test examples CKA is measured on (all of them when the test set is smaller)


def sample(enc: Encoded, n: int, seed: int) -> Encoded:
    """n examples of `enc` drawn without replacement with `seed` (kept in their order), or all of them."""
    if len(enc) <= n:
        return enc
    rows = np.sort(np.random.default_rng(seed).choice(len(enc), n, replace=False))
    return Encoded([enc.ids[i] for i in rows], [enc.type_ids[i] for i in rows], [enc.labels[i] for i in rows],
                   enc.lengths[rows])


def _finite(value):
    """A drift number as JSON takes it: None for a group that started at exactly 0 (weight_drift's NaN)."""
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return None if value is None or math.isnan(value) else float(f"{value:.6g}")


@dataclass
class Dynamics:
    """The start of fine-tuning (W_0, and the clean encoder's features when CKA is tracked) and what to measure."""
    start_weights: dict
    cka_sample: Encoded | None = None
    clean_features: list | None = None
    pad_id: int = 0
    batch_size: int = 32
    device: torch.device | str = "cpu"

    @classmethod
    def start(cls, clf, data, track_cka: bool = False, seed: int = 0, batch_size: int = 32) -> "Dynamics":
        """Snapshot `clf`'s encoder now; with track_cka, also the clean pre-trained encoder's features on a
        seeded sample of data.test (data: a trainer Prepared: checkpoint, test, tokenizer, device)."""
        dyn = cls(snapshot(clf))
        if track_cka:
            if len(data.test) < 4:
                raise ValueError(f"--track-cka needs at least 4 test examples (debiased CKA), this run has "
                                 f"{len(data.test)}; raise --limit or drop --track-cka")
            dyn.cka_sample = sample(data.test, CKA_SAMPLE, seed)
            dyn.pad_id, dyn.batch_size, dyn.device = data.tokenizer.pad_id, batch_size, data.device
            with torch.random.fork_rng(devices=[]):  # building a model draws from the RNG; training's must not move
                clean = load_pretrained(data.checkpoint)
            dyn.clean_features = layer_features(clean, dyn.cka_sample, dyn.pad_id, batch_size, data.device)
            del clean
        return dyn

    def measure(self, clf) -> dict:
        """{"drift": weight drift since the start} and, when tracked, {"cka": CKA with the clean encoder per
        hidden state (0 = embeddings)}. Leaves `clf` in eval mode."""
        out = {"drift": {k: _finite(v) for k, v in weight_drift(clf, self.start_weights).items()}}
        if self.clean_features is not None:
            feats = layer_features(clf.encoder, self.cka_sample, self.pad_id, self.batch_size, self.device)
            out["cka"] = [round(linear_cka(a, b), 6) for a, b in zip(self.clean_features, feats)]
        return out
