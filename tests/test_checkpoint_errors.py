"""Bad checkpoints fail with one clear line that names the problem and the fix."""
import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import load_script
from safetensors.torch import load_file, save_file

import minibert
from minibert import Bert, BertConfig, load_pretrained, save_pretrained

TINY = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=64)


@pytest.fixture
def ckpt(tmp_path):
    return save_pretrained(Bert(BertConfig(**TINY)), tmp_path / "tiny")


def error_of(path) -> str:
    with pytest.raises((ValueError, FileNotFoundError)) as e:
        load_pretrained(path)
    message = str(e.value)
    assert "\n" not in message, message
    return message


def test_round_trip_of_a_tiny_checkpoint(ckpt):
    assert load_pretrained(ckpt).config.num_hidden_layers == 2


def test_missing_directory(tmp_path):
    assert "not found" in error_of(tmp_path / "nope")


def test_directory_without_config(ckpt):
    (ckpt / "config.json").unlink()
    assert "no config.json" in error_of(ckpt)


def test_directory_without_weights(ckpt):
    (ckpt / "model.safetensors").unlink()
    assert "no model.safetensors" in error_of(ckpt)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_unreadable_safetensors(ckpt, damage):
    f = ckpt / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not a checkpoint at all" * 10)
    msg = error_of(ckpt)
    assert "model.safetensors" in msg and "re-download" in msg


def test_config_weights_shape_mismatch(ckpt):
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["intermediate_size"] = 128
    (ckpt / "config.json").write_text(json.dumps(cfg))
    msg = error_of(ckpt)
    assert "shapes do not match" in msg and "intermediate.dense.weight" in msg


def test_missing_and_unexpected_keys_are_listed(ckpt):
    state = load_file(str(ckpt / "model.safetensors"))
    del state["encoder.layer.1.output.dense.bias"]
    state["encoder.layer.1.mystery.weight"] = torch.zeros(3)
    save_file(state, str(ckpt / "model.safetensors"))
    msg = error_of(ckpt)
    assert "missing keys encoder.layer.1.output.dense.bias" in msg
    assert "unexpected keys encoder.layer.1.mystery.weight" in msg


def test_known_extras_are_ignored(ckpt):
    state = load_file(str(ckpt / "model.safetensors"))
    state["cls.predictions.bias"] = torch.zeros(100)
    state["embeddings.position_ids"] = torch.arange(64)[None]
    save_file(state, str(ckpt / "model.safetensors"))
    assert load_pretrained(ckpt) is not None


def test_unknown_model_type(ckpt):
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["model_type"] = "roberta"
    (ckpt / "config.json").write_text(json.dumps(cfg))
    msg = error_of(ckpt)
    assert "unknown model_type 'roberta'" in msg


def test_bin_checkpoint_loads_with_weights_only(ckpt):
    state = load_file(str(ckpt / "model.safetensors"))
    (ckpt / "model.safetensors").unlink()
    torch.save(state, ckpt / "pytorch_model.bin")
    assert load_pretrained(ckpt).config.hidden_size == 32


def test_hub_id_while_offline_says_where_to_put_files(tmp_path):
    """The real huggingface_hub code path, with the hub switched off (HF_HUB_OFFLINE=1)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MINIBERT_WEIGHTS": str(tmp_path)}
    code = "import minibert; minibert.load_pretrained('base')"
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert "bert-base-uncased" in last and str(tmp_path / "base") in last and "weights/README.md" in last


def test_preset_is_found_in_weights_dir_offline(tmp_path, monkeypatch, ckpt):
    monkeypatch.setenv("MINIBERT_WEIGHTS", str(ckpt.parent))
    (ckpt.parent / "tiny").rename(ckpt.parent / "base")
    assert minibert.load_pretrained("base").config.hidden_size == 32


# ---- config.json values: checked before anything is allocated, one line through the CLI ------------------

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = load_script("train.py")
BAD_CONFIGS = {
    "a JSON list": ([1, 2], "must hold a JSON object"),
    "zero heads": ({"num_attention_heads": 0}, "num_attention_heads must be an integer from 1"),
    "a string size": ({"hidden_size": "384"}, "hidden_size must be an integer from 1 to 65,536, got '384'"),
    "heads do not divide hidden": ({"num_attention_heads": 5}, "not divisible by num_attention_heads 5"),
    "negative size": ({"intermediate_size": -64}, "intermediate_size must be an integer from 1"),
    "zero layers": ({"num_hidden_layers": 0}, "num_hidden_layers must be an integer from 1"),
    "absurd hidden size": ({"hidden_size": 1000000000}, "hidden_size must be an integer from 1 to 65,536"),
    "a million layers": ({"num_hidden_layers": 1000000}, "num_hidden_layers must be an integer from 1 to 1,000"),
    "beyond memory": ({"vocab_size": 10_000_000, "hidden_size": 65536, "num_attention_heads": 64},
                      "GiB of memory available here"),
}


def write_bad_config(ckpt, bad):
    cfg = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps(bad if isinstance(bad, list) else {**cfg, **bad}))


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_bad_config_json_is_one_line_from_train_py(ckpt, tmp_path, case, capsys):
    """train.py's main(argv) in this process; test_unreachable_hub_fails_fast_with_one_line runs the real script
    (`python train.py`: nothing else on stderr, exit status 2)."""
    bad, expected = BAD_CONFIGS[case]
    write_bad_config(ckpt, bad)
    argv = ["--model", str(ckpt), "--limit", "8", "--epochs", "1", "--out", str(tmp_path / "out")]
    assert TRAIN.main(argv) == 2
    stderr = capsys.readouterr().err
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("error: ") and str(ckpt / "config.json") in lines[0] and expected in lines[0]


@pytest.mark.parametrize("case", ["absurd hidden size", "a million layers", "beyond memory"])
def test_bad_sizes_are_refused_before_the_model_is_built(ckpt, monkeypatch, case):
    write_bad_config(ckpt, BAD_CONFIGS[case][0])

    def build(config):
        raise AssertionError("the model was built from a config that should have been refused")
    monkeypatch.setattr(minibert.checkpoint, "Bert", build)
    assert BAD_CONFIGS[case][1] in error_of(ckpt)


@pytest.mark.parametrize("flavour", ["bert", "distilbert"])
def test_parameter_estimate_is_exact(flavour):
    cfg = BertConfig(**{**TINY, "flavour": flavour, "type_vocab_size": 2 if flavour == "bert" else 0})
    assert cfg.num_parameters() == Bert(cfg).num_parameters()
    assert BertConfig().num_parameters() == 109_482_240  # bert-base-uncased's encoder, as HF counts it


# `python train.py ARGS`, with every time.sleep of the process added up and printed last on stderr
SLEEPS = """import runpy, sys, time
slept, sleep = [], time.sleep
time.sleep = lambda seconds: (slept.append(seconds), sleep(seconds))[1]
sys.argv = ["train.py", *sys.argv[1:]]
try:
    runpy.run_path("train.py", run_name="__main__")
finally:
    print(f"slept {sum(slept)} s", file=sys.stderr)
"""


def test_unreachable_hub_fails_fast_with_one_line(tmp_path):
    """Not switched offline, the hub just unreachable: one quick attempt, no retry chatter (issue 14).
    The real train.py entry point, once (the bad-config tests above call its main() in this process)."""
    import time
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", MINIBERT_WEIGHTS=str(tmp_path))  # port 9: nothing listens
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", SLEEPS, "--model", "large", "--corrupt", "top:0.5",
                          "--out", str(tmp_path / "out")], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    seconds = time.perf_counter() - start
    assert run.returncode == 2
    *lines, slept = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr  # before: 11 lines of "Retrying in Ns" first
    assert "bert-large-uncased" in lines[0] and str(tmp_path / "large") in lines[0]
    # before: 26-37 s, 23 s of them the hub client's back-off sleeps. Counted, not timed: on a busy machine
    # starting Python and torch alone can take 20 s; the wall clock only guards against a hang.
    assert slept == "slept 0 s", slept
    assert seconds < 120, seconds
