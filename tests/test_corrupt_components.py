"""Component-level corruption (/attn, /ffn, /norm, /qk), +pooler and scientific-notation noise: each spec
changes exactly its tensors (and, for /qk, its rows of the fused qkv) on the real MiniLM checkpoint and on a
BERT-base-shaped model, and nothing else by a single bit."""
import copy
import math

import pytest
import torch
from helpers import scramble_, tiny_bert

import minibert
from minibert import PRESETS, Bert
from minibert.corrupt import GRAMMAR, corrupt, parse_spec

PARTS = {"all": ("attention.qkv.", "attention.proj.", "attn_norm.", "ffn.up.", "ffn.down.", "ffn_norm."),
         "attn": ("attention.qkv.", "attention.proj."), "ffn": ("ffn.up.", "ffn.down."),
         "norm": ("attn_norm.", "ffn_norm."), "qk": ("attention.qkv.",)}


def tiny(flavour="bert") -> Bert:
    return tiny_bert(flavour=flavour, moved=0.02)  # LayerNorm weights off 1, biases off 0: resetting them changes them


@pytest.fixture(scope="module")
def base_shaped() -> Bert:
    """bert-base-uncased's shapes (12 x 768, pooler), random weights moved off their init."""
    torch.manual_seed(0)
    return scramble_(Bert(PRESETS["base"][1]))


@pytest.fixture(scope="module")
def minilm(minilm_dir) -> Bert:
    return minibert.load_pretrained(minilm_dir)


def expected(model: Bert, spec: str) -> set[str]:
    """The parameter names `spec` must change, written from the grammar's definition, not from corrupt.py."""
    s = parse_spec(spec, len(model.layers))
    names = {n for n, _ in model.named_parameters()}
    want = {n for n in names for i in s.layers for part in PARTS[s.component] if n.startswith(f"layers.{i - 1}.{part}")}
    want |= {n for n in names if (s.embeddings and n.startswith("embeddings.")) or (s.pooler and n.startswith("pooler."))}
    return want


def check_exactly(model: Bert, spec: str, seed: int = 0):
    """Corrupt a copy of `model` with `spec` and check bit by bit what changed: exactly the expected tensors,
    and for /qk exactly the query and key rows of qkv."""
    broken = copy.deepcopy(model)
    report = corrupt(broken, spec, seed=seed)
    before, after = model.state_dict(), broken.state_dict()
    want = expected(model, spec)
    assert want, spec
    assert {p["name"] for p in report.params} == want, spec
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    # a tensor already at its reset value cannot change (MiniLM's pooler bias is all zeros)
    already = {n for n in want - changed if report.method in ("reinit", "zero") and n.endswith("bias")
               and torch.all(before[n] == 0)}
    assert changed == want - already, f"{spec}: changed but not asked {changed - want}, asked but unchanged {want - changed}"
    H = model.config.hidden_size
    qk = report.component == "qk"
    for name in want:
        rows = next(p["rows"] for p in report.params if p["name"] == name)
        if qk and ".attention.qkv." in name:
            assert rows == [0, 2 * H], name
            assert torch.equal(after[name][2 * H:], before[name][2 * H:]), f"{name}: value rows must be kept"
            assert (after[name][:2 * H] != before[name][:2 * H]).reshape(2 * H, -1).any(1).all(), f"{name}: every q/k row"
        else:
            assert rows is None, name
    return report, broken


COMPONENT_SPECS = ["top:0.5/attn", "bottom:2/ffn@noise=1e-3", "layers:2,5/norm@zero", "all/qk+pooler",
                   "top:1/qk@noise=0.1+embeddings", "bottom:0.5/attn+embeddings+pooler@zero", "top:2+pooler"]


@pytest.mark.parametrize("spec", COMPONENT_SPECS)
def test_each_component_changes_exactly_its_tensors_on_minilm(minilm, spec):
    check_exactly(minilm, spec)


@pytest.mark.parametrize("spec", ["top:0.25/attn+pooler", "bottom:0.25/qk", "layers:1,12/ffn@noise=1e-3",
                                  "bottom:1/norm+embeddings", "layers:6/qk@zero"])
def test_each_component_changes_exactly_its_tensors_on_a_bert_base_shaped_model(base_shaped, spec):
    check_exactly(base_shaped, spec)


def test_reinit_values_of_components_and_pooler():
    model = tiny()
    H = model.config.hidden_size
    report, broken = check_exactly(model, "top:1/qk+pooler")
    qkv = broken.layers[3].attention.qkv
    bound = math.sqrt(6 / H)  # the fan of the full (3H, H) matrix: its H columns
    assert qkv.weight[:2 * H].abs().max() <= bound
    assert qkv.weight[:2 * H].std().item() == pytest.approx(math.sqrt(2 / H), rel=0.05)
    assert torch.all(qkv.bias[:2 * H] == 0) and torch.equal(qkv.bias[2 * H:], model.layers[3].attention.qkv.bias[2 * H:])
    assert torch.all(broken.pooler.dense.bias == 0) and broken.pooler.dense.weight.abs().max() <= bound
    assert report.pooler and report.to_dict()["pooler"] is True and report.component == "qk"
    _, broken = check_exactly(model, "bottom:1/norm")
    assert torch.all(broken.layers[0].attn_norm.weight == 1) and torch.all(broken.layers[0].ffn_norm.bias == 0)


def test_the_report_says_what_was_kept_and_lists_the_rows():
    report = corrupt(tiny(), "layers:2/qk", seed=0)
    d = report.to_dict()
    assert d["pooler"] is False and d["embeddings"] is False and d["component"] == "qk"
    assert [(p["name"], p["rows"]) for p in d["params"]] == [("layers.1.attention.qkv.weight", [0, 128]),
                                                             ("layers.1.attention.qkv.bias", [0, 128])]
    text = str(report)
    assert "query and key rows of qkv" in text and "embeddings kept, pooler kept" in text
    assert f"{128 * 64 + 128:,} values" in text  # the rows touched, not the whole (192, 64) matrix
    assert "pooler corrupted" in str(corrupt(tiny(), "none+pooler"))


@pytest.mark.parametrize("spec", ["top:0.5/attn@noise=0.2", "bottom:1/qk", "all/ffn+pooler+embeddings",
                                  "top:1/norm@noise=1e-3"])
def test_component_specs_are_seeded(spec):
    base = tiny()
    a, b, c = copy.deepcopy(base), copy.deepcopy(base), copy.deepcopy(base)
    corrupt(a, spec, seed=7)
    corrupt(b, spec, seed=7)
    corrupt(c, spec, seed=8)
    ta, tb, tc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(ta[k], tb[k]) for k in ta)
    assert any(not torch.equal(ta[k], tc[k]) for k in ta)


@pytest.mark.parametrize("text, noise", [("1e-3", 1e-3), ("2E-2", 2e-2), ("1.5e+1", 15.0), (".5", 0.5), ("3", 3.0)])
def test_noise_accepts_any_positive_float(text, noise):
    s = parse_spec(f"top:1@noise={text}", 12)
    assert s.noise == noise and s.method == f"noise={noise:g}"


def test_every_existing_spec_keeps_its_meaning():
    for spec in ("all", "top:0.5", "bottom:1+embeddings", "layers:1-3,7@zero", "top:1@noise=0.1+embeddings"):
        s = parse_spec(spec, 12)
        assert s.component == "all" and s.pooler is False, spec


@pytest.mark.parametrize("spec", ["top:0.5/mlp", "top:0.5/", "none/attn", "top:1/attn/ffn", "top:0.5@noise=1e-400",
                                  "top:0.5@noise=inf", "top:0.5@noise=nan", "top:0.5@noise=1e", "top:0.5@noise=0e3",
                                  "/attn", "top:0.5/all"])
def test_bad_component_and_noise_specs_give_one_line(spec):
    with pytest.raises(ValueError) as e:
        parse_spec(spec, 12)
    msg = str(e.value)
    assert "\n" not in msg and GRAMMAR in msg and repr(spec) in msg


def test_pooler_on_distilbert_is_a_clear_one_line_error():
    model = tiny("distilbert")
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError) as e:
        corrupt(model, "top:1+embeddings+pooler")
    assert "\n" not in str(e.value) and "DistilBERT" in str(e.value) and "drop +pooler" in str(e.value)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert parse_spec("top:1+pooler", 6).pooler  # a BERT (the default) has one
