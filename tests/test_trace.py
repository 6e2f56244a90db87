"""trace's pictures: the figures are written, and the attention they plot is the model's, masked right."""
import shutil
import sys

import numpy as np
import pytest
from helpers import TOKENIZER_FILES

from minibert.tools import trace

pytest.importorskip("matplotlib")


def assert_plotted_attention_is_a_distribution(data):
    """Each real query's row sums to 1 over the real tokens; padding is 0 as key and as query."""
    real = data["real"]
    for name, a in data["attention"].items():  # (L, nh, T, T)
        np.testing.assert_allclose(a[:, :, real][..., real].sum(-1), 1.0, atol=1e-5, err_msg=name)
        assert np.abs(a[..., ~real]).max(initial=0.0) == 0.0, name
        assert np.abs(a[:, :, ~real]).max(initial=0.0) == 0.0, name


def assert_pngs(paths):
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
        assert path.stat().st_size > 10_000, path  # a drawn figure, not an empty canvas


@pytest.fixture(scope="module")
def distil_dir(tmp_path_factory, minilm_dir):
    """A DistilBERT-shaped random checkpoint saved by transformers, with MiniLM's tokenizer beside it."""
    transformers = pytest.importorskip("transformers")
    import torch

    torch.manual_seed(0)
    config = transformers.DistilBertConfig(vocab_size=30522, dim=64, n_layers=2, n_heads=4, hidden_dim=128)
    directory = tmp_path_factory.mktemp("distil")
    transformers.DistilBertModel(config).save_pretrained(directory)
    for name in TOKENIZER_FILES:
        shutil.copy(minilm_dir / name, directory / name)
    return directory


@pytest.mark.slow  # eight figures: drawing them takes most of a minute
def test_minilm_clean_vs_bottom2_figures(minilm_dir, tmp_path, capsys):
    argv = [str(minilm_dir), "--text", "The cat sat on the mat.", "--corrupt", "bottom:2", "--pad-to", "12",
            "--figures", str(tmp_path / "figs"), "--png", str(tmp_path / "all.png")]
    assert trace.main(argv) == 0
    out = capsys.readouterr().out
    figures = [tmp_path / "figs" / f"attention_layer{i}.png" for i in range(1, 7)] + [tmp_path / "figs" / "hidden.png"]
    assert_pngs(figures + [tmp_path / "all.png"])
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == sorted(p.name for p in figures)
    assert f"wrote {tmp_path / 'all.png'}" in out


def test_minilm_clean_vs_bottom2_attention(minilm_dir):
    """What the figures of the test above plot (the distilbert test below draws its figure in the fast suite)."""
    *_, data = trace.run_trace(minilm_dir, "The cat sat on the mat.", spec="bottom:2", pad_to=12)
    assert data["tokens"][-3:] == ["[PAD]"] * 3 and data["real"].sum() == 9
    assert data["attention"]["clean"].shape == (6, 12, 12, 12)
    assert_plotted_attention_is_a_distribution(data)
    assert data["corrupted_layers"] == [1, 2]
    # the embeddings are untouched, so the cosine starts at 1 and drops in the reinitialised layers
    np.testing.assert_allclose(data["cos"][0], 1.0, atol=1e-5)
    assert data["cos"][1:3, data["real"]].mean() < 0.9


def test_distilbert_pair_figures_show_both_segments(distil_dir, tmp_path, capsys):
    argv = [str(distil_dir), "--text", "A man is playing a guitar.", "--pair", "Nobody is making any music.",
            "--corrupt", "top:1", "--png", str(tmp_path / "pair.png")]
    assert trace.main(argv) == 0
    assert_pngs([tmp_path / "pair.png"])
    *_, data = trace.run_trace(distil_dir, "A man is playing a guitar.", "Nobody is making any music.",
                               spec="top:1", pad_to=20)
    sep = data["tokens"].index("[SEP]")
    assert set(data["types"][:sep + 1]) == {0} and set(data["types"][sep + 1:data["real"].sum()]) == {1}
    assert data["attention"]["corrupted"].shape == (2, 4, 20, 20)
    assert_plotted_attention_is_a_distribution(data)
    np.testing.assert_allclose(data["cos"][:2], 1.0, atol=1e-5)  # embeddings and layer 1 untouched by top:1


def test_figures_without_matplotlib_is_a_one_line_error(minilm_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    assert trace.main([str(minilm_dir), "--png", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "pip install 'minibert[plot]'" in err
    assert not (tmp_path / "x.png").exists()


def test_pad_to_shorter_than_the_input_is_a_one_line_error(minilm_dir, capsys):
    assert trace.main([str(minilm_dir), "--text", "The cat sat on the mat.", "--pad-to", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --pad-to 4") and "at least 9" in err
