"""Linear CKA: its invariances on synthetic data, and layer-wise CKA of real MiniLM under corruption."""
import pytest
import torch

from minibert import corrupt, load_pretrained, load_tokenizer
from minibert.cka import format_healing, layer_features, linear_cka
from minibert.data import encode
from minibert.datasets import load_dataset


def features(n=400, d=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    # correlated columns, so the test is not only about isotropic noise
    return torch.randn(n, d, generator=g) @ torch.randn(d, d, generator=g)


def test_cka_with_itself_is_one():
    x = features()
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)


def test_cka_is_invariant_to_rotation_scale_and_shift():
    x = features()
    q, _ = torch.linalg.qr(torch.randn(32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    y = 3.0 * x.double() @ q + 7.0
    assert linear_cka(x, y) == pytest.approx(1.0, abs=1e-10)


def test_cka_of_unrelated_features_is_near_zero():
    x, y = features(n=2000, d=16, seed=0), features(n=2000, d=16, seed=1)
    assert linear_cka(x, y) < 0.05


def test_cka_is_not_invariant_to_a_general_linear_map():
    # the counterpart of the rotation test: CKA must not call everything similar
    x = torch.randn(500, 8, generator=torch.Generator().manual_seed(0))
    y = x * torch.tensor([100.0, 1, 1, 1, 1, 1, 1, 1])  # one direction dominates
    assert 0.05 < linear_cka(x, y) < 0.9


def test_cka_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same n"):
        linear_cka(torch.randn(10, 3), torch.randn(11, 3))
    with pytest.raises(ValueError, match="constant"):
        linear_cka(torch.ones(10, 3), torch.randn(10, 3))


def test_layerwise_cka_of_corrupted_minilm_on_real_data(minilm_dir, data_root):
    """Top corruption leaves the layers below untouched (CKA exactly 1); the layers it re-initialises
    and bottom corruption's whole stack drift away from the clean model."""
    ds = load_dataset("ag_news", data_root / "ag_news", seed=0, limit=96)
    tok = load_tokenizer(minilm_dir)
    enc = encode(ds.test, tok, 64)
    clean = layer_features(load_pretrained(minilm_dir), enc, tok.pad_id)
    assert len(clean) == 7 and clean[0].shape == (96, 384)

    top = load_pretrained(minilm_dir)
    corrupt(top, "top:2", seed=0)
    cka_top = [linear_cka(a, b) for a, b in zip(clean, layer_features(top, enc, tok.pad_id))]
    assert cka_top[:5] == pytest.approx([1.0] * 5, abs=1e-9)
    assert max(cka_top[5:]) < 0.95

    bottom = load_pretrained(minilm_dir)
    corrupt(bottom, "bottom:0.5", seed=0)
    cka_bottom = [linear_cka(a, b) for a, b in zip(clean, layer_features(bottom, enc, tok.pad_id))]
    assert cka_bottom[0] == pytest.approx(1.0, abs=1e-9)  # the embeddings are not corrupted
    assert max(cka_bottom[1:]) < 0.95

    table = format_healing({"layers": list(range(7)), "before": cka_top, "after": None, "n": 96,
                            "corrupt": "top:2", "corrupted_layers": [5, 6]})
    assert "| 5 | yes |" in table and "| emb |  | 1.000 | - | - |" in table
