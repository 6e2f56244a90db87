"""Layer-wise probes: a signal planted at one layer is found there and not before; a real saved run goes
through the command line (table, JSON, PNG, one-line errors)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import assert_one_line_error, run_main

from minibert import Bert, BertConfig
from minibert.data.encoding import Encoded
from minibert.study.probe_layers import layer_probes, main

REPO = Path(__file__).resolve().parent.parent


def examples(n, seed):
    """n random token sequences whose label (0/1) rides in the token types, which the encoder below ignores."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n).tolist()
    lengths = rng.integers(4, 13, n)
    ids = [[1] + rng.integers(2, 100, length - 1).tolist() for length in lengths]
    type_ids = [[label] * len(x) for label, x in zip(labels, ids)]
    return Encoded(ids, type_ids, labels, np.asarray(lengths, dtype=np.int64))


def planted(k: int, num_layers: int = 4) -> Bert:
    """A random tiny encoder in which nothing below layer k sees the label, and layer k's output is shifted
    along one direction by +-1 according to it (a hook reads the token types, the label's carrier)."""
    torch.manual_seed(0)
    enc = Bert(BertConfig(vocab_size=100, hidden_size=32, num_attention_heads=4, intermediate_size=64,
                          num_hidden_layers=num_layers, max_position_embeddings=16))
    with torch.no_grad():
        enc.embeddings.token_type_embeddings.weight.zero_()  # the label is invisible to the embeddings and above
    direction = torch.randn(32, generator=torch.Generator().manual_seed(1))
    seen = {}
    enc.register_forward_pre_hook(lambda module, args: seen.update(types=args[2]))

    def plant(module, args, output):
        sign = 2.0 * seen["types"][:, :1].float() - 1.0  # (B, 1): -1 or +1 per example
        return output + sign[:, :, None] * direction  # (B, T, H)

    enc.layers[k - 1].register_forward_hook(plant)
    return enc


@pytest.mark.parametrize("k, pooling", [(2, "mean"), (3, "cls")])
def test_the_probe_finds_a_signal_at_the_layer_it_was_planted_in(k, pooling):
    accuracy = layer_probes(planted(k), examples(200, 0), examples(200, 1), pad_id=0, pooling=pooling)
    print(f"planted at {k} ({pooling}):", [round(a, 3) for a in accuracy])
    assert len(accuracy) == 5
    assert max(accuracy[:k]) < 0.7, "before layer k the features are independent of the label"
    assert min(accuracy[k:]) > 0.95, "from layer k on the label is linearly decodable"


@pytest.fixture(scope="module")
def run(tiny_runs):
    return tiny_runs[1]  # top:2, saved


def test_probe_layers_cli_on_a_real_run(run, tmp_path, capsys):
    png = tmp_path / "probes.png"
    assert main([str(run), "--png", str(png)]) == 0
    text = capsys.readouterr().out
    assert "| layer | corrupted | clean | corrupted | fine-tuned |" in text and "| 6 | yes |" in text
    result = json.loads((run / "probe_layers.json").read_text())
    assert result["layers"] == list(range(7)) and result["corrupted_layers"] == [5, 6]
    assert result["pooling"] == "mean" and result["n_train"] == result["n_test"] == 48
    assert result["clean"][:5] == result["corrupted"][:5]  # below the corruption: the same encoder, the same probe
    assert all(0 <= a <= 1 for name in ("clean", "corrupted", "finetuned") for a in result[name])
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_probe_layers_cli_errors_are_one_line(run, tmp_path, capsys):
    for argv in ([str(run), "--max-train", "1"], [str(run), "--bogus"]):
        assert_one_line_error(*run_main(main, argv, capsys))
    # the real command, once
    proc = subprocess.run([sys.executable, "-m", "minibert.study.probe_layers", str(tmp_path / "missing")],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO)
    assert_one_line_error(proc.returncode, proc.stderr)
