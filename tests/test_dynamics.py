"""Healing dynamics in metrics.jsonl, on real SST-2 sentences on the CPU (with a tiny random BERT of MiniLM's depth
and tokenizer: the bookkeeping is the same for any weights, and the real model only costs time): the per-epoch
weight drift is 0 for a frozen encoder, equals ||W_t - W_0|| / ||W_0|| computed from the saved weights against
the corrupted pre-trained ones (also across a stop and --resume), and --track-cka logs a CKA per hidden state."""
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers import load_script, tiny_config

from minibert import load_classifier, load_pretrained
from minibert.corrupt import corrupt
from minibert.training.config import TrainConfig, train_flags
from minibert.training.trainer import train

REPO = Path(__file__).resolve().parent.parent
SPEC = "top:0.5"  # layers 4-6 of 6 re-initialised


def small(tiny_dir, data_root, out, **overrides) -> TrainConfig:
    return tiny_config(tiny_dir, data_root, out, **{"epochs": 2, "lr": 1e-4, "corrupt": SPEC, **overrides})


def metrics(out) -> list[dict]:
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def direct(encoder_state: dict, start: dict, prefixes: tuple) -> float:
    """||W_t - W_0|| / ||W_0|| over the encoder parameters whose names start with `prefixes`, in float64."""
    names = [n for n in start if n.startswith(prefixes)]
    moved = sum((encoder_state[n].double() - start[n].double()).square().sum() for n in names)
    return math.sqrt(moved / sum(start[n].double().square().sum() for n in names))


def check_drift(drift: dict, state: dict, start: dict):
    """Every group of a logged drift against the direct computation."""
    for i in range(6):
        for group, parts in (("attn", ("attention.",)), ("ffn", ("ffn.",)), ("norm", ("attn_norm.", "ffn_norm.")),
                             ("layer", ("",))):
            want = direct(state, start, tuple(f"layers.{i}.{p}" for p in parts))
            assert drift[group][i] == pytest.approx(want, rel=1e-4), (group, i)
    assert drift["embeddings"] == pytest.approx(direct(state, start, ("embeddings.",)), rel=1e-4)
    assert drift["pooler"] == pytest.approx(direct(state, start, ("pooler.",)), rel=1e-4)


def test_probe_mode_drift_is_zero(tiny_dir, data_root, tmp_path):
    train(small(tiny_dir, data_root, tmp_path / "probe", mode="probe"))
    for record in metrics(tmp_path / "probe"):
        d = record["drift"]
        assert d["attn"] == d["ffn"] == d["norm"] == d["layer"] == [0.0] * 6
        assert d["embeddings"] == 0.0 and d["pooler"] == 0.0
        assert "cka" not in record  # only with --track-cka


def test_finetune_drift_matches_the_saved_weights_across_a_resume_and_cka_is_logged(tiny_dir, data_root, tmp_path,
                                                                                   monkeypatch):
    out = tmp_path / "ft"
    cfg = small(tiny_dir, data_root, out, save_model=True, keep_checkpoint=True, track_cka=True)
    # train.py's main with --track-cka, stopped after epoch 1 as if killed, then resumed through the Python API
    monkeypatch.setenv("MINIBERT_STOP_AFTER_EPOCH", "1")
    assert load_script("train.py").main(train_flags(cfg)) == 0
    monkeypatch.delenv("MINIBERT_STOP_AFTER_EPOCH")
    assert len(metrics(out)) == 1
    result = train(replace(cfg, resume=True))
    history = metrics(out)
    assert [r["epoch"] for r in history] == [1, 2]

    start = load_pretrained(tiny_dir)
    corrupt(start, SPEC, seed=cfg.seed)
    start = {n: p.detach() for n, p in start.named_parameters()}
    # the last epoch: the weights in checkpoint.pt (kept); the best epoch: the saved model
    last = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    check_drift(history[-1]["drift"], {k.removeprefix("encoder."): v for k, v in last.items()}, start)
    saved = load_classifier(out / "model").encoder
    check_drift(history[result["best_epoch"] - 1]["drift"], dict(saved.state_dict()), start)
    assert min(history[-1]["drift"]["layer"]) > 0 and history[-1]["drift"]["embeddings"] > 0

    for record in history:
        cka = record["cka"]
        assert len(cka) == 7 and all(-0.2 < c <= 1.0 + 1e-6 for c in cka)
        # the embeddings barely move in 8 steps; the last layer was re-initialised: far from the clean one
        assert cka[0] > 0.9 and cka[6] < cka[0]


def test_track_cka_needs_four_test_examples(tiny_dir, data_root, tmp_path):
    with pytest.raises(ValueError, match="--track-cka needs at least 4 test examples"):
        train(small(tiny_dir, data_root, tmp_path / "x", limit=3, track_cka=True))
