"""The trainer and the CLIs end to end, on the real MiniLM checkpoint and real SST-2 sentences, on the CPU.

Runs are kept tiny (a few hundred short sentences, max length 64, one or two epochs). MiniLM is a
sentence-embedding model trained with mean pooling, so the runs use --pooling mean and a large lr to
learn something in one epoch of ~20 steps. Tests of the mechanics alone (resume, the lr sweep, precision, a NaN
loss) train a tiny random BERT with MiniLM's tokenizer instead (the tiny_dir fixture).
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import load_script, tiny_config, tiny_run_config

from minibert import load_classifier, load_pretrained, save_pretrained
from minibert.corrupt import corrupt
from minibert.training.config import TrainConfig, train_flags
from minibert.training.trainer import train

REPO = Path(__file__).resolve().parent.parent
TIMING = ("seconds", "tokens_per_s")  # the only fields of a run that may differ between identical runs


def small(minilm_dir, data_root, out, **overrides) -> TrainConfig:
    return tiny_config(minilm_dir, data_root, out, **{"limit": 300, "max_length": 64, **overrides})


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


# ---- train.py end to end, then eval.py and transformers on what it wrote ---------------------------

@pytest.fixture(scope="module")
def cli_run(minilm_dir, data_root, tmp_path_factory):
    """`python train.py ... --save-model` as a subprocess: one epoch on 300 real SST-2 sentences."""
    cfg = small(minilm_dir, data_root, tmp_path_factory.mktemp("cli") / "run")
    proc = subprocess.run([sys.executable, "train.py", *train_flags(cfg), "--save-model"], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cfg, Path(cfg.out), proc


@pytest.mark.slow
def test_train_cli_learns_sst2_and_writes_its_files(cli_run):
    cfg, out, proc = cli_run
    result = json.loads((out / "result.json").read_text())
    for key in ("best_epoch", "best", "majority_f1", "diverged", "status", "lr", "seconds", "tokens_per_s", "corruption"):
        assert key in result, key
    assert result["status"] == "done" and result["diverged"] is False and result["lr"] == 3e-4
    # well above always-predicting-the-majority on held-out real sentences (~0.80 vs ~0.36 here)
    assert result["best"]["weighted_f1"] > result["majority_f1"] + 0.2
    assert result["best"]["accuracy"] > 0.7
    assert result["tokens_per_s"] > 0 and result["seconds"] > 0
    config = json.loads((out / "config.json").read_text())
    assert config["args"]["limit"] == 300 and config["args"]["seed"] == 0 and config["precision"] == "fp32"
    assert config["device"] == "cpu" and config["versions"]["torch"] == torch.__version__
    assert config["num_train"] == 300 and config["num_test"] == 300
    epochs = read_jsonl(out / "metrics.jsonl")
    assert [e["epoch"] for e in epochs] == [1]
    assert {k: epochs[0][k] for k in result["best"]} == result["best"]
    assert json.loads((out / "corruption.json").read_text())["layers"] == []
    assert not (out / "checkpoint.pt").exists()  # deleted once the run is done
    assert {"config.json", "model.safetensors", "vocab.txt"} <= {p.name for p in (out / "model").iterdir()}
    assert not list(out.rglob("*.tmp"))
    assert '"best_epoch": 1' in proc.stdout.splitlines()[-1]


@pytest.mark.slow
def test_eval_reproduces_the_runs_best_epoch(cli_run):
    cfg, out, _ = cli_run
    proc = subprocess.run([sys.executable, "eval.py", str(out), "--json"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    *table, last = proc.stdout.strip().splitlines()
    got = json.loads(last)
    best = json.loads((out / "result.json").read_text())["best"]
    assert {k: got[k] for k in best} == best  # to the last digit: same model, data, batches and precision
    assert got["n"] == 300 and "<- predicted" in table[2] and table[-1].split()[0] == "positive"


@pytest.mark.slow
def test_saved_model_loads_in_transformers(cli_run, data_root):
    """This run pools by mean: transformers' AutoModel loads its encoder exactly, and
    AutoModelForSequenceClassification (which pools [CLS]) reports the head missing instead of using it (issue 14)."""
    transformers = pytest.importorskip("transformers")
    _, out, _ = cli_run
    hf, info = transformers.AutoModelForSequenceClassification.from_pretrained(out / "model", output_loading_info=True)
    assert {"classifier.weight", "classifier.bias"} <= set(info["missing_keys"])
    ours = load_classifier(out / "model")
    assert ours.label_names == ["negative", "positive"] == [hf.config.id2label[i] for i in range(2)]
    encoder = transformers.AutoModel.from_pretrained(out / "model").eval()
    from minibert import load_tokenizer
    batch = load_tokenizer(out / "model")(["a gorgeous , witty , seductive movie .", "it 's a mess"])
    with torch.no_grad():
        theirs = encoder(**batch).last_hidden_state
        mine = ours.encoder(**batch).last_hidden_state
    assert (theirs - mine).abs().max() < 1e-5


# ---- probe, corruption, resume, precision, NaN: through the Python entry point ----------------------

def test_probe_freezes_the_corrupted_encoder_and_trains_the_head(minilm_dir, data_root, tmp_path):
    cfg = small(minilm_dir, data_root, tmp_path / "probe", mode="probe", corrupt="top:0.5", limit=64,
                max_length=32, epochs=3, lr=1e-2, batch_size=16, save_model=True)
    result = train(cfg)
    assert result["status"] == "done"
    # top:0.5 of a 6-layer encoder is layers 4-6, corrupted before training, and the report says so
    report = json.loads((tmp_path / "probe" / "corruption.json").read_text())
    assert report["layers"] == [4, 5, 6] == result["corruption"]["layers"]
    assert {p["name"].split(".")[1] for p in report["params"]} == {"3", "4", "5"}
    # the saved encoder is bit for bit the pre-trained one corrupted with the same spec and seed
    expected = load_pretrained(minilm_dir)
    pretrained = {k: v.clone() for k, v in expected.state_dict().items()}
    corrupt(expected, "top:0.5", seed=0)
    saved = load_classifier(tmp_path / "probe" / "model").encoder.state_dict()
    for name, tensor in expected.state_dict().items():
        assert torch.equal(saved[name], tensor), name
        assert torch.equal(tensor, pretrained[name]) == (not name.startswith(("layers.3", "layers.4", "layers.5"))), name
    # the head learned: the training loss falls epoch after epoch
    losses = [e["train_loss"] for e in read_jsonl(tmp_path / "probe" / "metrics.jsonl")]
    assert len(losses) == 3 and losses[0] > losses[1] > losses[2]


def test_resume_after_a_stop_matches_an_uninterrupted_run(tiny_dir, data_root, tmp_path):
    args = dict(limit=48, epochs=2)
    whole = train(small(tiny_dir, data_root, tmp_path / "whole", **args))
    cfg = small(tiny_dir, data_root, tmp_path / "split", **args)
    stopped = train(TrainConfig(**{**cfg.__dict__, "stop_after_epoch": 1}))
    assert stopped["status"] == "stopped"
    assert (tmp_path / "split" / "checkpoint.pt").is_file() and not (tmp_path / "split" / "result.json").exists()
    assert len(read_jsonl(tmp_path / "split" / "metrics.jsonl")) == 1
    with pytest.raises(ValueError, match="--resume"):
        train(cfg)  # an unfinished run is not silently restarted or overwritten
    resumed = train(TrainConfig(**{**cfg.__dict__, "resume": True}))
    strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMING} for r in rows]  # noqa: E731
    assert strip(read_jsonl(tmp_path / "split" / "metrics.jsonl")) == strip(read_jsonl(tmp_path / "whole" / "metrics.jsonl"))
    assert resumed["best"] == whole["best"] and resumed["best_epoch"] == whole["best_epoch"]
    assert not (tmp_path / "split" / "checkpoint.pt").exists()
    assert train(cfg) == resumed  # a finished run is reported, not rerun


def test_fp32_and_bf16_autocast_both_run_on_cpu(tiny_dir, data_root, tmp_path):
    losses = {}
    for precision in ("fp32", "bf16"):
        result = train(small(tiny_dir, data_root, tmp_path / precision, limit=32, precision=precision))
        assert result["status"] == "done"
        assert json.loads((tmp_path / precision / "config.json").read_text())["precision"] == precision
        epoch = read_jsonl(tmp_path / precision / "metrics.jsonl")[0]
        assert epoch["train_loss"] is not None and 0 < epoch["loss"] < 5
        losses[precision] = epoch["loss"]
    # bf16 really computes in bf16: close to fp32, not equal to it
    assert losses["fp32"] != losses["bf16"] and abs(losses["fp32"] - losses["bf16"]) < 0.1


def test_nan_loss_gives_a_diverged_result_not_a_traceback(tiny_dir, data_root, tmp_path, capsys):
    # a checkpoint with one NaN in the last LayerNorm: every output, hence the loss, is NaN
    enc = load_pretrained(tiny_dir)
    with torch.no_grad():
        enc.layers[-1].ffn_norm.weight[0] = float("nan")
    broken = tmp_path / "broken"
    save_pretrained(enc, broken)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(tiny_dir / name, broken / name)
    cfg = small(broken, data_root, tmp_path / "run", limit=32)
    assert TRAIN.main(train_flags(cfg)) == 0  # train.py's main, in this process
    err = capsys.readouterr().err
    assert "Traceback" not in err and "non-finite training loss" in err, err[-3000:]
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "done" and result["diverged"] is True
    assert "non-finite" in result["diverged_reason"]
    assert read_jsonl(tmp_path / "run" / "metrics.jsonl")[0]["nonfinite_loss"] is True


def test_lr_sweep_runs_the_papers_three_lrs_and_resumes(tiny_dir, data_root, tmp_path, monkeypatch):
    cfg = small(tiny_dir, data_root, tmp_path / "sweep", lr="sweep", limit=16, epochs=2)
    monkeypatch.setenv("MINIBERT_STOP_AFTER_EPOCH", "1")
    assert train(cfg)["status"] == "stopped"  # stopped inside the first sub-run
    monkeypatch.delenv("MINIBERT_STOP_AFTER_EPOCH")
    result = train(TrainConfig(**{**cfg.__dict__, "resume": True}))
    assert set(result["sweep"]) == {"1e-05", "2e-05", "5e-05"}
    best = max(result["sweep"].values(), key=lambda r: (not r["diverged"], r["weighted_f1"]))
    assert result["best"]["weighted_f1"] == best["weighted_f1"]
    assert result["run_dir"] == f"lr_{result['lr']:g}"
    for lr in ("1e-05", "2e-05", "5e-05"):
        sub = json.loads((tmp_path / "sweep" / f"lr_{lr}" / "result.json").read_text())
        assert sub["status"] == "done" and len(read_jsonl(tmp_path / "sweep" / f"lr_{lr}" / "metrics.jsonl")) == 2
    assert json.loads((tmp_path / "sweep" / "result.json").read_text()) == result


@pytest.mark.slow
def test_torchrun_two_processes_gather_every_test_example(minilm_dir, data_root, tmp_path):
    """DDP on the CPU (gloo): each rank evaluates half of the test batches; rank 0's metrics cover all of them."""
    cfg = small(minilm_dir, data_root, tmp_path / "ddp", limit=32)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "train.py",
                           *train_flags(cfg), "--save-model"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count('"best_epoch"') == 1  # only rank 0 reports
    result = json.loads((tmp_path / "ddp" / "result.json").read_text())
    config = json.loads((tmp_path / "ddp" / "config.json").read_text())
    assert result["status"] == "done" and config["world_size"] == 2
    from minibert import load_tokenizer
    from minibert.data.datasets import load_dataset
    from minibert.data.encoding import encode
    from minibert.training.evaluation import evaluate, extract
    clf, tok = load_classifier(tmp_path / "ddp" / "model"), load_tokenizer(tmp_path / "ddp" / "model")
    test = load_dataset("sst2", cfg.data_dir, limit=32).test
    one = evaluate(clf, *extract(clf, encode(test, tok, 64), 16, torch.device("cpu"), "fp32", tok.pad_id))
    assert {k: one[k] for k in ("weighted_f1", "macro_f1", "accuracy")} == {k: result["best"][k] for k in
                                                                           ("weighted_f1", "macro_f1", "accuracy")}
    assert one["loss"] == pytest.approx(result["best"]["loss"], abs=1e-6)


# ---- bad input: one line on stderr, exit status 2 ---------------------------------------------------

TRAIN = load_script("train.py")


def run_train_cli(argv, capsys):
    try:
        rc = TRAIN.main(argv)
    except SystemExit as e:  # argparse's own errors
        rc = e.code
    return rc, capsys.readouterr().err.strip()


@pytest.mark.parametrize("bad, message", [
    (["--model", "/nonexistent/checkpoint"], "not found"),
    (["--corrupt", "middle:0.5"], "bad corruption spec"),
    (["--dataset", "nope"], "invalid choice"),
    (["--lr", "fast"], "--lr must be a number"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--until-converged", "--epochs", "6"], "with --epochs 6 it would change nothing; give --epochs 7 or more"),
])
def test_bad_input_is_one_line(bad, message, minilm_dir, data_root, tmp_path, capsys):
    cfg = small(minilm_dir, data_root, tmp_path / "run", limit=16)
    rc, err = run_train_cli([*train_flags(cfg), *bad], capsys)
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("error:") and message in err, err
    assert not (tmp_path / "run").exists()


def test_out_dir_of_another_run_is_refused(tiny_runs, tiny_dir, data_root, tmp_path, capsys):
    cfg = tiny_run_config(tiny_runs[0], tiny_dir, data_root)  # the finished clean run
    rc, err = run_train_cli([*train_flags(cfg), "--seed", "1"], capsys)
    assert rc == 2 and len(err.splitlines()) == 1 and "holds a different run" in err and "seed" in err, err
    (tmp_path / "notes.txt").write_text("not a run")
    rc, err = run_train_cli([*train_flags(TrainConfig(**{**cfg.__dict__, "out": str(tmp_path)}))], capsys)
    assert rc == 2 and len(err.splitlines()) == 1 and "holds no minibert run" in err, err


def test_help_explains_every_flag_with_the_papers_defaults(capsys):
    with pytest.raises(SystemExit) as exit_:
        TRAIN.main(["--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    parser_flags = ["--model", "--dataset", "--data-dir", "--split", "--corrupt", "--seed", "--pooling", "--mode", "--lr",
                    "--epochs", "--batch-size", "--max-length", "--precision", "--compile", "--out", "--save-model",
                    "--device", "--limit", "--resume"]
    for flag in parser_flags:
        assert f"{flag} " in text, flag
    for default in ("(default: sst2)", "(default: sweep)", "(default: 10)", "(default: 32)", "(default: base)"):
        assert default in text, default
    assert "../shared/data/sst2" in text and "1e-05, 2e-05, 5e-05" in text


def test_until_converged_stops_at_the_first_converged_epoch_from_the_sixth(tiny_dir, data_root, tmp_path, capsys):
    # an lr of 1e-9 learns nothing: the validation metric and the train loss are flat from the first epoch, so the
    # flag would call the run converged after 2 epochs; the stop waits for the flag's full window (3 against 3)
    cfg = small(tiny_dir, data_root, tmp_path / "run", limit=60, lr=1e-9, epochs=10, select_on="val",
                until_converged=True)
    result = train(cfg)
    assert result["status"] == "done" and result["epochs_run"] == 6
    assert result["convergence"]["still_improving"] is False and result["convergence"]["window"] == 3
    assert len(read_jsonl(tmp_path / "run" / "metrics.jsonl")) == 6
    assert not (tmp_path / "run" / "checkpoint.pt").exists()  # finished: nothing to resume
    assert "stopped after epoch 6 of at most 10: no longer improving (--until-converged)" in capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "config.json").read_text())["args"]["until_converged"] is True
    assert train(cfg) == result  # a finished run is reported, not rerun
    with pytest.raises(ValueError, match="until_converged"):  # what a run computes: another value is another run
        train(TrainConfig(**{**cfg.__dict__, "until_converged": False, "resume": True}))
