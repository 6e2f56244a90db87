"""Linear CKA: its invariances on synthetic data, and layer-wise CKA of real MiniLM under corruption."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import assert_one_line_error, run_main

from minibert import corrupt, load_pretrained, load_tokenizer
from minibert.data.datasets import load_dataset
from minibert.data.encoding import encode
from minibert.study.layer_cka import format_healing, healing, main
from minibert.training.cka import layer_features, linear_cka, shuffled_floor

REPO = Path(__file__).resolve().parent.parent


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


@pytest.fixture(scope="module")
def ag_news_96(minilm_dir, data_root):
    """96 real AG News test examples encoded for MiniLM, and clean MiniLM's features of them at every layer."""
    ds = load_dataset("ag_news", data_root / "ag_news", seed=0, limit=96)
    tok = load_tokenizer(minilm_dir)
    enc = encode(ds.test, tok, 64)
    return enc, tok, layer_features(load_pretrained(minilm_dir), enc, tok.pad_id)


def test_layerwise_cka_of_corrupted_minilm_on_real_data(minilm_dir, ag_news_96):
    """Top corruption leaves the layers below untouched (CKA exactly 1); the layers it re-initialises
    and bottom corruption's whole stack drift away from the clean model."""
    enc, tok, clean = ag_news_96
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


# ---- the debiased estimator and the shuffled-rows floor (issue 12) ----------------------------------

def test_debiased_cka_of_independent_wide_features_is_near_zero_where_the_biased_one_is_not():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(256, 768, generator=g), torch.randn(256, 768, generator=g)
    biased, debiased = linear_cka(x, y, debiased=False), linear_cka(x, y)
    print(f"n=256, d=768 independent: biased {biased:.3f}, debiased {debiased:+.4f}")
    assert abs(debiased) < 0.05
    assert biased > 0.5


def test_debiased_cka_with_itself_is_one_and_keeps_the_invariances():
    x = features(n=300, d=32)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    q, _ = torch.linalg.qr(torch.randn(32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    assert linear_cka(x, x.double() @ q) == pytest.approx(1.0, abs=1e-10)  # orthogonal transform
    assert linear_cka(x, 0.01 * x) == pytest.approx(1.0, abs=1e-10)  # isotropic scale
    assert linear_cka(x, 3.0 * x.double() @ q + 7.0) == pytest.approx(1.0, abs=1e-10)  # all three with a shift
    y = features(n=300, d=32, seed=5)
    assert linear_cka(x, y) == pytest.approx(linear_cka(x.double() @ q * 2.5, y), abs=1e-10)
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x), abs=1e-12)


def test_the_debiased_estimator_matches_its_formula_on_a_small_case():
    """Song et al. (2012), eq. 5, written out with explicit loops over the examples for n=6."""
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(6, 2, generator=g, dtype=torch.float64)

    def hsic(a, b):
        n = len(a)
        k, l = a @ a.T, b @ b.T
        k.fill_diagonal_(0)
        l.fill_diagonal_(0)
        ones = torch.ones(n, dtype=torch.float64)
        return (torch.trace(k @ l) + (ones @ k @ ones) * (ones @ l @ ones) / ((n - 1) * (n - 2))
                - 2 / (n - 2) * ones @ k @ l @ ones) / (n * (n - 3))

    xc, yc = x - x.mean(0), y - y.mean(0)
    want = hsic(xc, yc) / (hsic(xc, xc) * hsic(yc, yc)).sqrt()
    assert linear_cka(x, y) == pytest.approx(want.item(), abs=1e-12)


def test_shuffled_floor_of_real_features_is_near_zero_debiased(ag_news_96):
    _, _, clean = ag_news_96
    floors = [shuffled_floor(f, f, seed=0) for f in clean]
    biased = [shuffled_floor(f, f, seed=0, debiased=False) for f in clean]
    print("shuffled floor per layer, debiased:", [round(f, 3) for f in floors], "biased:", [round(f, 3) for f in biased])
    assert max(abs(f) for f in floors) < 0.1
    assert shuffled_floor(clean[3], clean[3], seed=0) == shuffled_floor(clean[3], clean[3], seed=0)  # seeded
    assert shuffled_floor(clean[3], clean[3], seed=0) != shuffled_floor(clean[3], clean[3], seed=1)


@pytest.fixture(scope="module")
def runs(tiny_runs):
    """A clean and a top:2 corrupted real run of the same cell, both with their fine-tuned models saved."""
    return tiny_runs


def test_healing_reports_the_floor_and_the_estimator(runs, capsys):
    clean, bad = runs
    result = healing(clean, bad, n=40)
    assert result["estimator"] == "debiased" and result["n"] == 40 and result["corrupted_layers"] == [5, 6]
    assert len(result["floor"]) == len(result["floor_after"]) == len(result["before"]) == 7
    assert result["before"][:5] == pytest.approx([1.0] * 5, abs=1e-9)  # below the corruption: the same model
    assert max(abs(f) for f in result["floor"] + result["floor_after"]) < 0.2
    assert all(b > f for b, f in zip(result["before"][:5], result["floor"][:5]))
    table = format_healing(result)  # what the command prints without --json
    assert table.startswith("debiased linear CKA") and "| floor before | floor after |" in table
    assert re.search(r"\| 6 \| yes \| -?\d\.\d{3} \| -?\d\.\d{3} \| [+-]\d\.\d{3} \| -?\d\.\d{3} \| -?\d\.\d{3} \|", table)
    assert main([str(clean), str(bad), "--n", "10000", "--biased", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["estimator"] == "biased" and printed["n"] == 48  # the whole test set when it is smaller than n


def test_cka_cli_errors_are_one_line(runs, tmp_path, capsys):
    clean, _ = runs
    for argv in ([str(clean), str(clean), "--n", "2"], [str(clean)]):
        assert_one_line_error(*run_main(main, argv, capsys))
    # the real command, once
    proc = subprocess.run([sys.executable, "-m", "minibert.study.layer_cka", str(clean), str(tmp_path / "missing")],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO)
    assert_one_line_error(proc.returncode, proc.stderr)


def test_healing_measures_on_the_runs_own_test_set(tmp_path, tiny_dir, data_root):
    """A data-budget run trains on --limit examples and is tested on --test-limit: CKA reads that same test set,
    so that every size of the axis is compared on the same examples."""
    from helpers import tiny_run
    clean = tiny_run(tmp_path / "clean", tiny_dir, data_root, limit=16, test_limit=40, save_model=False)
    bad = tiny_run(tmp_path / "top2", tiny_dir, data_root, corrupt="top:2", limit=16, test_limit=40, save_model=False)
    assert healing(clean, bad, n=1000)["n"] == 40  # not 16: --limit caps the test set only without --test-limit
    other = tiny_run(tmp_path / "other", tiny_dir, data_root, corrupt="top:2", limit=16, test_limit=32,
                     save_model=False)
    with pytest.raises(ValueError, match="test_limit"):
        healing(clean, other)


def test_healing_reads_runs_from_before_test_limit_existed(tmp_path, tiny_dir, data_root):
    """config.json of a run made before --test-limit has no such key (results/minilm-short's recipe cells): healing
    takes it as unset, as read_run's callers do, instead of failing with a KeyError."""
    from helpers import tiny_run
    runs = [tiny_run(tmp_path / name, tiny_dir, data_root, corrupt=spec, limit=16, save_model=False)
            for name, spec in (("clean", "none"), ("top2", "top:2"))]
    for run in runs:
        config = json.loads((run / "config.json").read_text())
        del config["args"]["test_limit"]
        (run / "config.json").write_text(json.dumps(config))
    assert healing(*runs, n=1000)["n"] == 16
