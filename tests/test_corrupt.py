"""Corruption (the paper's section 3): the spec grammar, the re-initialisation, what stays untouched,
seeding, the report, and a behavioural check on the real MiniLM checkpoint with real MRPC paraphrases."""
import copy
import csv
import dataclasses
import json
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import tiny_bert

import minibert
from minibert import PRESETS, Bert, SequenceClassifier
from minibert.corrupt import GRAMMAR, corrupt, parse_spec
from minibert.heads import mean_pool

TINY = dict(vocab_size=100, hidden_size=64, num_attention_heads=4, intermediate_size=128, max_position_embeddings=32)


def tiny(num_layers=4) -> Bert:
    """A small encoder with every tensor shifted well off its init, so LayerNorm = 1 and bias = 0 are real changes."""
    return tiny_bert(num_layers=num_layers, moved=0.3, shift=0.1)


def tensors(model: nn.Module) -> dict:
    """Every parameter and buffer, cloned."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def in_layer(name: str, layers) -> bool:
    """Does state-dict `name` belong to one of the 1-based `layers`?"""
    return any(name.startswith(f"layers.{i - 1}.") for i in layers)


def test_reinit_resets_every_parameter_of_the_chosen_layers():
    model = tiny(num_layers=4)
    before = tensors(model)
    report = corrupt(model, "layers:2,4", seed=0)
    assert report.layers == [2, 4] and report.method == "reinit"
    chosen = {n for n in before if in_layer(n, [2, 4])}
    assert {p["name"] for p in report.params} == chosen and len(chosen) == 2 * 12
    for name, p in model.named_parameters():
        if name not in chosen:
            continue
        assert not torch.equal(p, before[name]), f"{name} was not reset"
        if name.endswith("norm.weight"):
            assert torch.all(p == 1.0), name
        elif name.endswith("bias"):
            assert torch.all(p == 0.0), name
        else:
            fan_in = p.shape[1]  # nn.Linear weight is (out, in)
            assert p.abs().max() <= math.sqrt(6 / fan_in), name
            assert p.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.05), name


def test_nothing_outside_the_chosen_layers_changes():
    clf = SequenceClassifier(tiny(num_layers=4), num_labels=3)  # corrupt() reaches through .encoder
    before = tensors(clf)
    rng = torch.get_rng_state()
    corrupt(clf, "top:0.5", seed=0)
    assert torch.equal(torch.get_rng_state(), rng), "the global RNG must not be consumed"
    after = tensors(clf)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {k for k in before if in_layer(k.removeprefix("encoder."), [3, 4])}


def test_embeddings_only_with_the_flag():
    model = tiny(num_layers=2)
    before = tensors(model)
    report = corrupt(model, "bottom:1+embeddings", seed=0)
    assert report.embeddings and report.layers == [1]
    after = tensors(model)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {k for k in before if k.startswith(("embeddings.", "layers.0."))}
    assert torch.all(model.embeddings.norm.weight == 1) and torch.all(model.embeddings.norm.bias == 0)
    assert model.embeddings.word_embeddings.weight.abs().max() <= math.sqrt(6 / model.config.hidden_size)


@pytest.mark.parametrize("preset, expected", [
    ("base", {"bottom:0.25": range(1, 4), "bottom:50%": range(1, 7), "bottom:0.75": range(1, 10),
              "bottom:1.0": range(1, 13), "top:25%": range(10, 13), "top:0.5": range(7, 13),
              "top:0.75": range(4, 13), "all": range(1, 13)}),
    ("large", {"bottom:0.25": range(1, 7), "bottom:0.5": range(1, 13), "bottom:75%": range(1, 19),
               "top:0.25": range(19, 25), "top:0.5": range(13, 25), "top:0.75": range(7, 25)}),
    ("distil", {"bottom:0.5": range(1, 4), "top:50%": range(4, 7), "top:1.0": range(1, 7)}),
])
def test_the_papers_layer_mappings(preset, expected):
    config = dataclasses.replace(PRESETS[preset][1], **{k: v for k, v in TINY.items()})
    model = Bert(config)
    for spec, layers in expected.items():
        assert corrupt(model, spec).layers == list(layers), (preset, spec)


@pytest.mark.parametrize("spec, layers", [
    ("top:1", [12]), ("bottom:3", [1, 2, 3]), ("top:12", list(range(1, 13))), ("top:1.0", list(range(1, 13))),
    ("top:0.3", [9, 10, 11, 12]),   # 3.6 layers -> 4
    ("bottom:0.125", [1, 2]),       # 1.5 layers -> 2: half rounds up
    ("bottom:0.01", [1]),           # at least one layer
    ("top:5%", [12]), ("layers:1-3,7", [1, 2, 3, 7]), ("layers:7,2-3,3", [2, 3, 7]), ("none", []),
    (" TOP:0.5 ", list(range(7, 13))),
])
def test_integer_counts_fractions_and_lists(spec, layers):
    assert parse_spec(spec, 12).layers == layers


def test_methods_noise_and_zero():
    model = tiny(num_layers=2)
    before = tensors(model)
    report = corrupt(model, "bottom:1@noise=0.1", seed=0)
    assert report.method == "noise=0.1"
    w0, w1 = before["layers.0.ffn.up.weight"], model.layers[0].ffn.up.weight.detach()
    assert (w1 - w0).std().item() == pytest.approx(0.1 * w0.std().item(), rel=0.05)
    corrupt(model, "top:1@zero")
    assert all(torch.all(p == 0) for p in model.layers[1].parameters())
    assert torch.equal(model.layers[0].ffn.up.weight, w1)


@pytest.mark.parametrize("spec", ["all", "top:0.5@noise=0.2", "bottom:1+embeddings"])
def test_same_seed_identical_other_seed_different(spec):
    base = tiny(num_layers=4)
    a, b, c = copy.deepcopy(base), copy.deepcopy(base), copy.deepcopy(base)
    corrupt(a, spec, seed=7)
    corrupt(b, spec, seed=7)
    corrupt(c, spec, seed=8)
    ta, tb, tc = tensors(a), tensors(b), tensors(c)
    assert all(torch.equal(ta[k], tb[k]) for k in ta)
    assert any(not torch.equal(ta[k], tc[k]) for k in ta)


def test_none_touches_nothing():
    model = tiny(num_layers=2)
    before = tensors(model)
    report = corrupt(model, "none", seed=3)
    assert report.layers == [] and report.params == []
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_report_is_json_and_prints_a_table():
    model = tiny(num_layers=4)
    report = corrupt(model, "top:0.5", seed=1)
    d = json.loads(json.dumps(report.to_dict()))
    assert d["spec"] == "top:0.5" and d["layers"] == [3, 4] and d["method"] == "reinit" and d["seed"] == 1
    qkv = next(p for p in d["params"] if p["name"] == "layers.3.attention.qkv.weight")
    assert qkv["shape"] == [192, 64]
    assert qkv["norm_after"] == pytest.approx(model.layers[3].attention.qkv.weight.norm().item())
    assert qkv["norm_before"] != pytest.approx(qkv["norm_after"])
    text = str(report)
    assert "layers 3-4" in text and "seed 1" in text
    assert len(text.splitlines()) == 2 + 2  # summary, header, one row per layer


@pytest.mark.parametrize("spec", ["top:1.5", "top:0", "middle:0.5", "layers:0-3", "layers:5-13", "bottom:abc",
                                  "top:0.5@melt", "", "top:13", "top:0.0", "top:150%", "layers:3-1",
                                  "top:0.5@noise=-1", "all:3", "bottom"])
def test_bad_specs_give_a_one_line_error_with_the_grammar(spec):
    with pytest.raises(ValueError) as e:
        parse_spec(spec, 12)
    msg = str(e.value)
    assert "\n" not in msg and GRAMMAR in msg and repr(spec) in msg


def test_rejected_before_touching_the_model():
    model = tiny(num_layers=2)
    before = tensors(model)
    with pytest.raises(ValueError):
        corrupt(model, "layers:1-3")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    with pytest.raises(TypeError):
        corrupt(nn.Linear(2, 2), "all")


def test_public_api():
    """minibert.corrupt is the function (the documented call); the module's names import from minibert.corrupt."""
    assert minibert.corrupt is corrupt and minibert.parse_spec is parse_spec  # both imported from the module above
    assert minibert.parse_spec("top:0.5", 24).layers == list(range(13, 25))


# ---- behaviour on real weights --------------------------------------------------------------------

def paraphrases(data_root, n=64):
    """The first n paraphrase pairs (Quality 1) of MRPC's train split."""
    with open(data_root / "mrpc" / "train.tsv", encoding="utf-8-sig", newline="") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if r["Quality"] == "1"]
    return [r["#1 String"] for r in rows[:n]], [r["#2 String"] for r in rows[:n]]


def test_corruption_destroys_what_minilm_knows_about_paraphrases(minilm_dir, data_root):
    """Clean MiniLM puts paraphrases much closer than unrelated pairs; re-initialising every layer must
    erase most of that gap. bottom:2 and top:2 are measured and printed, not asserted: their
    comparison is the paper's claim under test, not a property of this code."""
    clean, tok = minibert.load_pretrained(minilm_dir).eval(), minibert.load_tokenizer(minilm_dir)
    first, second = paraphrases(data_root)
    batch = tok(first + second, max_length=64)

    @torch.no_grad()
    def gap(spec):
        model = copy.deepcopy(clean)
        corrupt(model, spec, seed=0)
        e = mean_pool(model(**batch).last_hidden_state, batch["attention_mask"])
        a, b = e.chunk(2)
        # shuffled pairs: each first sentence against the next pair's second sentence
        return (F.cosine_similarity(a, b).mean() - F.cosine_similarity(a, b.roll(1, 0)).mean()).item()

    gaps = {spec: gap(spec) for spec in ("none", "all", "bottom:2", "top:2")}
    print("paraphrase - shuffled mean cosine:", {k: round(v, 3) for k, v in gaps.items()})
    assert gaps["none"] > 0.3, "clean MiniLM should separate paraphrases from unrelated pairs clearly"
    assert gaps["all"] < 0.5 * gaps["none"]
