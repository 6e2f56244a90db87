"""Weight drift: 0 for an untouched or frozen encoder, and equal to ||W_t - W_0|| / ||W_0|| computed by hand
after a manual update and after real optimiser steps."""
import math

import pytest
import torch
from helpers import tiny_bert

from minibert import Bert, SequenceClassifier
from minibert.training.drift import snapshot, weight_drift


def tiny(flavour="bert") -> Bert:
    return tiny_bert(num_layers=3, flavour=flavour, hidden_size=32, max_position_embeddings=16)


def direct(model, start, prefixes) -> float:
    """||W_t - W_0|| / ||W_0|| over every parameter whose name starts with one of `prefixes`, in float64."""
    names = [n for n in start if n.startswith(prefixes)]
    params = dict(model.named_parameters())
    moved = sum((params[n].detach().double() - start[n].double()).square().sum() for n in names)
    size = sum(start[n].double().square().sum() for n in names)
    return math.sqrt(moved / size)


def test_untouched_encoder_has_zero_drift():
    model = tiny()
    d = weight_drift(model, snapshot(model))
    assert d["attn"] == d["ffn"] == d["norm"] == d["layer"] == [0.0] * 3
    assert d["embeddings"] == 0.0 and d["pooler"] == 0.0
    assert weight_drift(tiny("distilbert"), snapshot(tiny("distilbert")))["pooler"] is None


def test_a_manual_update_matches_the_direct_computation():
    model = tiny()
    start = snapshot(model)
    with torch.no_grad():
        model.layers[1].ffn.up.weight.add_(0.1)
        model.layers[1].ffn.down.bias.mul_(3.0).add_(0.05)
        model.layers[2].attention.qkv.weight[:32].mul_(-1)
    d = weight_drift(model, start)
    assert d["ffn"][1] == pytest.approx(direct(model, start, ("layers.1.ffn.",)), rel=1e-6)
    assert d["layer"][1] == pytest.approx(direct(model, start, ("layers.1.",)), rel=1e-6)
    assert d["attn"][2] == pytest.approx(direct(model, start, ("layers.2.attention.",)), rel=1e-6) and d["attn"][2] > 0
    assert d["ffn"][0] == d["ffn"][2] == d["attn"][0] == d["attn"][1] == 0.0
    assert d["norm"] == [0.0] * 3 and d["embeddings"] == 0.0 and d["pooler"] == 0.0


def test_real_training_steps_match_and_a_frozen_encoder_stays_at_zero():
    clf = SequenceClassifier(tiny(), num_labels=3)
    start = snapshot(clf)
    assert set(start) == {n for n, _ in clf.encoder.named_parameters()}  # the encoder only, not the head
    opt = torch.optim.AdamW(clf.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 100, (8, 12), generator=g)
    labels = torch.randint(0, 3, (8,), generator=g)
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(clf(ids, torch.ones_like(ids)), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    d = weight_drift(clf, start)
    enc = clf.encoder
    for i in range(3):
        for group, prefixes in (("attn", ("attention.",)), ("ffn", ("ffn.",)), ("norm", ("attn_norm.", "ffn_norm."))):
            want = direct(enc, start, tuple(f"layers.{i}.{p}" for p in prefixes))
            assert d[group][i] == pytest.approx(want, rel=1e-5), (group, i)
    assert d["embeddings"] == pytest.approx(direct(enc, start, ("embeddings.",)), rel=1e-5) and d["embeddings"] > 0

    frozen = SequenceClassifier(tiny(), num_labels=3)
    frozen.requires_grad_(False).classifier.requires_grad_(True)  # probe mode: only the head trains
    start = snapshot(frozen)
    opt = torch.optim.AdamW([p for p in frozen.parameters() if p.requires_grad], lr=1e-2)
    loss = torch.nn.functional.cross_entropy(frozen(ids, torch.ones_like(ids)), labels)
    loss.backward()
    opt.step()
    d = weight_drift(frozen, start)
    assert d["layer"] == [0.0] * 3 and d["embeddings"] == 0.0 and d["pooler"] == 0.0


def test_a_snapshot_of_another_model_is_refused():
    with pytest.raises(ValueError, match="different model"):
        weight_drift(tiny(), snapshot(tiny("distilbert")))
