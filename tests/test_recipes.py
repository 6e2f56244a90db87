"""Recipes, probe heads, model selection, the collapse flag, and bad run folders: issue 12 and 14's trainer parts.

Unit tests check what each recipe builds (optimiser, schedule, clipping); the rest runs the real trainer
and train.py's main on real SST-2 sentences, kept tiny: on the MiniLM checkpoint where what a run learns matters,
on a tiny random BERT (tiny_dir) where only the mechanics do.
"""
import json
import shutil
from dataclasses import fields, replace
from pathlib import Path

import pytest
import torch
from helpers import load_script, tiny_checkpoint, tiny_config

from minibert import load_classifier, load_pretrained, save_pretrained
from minibert.heads import SequenceClassifier
from minibert.tools.train import parse_args
from minibert.training import rundir
from minibert.training.config import NO_FLAG, TrainConfig, train_flags, validate
from minibert.training.evaluation import extract
from minibert.training.optim import RECIPES, make_optimizer
from minibert.training.trainer import train

REPO = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")


small = tiny_config  # 64 real SST-2 sentences of max length 32, one epoch at lr 3e-4


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


TRAIN = load_script("train.py")


def run_cli(argv, capsys):
    try:
        rc = TRAIN.main(argv)
    except SystemExit as e:  # argparse's own errors
        rc = e.code
    return rc, capsys.readouterr().err.strip()


def assert_one_line(rc, err, *fragments):
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
    for f in fragments:
        assert f in err, (f, err)


# ---- recipes, unit level ------------------------------------------------------------------------

def tiny_classifier():
    torch.manual_seed(0)
    from minibert import Bert, BertConfig
    enc = Bert(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32))
    return SequenceClassifier(enc, 2, "cls")


def lrs(scheduler, optimizer, steps):
    out = []
    for _ in range(steps):
        out.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return out


@pytest.mark.parametrize("recipe, kind, decay, warmup_steps, clip", [
    ("paper", torch.optim.Adam, 0.0, 0, None),
    ("hf-trainer", torch.optim.AdamW, 0.0, 0, 1.0),
    ("bert", torch.optim.AdamW, 0.01, 1, 1.0),
])
def test_each_recipe_builds_its_optimiser_schedule_and_clipping(recipe, kind, decay, warmup_steps, clip):
    clf = tiny_classifier()
    params, optimizer, scheduler, got_clip = make_optimizer(TrainConfig(recipe=recipe, lr=1e-3), clf, 10, CPU)
    assert type(optimizer) is kind and got_clip == clip
    matrices, vectors = optimizer.param_groups
    assert matrices["weight_decay"] == decay and vectors["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in matrices["params"]) and all(p.dim() < 2 for p in vectors["params"])
    assert optimizer.defaults["betas"] == (0.9, 0.999) and optimizer.defaults["eps"] == 1e-8
    got = lrs(scheduler, optimizer, 10)
    if recipe == "paper":
        assert got == [1e-3] * 10  # constant
    elif recipe == "hf-trainer":  # no warmup, linear to 0 at step 10
        assert got == pytest.approx([1e-3 * (10 - s) / 10 for s in range(10)])
    else:  # 10% of 10 steps = 1 warmup step from 0, then linear to 0
        assert got == pytest.approx([0.0] + [1e-3 * (10 - s) / 9 for s in range(1, 10)])


def test_individual_flags_override_the_recipe():
    clf = tiny_classifier()
    cfg = TrainConfig(recipe="paper", lr=1e-3, weight_decay=0.1, warmup=0.5, grad_clip=2.0)
    _, optimizer, scheduler, clip = make_optimizer(cfg, clf, 4, CPU)
    assert type(optimizer) is torch.optim.Adam and optimizer.param_groups[0]["weight_decay"] == 0.1 and clip == 2.0
    assert lrs(scheduler, optimizer, 4) == pytest.approx([0.0, 5e-4, 1e-3, 1e-3])  # warmup, then constant
    _, _, _, clip = make_optimizer(TrainConfig(recipe="bert", lr=1e-3, grad_clip=0.0), clf, 4, CPU)
    assert clip is None  # 0 turns clipping off


def test_train_flags_round_trip_through_the_parser(tmp_path):
    cfg = TrainConfig(model="distil", corrupt="top:0.5", lr=2e-5, recipe="bert", select_on="val", grad_clip=0.5,
                      save_model=True, resume=True, out=str(tmp_path / "x"), limit=10)
    flags = train_flags(cfg)
    assert "--dataset" not in flags and "--save-model" in flags and flags[flags.index("--recipe") + 1] == "bert"
    again = parse_args(flags)
    assert again == TrainConfig(**{**cfg.__dict__, "lr": "2e-05"})  # argparse keeps --lr as the text given
    assert train_flags(TrainConfig()) == []


def test_every_field_is_a_flag_with_its_default_and_choices():
    assert parse_args([]) == TrainConfig()  # the flags' defaults are the fields'
    for f in fields(TrainConfig):
        if f.name in NO_FLAG:
            continue
        flag = "--" + f.name.replace("_", "-")
        if "choices" in f.metadata:  # argparse and validate() refuse the same values
            with pytest.raises(SystemExit):
                parse_args([flag, "nope"])
            with pytest.raises(ValueError, match=f"{flag} must be one of"):
                validate(replace(TrainConfig(), **{f.name: "nope"}))
        elif f.type is int:
            assert getattr(parse_args([flag, "7"]), f.name) == 7


def test_help_calls_only_the_papers_own_settings_the_papers(capsys):
    with pytest.raises(SystemExit):
        TRAIN.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: hf-trainer)" in text and "(default: test)" in text
    for phrase in ("the paper's protocol", "(defaults: the paper"):
        assert phrase not in text
    assert "the paper's lrs" in text and "transformers 4.41.1" in text


# ---- recipes end to end -------------------------------------------------------------------------

@pytest.mark.parametrize("recipe", ["paper", "hf-trainer"])
def test_train_py_runs_each_recipe_end_to_end(recipe, tiny_dir, data_root, tmp_path, capsys):
    cfg = small(tiny_dir, data_root, tmp_path / recipe, epochs=2, recipe=recipe)
    assert TRAIN.main(train_flags(cfg)) == 0, capsys.readouterr().err[-3000:]  # train.py's main, in this process
    result = json.loads((tmp_path / recipe / "result.json").read_text())
    config = json.loads((tmp_path / recipe / "config.json").read_text())
    assert result["status"] == "done" and result["recipe"] == recipe == config["args"]["recipe"]
    assert config["recipe"] == result["recipe_settings"] == RECIPES[recipe].__dict__
    assert result["num_train"] == 64 and result["num_test"] == 64 and result["select_on"] == "test"
    last_lr = [e["lr"] for e in read_jsonl(tmp_path / recipe / "metrics.jsonl")]
    assert last_lr == ([3e-4, 3e-4] if recipe == "paper" else [pytest.approx(1.5e-4), 0.0])  # constant | to 0


# ---- probe heads --------------------------------------------------------------------------------

def test_distilbert_probe_trains_the_whole_head_and_not_the_encoder(minilm_dir, data_root, tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "distil", minilm_dir, flavour="distilbert")
    cfg = small(ckpt, data_root, tmp_path / "run", mode="probe", pooling="cls", lr=1e-2, epochs=2, save_model=True)
    assert train(cfg)["status"] == "done"
    torch.manual_seed(0)  # the head as the run drew it: same seed, same order
    initial = SequenceClassifier(load_pretrained(ckpt), 2, "cls")
    saved = load_classifier(tmp_path / "run" / "model")
    for layer in ("pre_classifier", "classifier"):
        for name in ("weight", "bias"):
            before, after = getattr(getattr(initial, layer), name), getattr(getattr(saved, layer), name)
            assert not torch.equal(before, after), f"{layer}.{name} did not train"
    for name, tensor in load_pretrained(ckpt).state_dict().items():
        assert torch.equal(saved.encoder.state_dict()[name], tensor), name


def test_bert_probe_keeps_the_pretrained_pooler_frozen(minilm_dir, data_root, tmp_path):
    cfg = small(minilm_dir, data_root, tmp_path / "run", mode="probe", pooling="cls", lr=1e-2, save_model=True)
    assert train(cfg)["status"] == "done"
    saved = load_classifier(tmp_path / "run" / "model")
    pretrained = load_pretrained(minilm_dir)
    assert torch.equal(saved.encoder.pooler.dense.weight, pretrained.pooler.dense.weight)
    assert saved.pre_classifier is None


# ---- model selection and the collapse flag ------------------------------------------------------

def test_select_on_val_holds_out_a_stratified_tenth_and_chooses_there(minilm_dir, data_root, tmp_path):
    cfg = small(minilm_dir, data_root, tmp_path / "run", mode="probe", limit=100, epochs=4, lr=1e-2, select_on="val")
    result = train(cfg)
    assert result["select_on"] == "val" and result["num_val"] == 10 and result["num_train"] == 90
    assert result["num_test"] == 100
    epochs = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert all("val_weighted_f1" in e for e in epochs)
    best = max(epochs, key=lambda e: e["val_weighted_f1"])
    assert result["best_epoch"] == best["epoch"] and result["selection_score"] == best["val_weighted_f1"]
    assert result["best"]["weighted_f1"] == best["weighted_f1"]  # the test score at the val's choice


def test_a_run_that_predicts_one_class_is_flagged_collapsed(minilm_dir, data_root, tmp_path):
    # the last LayerNorm outputs its bias whatever the input: every example gets the same features
    enc = load_pretrained(minilm_dir)
    with torch.no_grad():
        enc.layers[-1].ffn_norm.weight.zero_()
    constant = tmp_path / "constant"
    save_pretrained(enc, constant)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(minilm_dir / name, constant / name)
    result = train(small(constant, data_root, tmp_path / "run", mode="probe", lr=1e-2, epochs=2))
    assert result["collapsed"] is True and result["top_class_fraction"] == 1.0
    assert result["majority_accuracy"] == result["majority"]["accuracy"]
    assert all(e["top_class_fraction"] == 1.0 for e in read_jsonl(tmp_path / "run" / "metrics.jsonl"))
    healthy = train(small(minilm_dir, data_root, tmp_path / "ok", mode="probe", lr=1e-2, epochs=2))
    assert healthy["collapsed"] is False and healthy["top_class_fraction"] < 0.95


# ---- bad run folders, checkpoints and precisions: one line, exit 2 ------------------------------

@pytest.mark.parametrize("where", ["file", "under a file", "unwritable"])
def test_bad_out_is_one_line_before_the_data_is_loaded(where, minilm_dir, data_root, tmp_path, capsys):
    (tmp_path / "a_file").write_text("not a folder")
    out = {"file": tmp_path / "a_file", "under a file": tmp_path / "a_file" / "run",
           "unwritable": Path("/proc/minibert-run")}[where]  # /proc refuses new files even to root
    cfg = small(minilm_dir, data_root, out, data_dir=str(tmp_path / "no-such-data"))  # loading would fail
    rc, err = run_cli(train_flags(cfg), capsys)
    assert_one_line(rc, err, "--out", str(out))
    assert "no-such-data" not in err  # refused before the data was looked at
    assert (tmp_path / "a_file").read_text() == "not a folder" and not Path("/proc/minibert-run").exists()


@pytest.fixture(scope="module")
def stopped_run(tiny_dir, data_root, tmp_path_factory) -> TrainConfig:
    """A run stopped after its first epoch of two, as if killed: its checkpoint.pt waits for --resume."""
    cfg = small(tiny_dir, data_root, tmp_path_factory.mktemp("stopped") / "run", limit=16, epochs=2,
                stop_after_epoch=1)
    assert train(cfg)["status"] == "stopped"
    return cfg


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: b"garbage" * 10, lambda b: b""],
                         ids=["truncated", "garbage", "empty"])
def test_damaged_checkpoint_on_resume_is_one_line_saying_how_to_restart(damage, stopped_run, tmp_path, capsys):
    shutil.copytree(stopped_run.out, tmp_path / "run")
    cfg = TrainConfig(**{**stopped_run.__dict__, "out": str(tmp_path / "run")})
    ckpt = tmp_path / "run" / "checkpoint.pt"
    ckpt.write_bytes(damage(ckpt.read_bytes()))
    rc, err = run_cli([*train_flags(TrainConfig(**{**cfg.__dict__, "stop_after_epoch": None})), "--resume"], capsys)
    assert_one_line(rc, err, str(ckpt), "damaged", "delete it")
    assert "weights_only" not in err
    assert not (tmp_path / "run" / "result.json").exists() and not list((tmp_path / "run").glob("*.tmp"))


def test_fp16_on_a_cpu_is_refused_in_one_line(minilm_dir, data_root, tmp_path, capsys):
    cfg = small(minilm_dir, data_root, tmp_path / "run", precision="fp16")
    rc, err = run_cli(train_flags(cfg), capsys)
    assert_one_line(rc, err, "--precision fp16", "CPU")
    assert not (tmp_path / "run").exists()


def test_a_damaged_result_is_named_and_the_run_counts_as_unfinished(tmp_path, capsys):
    (tmp_path / "result.json").write_text('{"status": "do')
    assert rundir.read_result(tmp_path) is None and rundir.status(tmp_path) == "partial"
    assert str(tmp_path / "result.json") in capsys.readouterr().err


def test_extracting_features_shows_a_progress_bar(minilm_dir, monkeypatch):
    import minibert.training.evaluation as evaluation
    bars = []

    class Recording(evaluation.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append(kwargs)
            self.updates = 0

        def update(self, n=1):
            bars[-1]["updates"] = bars[-1].get("updates", 0) + n
            return super().update(n)
    monkeypatch.setattr(evaluation, "tqdm", Recording)
    from minibert import load_tokenizer
    from minibert.data.encoding import Split, encode
    tok = load_tokenizer(minilm_dir)
    enc = encode(Split(["a fine film", "a dull one", "so so"], None, [1, 0, 0]), tok, 16)
    clf = SequenceClassifier(load_pretrained(minilm_dir), 2, "mean")
    feats, _ = extract(clf, enc, 2, CPU, "fp32", tok.pad_id, desc="test")
    assert feats.shape == (3, 384)
    # one bar, shown whenever stderr is a terminal (disable=None), advanced once per batch
    assert [(b["desc"], b["total"], b["disable"], b["updates"]) for b in bars] == [("test", 2, None, 2)]
