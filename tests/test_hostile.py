"""What a hostile user types, through the real entry points: train.py, eval.py, the grid and trace.

Every bad input is one line on stderr that names the flag or the file and the fix, exit 2, found before any
expensive work; a meaningful input gets the right behaviour and a one-line note. CASES is the list: a new
hostile input is one more row (entry point, flags, a fragment of the expected line, exit status). The tests
below it cover what needs a run folder, Ctrl-C and the one-process-per-run-folder lock.

Runs use a tiny random BERT (helpers.tiny_checkpoint, 64 positions) on 16 real AG News examples: a second each.
"""
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import TOKENIZER_FILES, tiny_checkpoint, write_cell

from minibert.locks import claim, holder
from minibert.study import grid
from minibert.study.cells import GridConfig, cells, write_manifest
from minibert.tools import download, parity, trace
from minibert.tools import eval as eval_command
from minibert.training import rundir

REPO = Path(__file__).resolve().parent.parent


def load_script(name):
    spec = importlib.util.spec_from_file_location(f"{name}_script", REPO / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TRAIN, EVAL = load_script("train"), load_script("eval")
MAINS = {"train": TRAIN.main, "eval": EVAL.main, "grid": grid.main, "trace": trace.main, "parity": parity.main,
         "download": download.main,
         **{f"grid {command}": (lambda c: lambda argv: grid.main([c, *argv]))(command)
            for command in ("report", "tsne", "compare")}}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, minilm_dir) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "bert", minilm_dir, positions=64)


def train_argv(tiny, data_root, out, *extra) -> list[str]:
    return ["--model", str(tiny), "--dataset", "ag_news", "--data-dir", str(data_root / "ag_news"), "--limit", "16",
            "--epochs", "1", "--max-length", "16", "--batch-size", "8", "--lr", "1e-3", "--device", "cpu",
            "--out", str(out), *extra]


@pytest.fixture(scope="module")
def saved_run(tiny, data_root, tmp_path_factory) -> Path:
    """A finished run with its model saved."""
    out = tmp_path_factory.mktemp("saved") / "run"
    assert TRAIN.main(train_argv(tiny, data_root, out, "--save-model")) == 0
    return out


@pytest.fixture(scope="module")
def plain_run(tiny, data_root, tmp_path_factory) -> Path:
    """A finished run that saved no model."""
    out = tmp_path_factory.mktemp("plain") / "run"
    assert TRAIN.main(train_argv(tiny, data_root, out)) == 0
    return out


def synthetic_grid(out: Path, table: str = "table2") -> Path:
    """A grid folder of hand-written finished cells (helpers.write_cell): base on SST-2, 0% and 100%, seed 0."""
    cfg = GridConfig(table, out, {"base": "base"}, ("sst2",), (0, 100), (0,), None)
    write_manifest(cfg, cells(cfg))
    for i, cell in enumerate(cells(cfg)):
        write_cell(out / cell.name, [0.6 + 0.1 * i, 0.7 + 0.1 * i], [0.5, 0.4])
    return out


def run_main(entry: str, argv, capsys) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of an entry point's main(argv), argparse's own exits included."""
    try:
        rc = MAINS[entry](list(map(str, argv)))
    except SystemExit as e:
        rc = e.code
    except KeyboardInterrupt:  # escaped main: caught here, or pytest would take it for the user's and stop
        rc = "KeyboardInterrupt escaped"
    out, err = capsys.readouterr()
    return rc, out, err.strip()


# another process holding a lock (as jobs.py's tests do), until it is killed
HOLD = ("import sys, time; from pathlib import Path; from minibert.locks import claim; l = claim(Path(sys.argv[1])); "
        "print('held' if l else 'busy', flush=True); time.sleep(60)")


def wait_for(condition, proc, within: float = 120):
    """Poll `condition` while `proc` runs; fails if the process ends first or it takes too long."""
    deadline = time.time() + within
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def assert_one_line(err: str, *fragments):
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


# ---- the table ---------------------------------------------------------------------------------------------
# Flags may name {tiny} (the tiny checkpoint), {run} (a finished run with a saved model), {data} (the real
# samples), {file} (a plain file), {out} (an empty folder), {sst2_test_only} and {mrpc_train_only} (data folders
# that lack splits). A train row's flags follow a working tiny run's, a grid row's a working tiny grid's; neither
# may leave a run folder or start a cell.

CASES = [
    # (id, entry point, flags, fragment of the one line, exit status)
    ("sst2 test file only, paper split", "train", ["--dataset", "sst2", "--data-dir", "{sst2_test_only}"],
     "has no labelled split (GLUE hides the test labels); --split paper needs a labelled train or validation file", 2),
    ("sst2 test file only, official split", "train",
     ["--dataset", "sst2", "--data-dir", "{sst2_test_only}", "--split", "official"],
     "--split official needs train and validation files", 2),
    ("mrpc without validation", "train", ["--dataset", "mrpc", "--data-dir", "{mrpc_train_only}"],
     "has only train (GLUE hides the test labels); mrpc always uses its official splits and needs train and "
     "validation files", 2),
    ("negative seed", "train", ["--seed", "-1"], "--seed must be from 0 to 4294967295, got -1", 2),
    ("huge seed", "train", ["--seed", str(10**20)], f"--seed must be from 0 to 4294967295, got {10**20}", 2),
    ("cache dir is a file", "train", ["--cache-dir", "{file}"], "--cache-dir {file} is a file, not a folder", 2),
    ("pooler twice", "train", ["--corrupt", "top:0.5+pooler+pooler"], "+pooler is given 2 times; give it once", 2),
    ("unknown addition", "train", ["--corrupt", "top:0.5+heads"], "unknown addition '+heads'", 2),
    ("eval max length 0", "eval", ["{run}", "--max-length", "0"], "--max-length must be at least 2, got 0", 2),
    ("eval max length 1", "eval", ["{run}", "--max-length", "1"], "--max-length must be at least 2, got 1", 2),
    ("eval batch size 0", "eval", ["{run}", "--batch-size", "0"], "--batch-size must be at least 1, got 0", 2),
    ("eval negative seed", "eval", ["{run}", "--seed", "-3"], "--seed must be from 0 to 4294967295, got -3", 2),
    ("eval limit 0", "eval", ["{run}", "--limit", "0"], "--limit must be at least 1, got 0", 2),
    ("trace pad past the positions", "trace", ["{tiny}", "--pad-to", "513"],
     "--pad-to 513 is longer than the model's 64 positions; use at most 64", 2),
    ("trace figures is a file", "trace", ["{tiny}", "--figures", "{file}"], "--figures {file} is a file", 2),
    ("trace png is a folder", "trace", ["{tiny}", "--png", "{out}"], "is a folder; give a file name", 2),
    ("grid limit 0", "grid", ["--limit", "0"], "--limit must be at least 1, got 0", 2),
    ("grid epochs 0", "grid", ["--epochs", "0"], "--epochs must be at least 1, got 0", 2),
    ("grid out is a file", "grid", ["--out", "{file}"], "--out {file} is a file, not a folder", 2),
    # issue 33
    ("parity on a run that saved no model", "parity", ["{plain_run}"],
     "{plain_run} is a run folder with no saved model; parity compares a saved model: train the run with "
     "--save-model, then run python -m minibert parity {plain_run}/model", 2),
    ("eval id2label shorter than the head", "eval", ["{short_labels}"],
     "{short_labels}/config.json: id2label names 1 labels but the head has 4 rows", 2),
    ("eval another dataset from the run's data folder", "eval", ["{run}", "--dataset", "rte"],
     "--dataset rte: {run} was trained on ag_news, and its --data-dir {data}/ag_news holds ag_news's files; give "
     "--data-dir with rte's files", 2),
    ("eval tsne is a folder", "eval", ["{run}", "--tsne", "{out}"],
     "--tsne {out} is a folder; give a file name such as {out}/tsne.png", 2),
    ("grid report of another grid's grid.json", "grid report", ["{foreign_grid}", "--no-healing"],
     "{foreign_grid}/grid.json lists none of the 2 runs in {foreign_grid} (table2-base-sst2-0-s0, "
     "table2-base-sst2-100-s0): it belongs to another grid; rerun the grid command that made them", 2),
    ("grid tsne n 0", "grid tsne", ["{grid}", "--n", "0"], "--n must be at least 2 (t-SNE needs 2 test examples), got 0",
     2),
    ("grid tsne n negative", "grid tsne", ["{grid}", "--n", "-5"],
     "--n must be at least 2 (t-SNE needs 2 test examples), got -5", 2),
    ("grid tsne png is a folder", "grid tsne", ["{grid}", "--png", "{out}"], "--png {out} is a folder", 2),
    ("grid report healing n 0", "grid report", ["{grid}", "--healing-n", "0"],
     "--healing-n must be at least 4 (CKA needs 4 test examples), got 0", 2),
    ("grid compare md where nothing can be written", "grid compare", ["{grid}", "{grid}", "--md", "/proc/compare.md"],
     "--md /proc/compare.md: cannot write in /proc", 2),
    ("grid compare md is a folder", "grid compare", ["{grid}", "{grid}", "--md", "{out}"],
     "--md {out} is a folder; give a file name such as {out}/compare.md", 2),
    ("download dir is a file", "download", ["base", "--dir", "{file}"],
     "--dir {file} is a file, not a folder; pick another --dir", 2),
    ("download list of a dir that is a file", "download", ["--list", "--dir", "{file}"],
     "--dir {file} is a file, not a folder; pick another --dir", 2),
]


@pytest.fixture
def places(tmp_path, tiny, data_root, saved_run, plain_run) -> dict:
    (tmp_path / "sst2").mkdir()
    shutil.copyfile(data_root / "sst2" / "validation.tsv", tmp_path / "sst2" / "test.tsv")  # GLUE: never read
    (tmp_path / "mrpc").mkdir()
    shutil.copyfile(data_root / "mrpc" / "train.tsv", tmp_path / "mrpc" / "train.tsv")
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "out").mkdir()
    short = shutil.copytree(saved_run / "model", tmp_path / "short_labels")  # a 4-label head, its config edited
    config = json.loads((short / "config.json").read_text())
    (short / "config.json").write_text(json.dumps({**config, "id2label": {"0": "World"}}))
    foreign = synthetic_grid(tmp_path / "foreign")  # a table2 grid whose grid.json is another grid's (table3)
    (foreign / "grid.json").write_text((foreign / "grid.json").read_text().replace("table2", "table3"))
    return {"tiny": tiny, "run": saved_run, "data": data_root, "file": tmp_path / "a_file", "out": tmp_path / "out",
            "sst2_test_only": tmp_path / "sst2", "mrpc_train_only": tmp_path / "mrpc", "plain_run": plain_run,
            "short_labels": short, "grid": synthetic_grid(tmp_path / "synthetic"), "foreign_grid": foreign}


@pytest.mark.parametrize("entry, flags, fragment, code", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_input(entry, flags, fragment, code, places, tmp_path, capsys):
    flags = [f.format(**places) for f in flags]
    out = tmp_path / "run"
    if entry == "train":
        flags = train_argv(places["tiny"], places["data"], out, *flags)
    if entry == "grid":
        flags = ["table2", "--quick", f"tiny={places['tiny']}", "--datasets", "ag_news", "--levels", "0,100",
                 "--data-root", str(places["data"]), "--out", str(tmp_path / "grid"), *flags]
    if entry == "eval":
        flags = [*flags, "--device", "cpu"]
    rc, _, err = run_main(entry, flags, capsys)
    assert rc == code, err
    assert_one_line(err, "error: ", fragment.format(**places))
    assert not out.exists() and not (tmp_path / "grid" / "logs").exists()  # refused before a run or a cell started


# ---- notes: meaningful inputs, done, and said -----------------------------------------------------------

def test_max_length_above_the_positions_is_clamped_with_a_note(tiny, data_root, saved_run, tmp_path, capsys):
    note = "note: --max-length 100 is more than the model's 64 positions; using 64"
    rc, _, err = run_main("train", train_argv(tiny, data_root, tmp_path / "run", "--max-length", "100"), capsys)
    assert rc == 0 and note in err.splitlines(), err
    assert json.loads((tmp_path / "run" / "config.json").read_text())["max_length"] == 64
    rc, _, err = run_main("eval", [saved_run, "--max-length", "100", "--device", "cpu"], capsys)
    assert rc == 0 and note in err.splitlines(), err


# ---- run folders: a finished run asked for its model, an unfinished one evaluated ------------------------

def eval_json(path, capsys) -> tuple[dict, str]:
    rc, out, err = run_main("eval", [path, "--json", "--device", "cpu"], capsys)
    assert rc == 0, err
    return json.loads(out.splitlines()[-1]), err


def test_save_model_on_a_finished_run_saves_it_from_a_kept_checkpoint_or_says_how(tiny, data_root, tmp_path, capsys):
    plain, kept = tmp_path / "plain", tmp_path / "kept"
    assert TRAIN.main(train_argv(tiny, data_root, plain)) == 0
    rc, _, err = run_main("train", train_argv(tiny, data_root, plain, "--save-model"), capsys)
    assert rc == 2 and not (plain / "model").exists()
    assert_one_line(err, f"error: --save-model: {plain} is finished and saved no model", "into a new --out")
    rc, _, err = run_main("eval", [plain, "--device", "cpu"], capsys)
    assert rc == 2 and "rerun its train.py command with --save-model" in err, err

    assert TRAIN.main(train_argv(tiny, data_root, kept, "--keep-checkpoint")) == 0  # best epoch = last epoch
    rc, out, err = run_main("train", train_argv(tiny, data_root, kept, "--save-model"), capsys)
    assert rc == 0 and f"saved its best epoch (1) from {kept / 'checkpoint.pt'} -> {kept / 'model'}" in out, out + err
    result = json.loads((kept / "result.json").read_text())
    assert result["model_dir"] == str(kept / "model")
    scores, _ = eval_json(kept, capsys)  # the saved model is the best epoch: eval gives the run's numbers
    assert scores["finished"] is True and scores["loss"] == pytest.approx(result["best"]["loss"], rel=1e-6)


def test_eval_on_an_unfinished_run_says_so_loudly(tiny, data_root, saved_run, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    monkeypatch.setenv("MINIBERT_STOP_AFTER_EPOCH", "1")
    assert TRAIN.main(train_argv(tiny, data_root, out, "--epochs", "2", "--save-model")) == 0
    scores, err = eval_json(out, capsys)
    assert scores["finished"] is False
    assert f"note: {out} is unfinished (stopped after epoch 1): scoring its best epoch so far" in err, err
    assert eval_json(saved_run, capsys)[0]["finished"] is True
    bare = tmp_path / "bare"
    assert TRAIN.main(train_argv(tiny, data_root, bare, "--epochs", "2")) == 0
    rc, _, err = run_main("eval", [bare, "--device", "cpu"], capsys)
    assert rc == 2
    assert_one_line(err, f"error: {bare} is an unfinished run with no saved model yet; finish it with train.py --resume")


# ---- Ctrl-C --------------------------------------------------------------------------------------------------

def test_ctrl_c_in_train_names_the_epoch_to_resume_from(tiny, data_root, tmp_path, monkeypatch, capsys):
    from minibert.training import trainer

    out, evaluate, calls = tmp_path / "run", trainer.evaluate, []

    def interrupted_in_epoch_2(*args, **kwargs):  # what a Ctrl-C while epoch 2 is evaluated raises
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(trainer, "evaluate", interrupted_in_epoch_2)
    rc, _, err = run_main("train", train_argv(tiny, data_root, out, "--epochs", "2"), capsys)
    assert rc == 130
    assert_one_line(err, f"interrupted after epoch 1 of {out}; rerun with --resume")
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1
    monkeypatch.setattr(trainer, "evaluate", evaluate)
    rc, stdout, err = run_main("train", train_argv(tiny, data_root, out, "--epochs", "2", "--resume"), capsys)
    assert rc == 0 and f"resuming {out} after epoch 1" in stdout, err
    assert holder(out / "run.lock") is None  # released: the next process may take the folder


def test_ctrl_c_in_eval_is_one_line(saved_run, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(eval_command, "extract", interrupted)
    rc, _, err = run_main("eval", [saved_run, "--device", "cpu"], capsys)
    assert rc == 130 and err == "interrupted"


@pytest.mark.slow
@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_sigint_or_sigterm_to_train_py_is_one_line_and_the_checkpoint_resumes(sig, status, tiny, data_root, tmp_path,
                                                                              monkeypatch, capsys):
    """Ctrl-C (SIGINT), and SIGTERM as kill, Slurm and a job's time limit send it: the same line (issue 33, case 14)."""
    out = tmp_path / "run"
    # a background shell starts its jobs with SIGINT ignored, and Python keeps it so: give the child the default
    # disposition, as a terminal's Ctrl-C finds it, however this test suite was started
    proc = subprocess.Popen([sys.executable, "train.py", *train_argv(tiny, data_root, out, "--epochs", "1000")],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    wait_for(lambda: (out / "checkpoint.pt").is_file(), proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == status
    line = err.strip().splitlines()[-1]
    assert "Traceback" not in err and re.fullmatch(rf"interrupted after epoch (\d+) of {out}; rerun with --resume", line)
    epoch = int(re.search(r"epoch (\d+)", line)[1])
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == epoch >= 1
    monkeypatch.setenv("MINIBERT_STOP_AFTER_EPOCH", str(epoch + 1))  # one more epoch: it resumes from there
    rc, stdout, err = run_main("train", train_argv(tiny, data_root, out, "--epochs", "1000", "--resume"), capsys)
    assert rc == 0 and f"resuming {out} after epoch {epoch}" in stdout, err


def test_ctrl_c_just_after_the_checkpoint_is_renamed_names_the_epoch_it_holds(tiny, data_root, tmp_path, monkeypatch,
                                                                             capsys):
    """The race CI met: the signal lands after checkpoint.pt's rename and before anything else; the line names the
    epoch the file holds (3 epochs: epoch 2's checkpoint is written and renamed, then the Ctrl-C)."""
    from minibert import files

    out, replace, calls = tmp_path / "run", os.replace, []

    def interrupted_after_renaming(src, dst):
        replace(src, dst)
        if Path(dst).name == "checkpoint.pt":
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt

    monkeypatch.setattr(files.os, "replace", interrupted_after_renaming)
    rc, _, err = run_main("train", train_argv(tiny, data_root, out, "--epochs", "3"), capsys)
    assert rc == 130
    assert_one_line(err, f"interrupted after epoch 2 of {out}; rerun with --resume")
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 2


def test_sigterm_in_train_says_what_ctrl_c_says(tiny, data_root, tmp_path, monkeypatch, capsys):
    from minibert.training import trainer

    out, evaluate, calls = tmp_path / "run", trainer.evaluate, []

    def terminated_in_epoch_2(*args, **kwargs):  # SIGTERM while epoch 2 is evaluated, as `kill PID` sends it
        calls.append(1)
        if len(calls) == 2:
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL, "SIGTERM would end the process silently"
            os.kill(os.getpid(), signal.SIGTERM)
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(trainer, "evaluate", terminated_in_epoch_2)
    rc, _, err = run_main("train", train_argv(tiny, data_root, out, "--epochs", "2"), capsys)
    assert rc == 143  # 128 + SIGTERM, as a shell reports a process SIGTERM ended
    assert_one_line(err, f"interrupted after epoch 1 of {out}; rerun with --resume")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handed back when main returns
    monkeypatch.setattr(trainer, "evaluate", evaluate)
    rc, stdout, err = run_main("train", train_argv(tiny, data_root, out, "--epochs", "2", "--resume"), capsys)
    assert rc == 0 and f"resuming {out} after epoch 1" in stdout, err


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_the_grid_names_the_cell_and_epoch_and_the_rerun_continues(sig, tiny, data_root, tmp_path):
    out = tmp_path / "g"
    argv = [sys.executable, "-m", "minibert", "grid", "table2", "--quick", f"tiny={tiny}", "--datasets", "ag_news",
            "--levels", "0", "--limit", "16", "--epochs", "1000", "--data-root", str(data_root), "--out", str(out)]
    cell = out / "table2-tiny-ag_news-0-s0"
    # the default SIGINT disposition: a suite run as a background job starts with SIGINT ignored, and its children too
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    wait_for(lambda: (cell / "checkpoint.pt").is_file(), proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -sig  # ends as the signal would: what a scheduler expects
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    said = re.fullmatch(rf"\[1/1\] {cell.name}: interrupted after epoch (\d+) of {re.escape(str(cell))}; rerun the "
                        "same command to continue", err.strip())
    assert said, err
    epoch = int(said[1])
    assert torch.load(cell / "checkpoint.pt", weights_only=True)["epoch"] == epoch >= 1
    log = (out / "logs" / f"{cell.name}.log").read_text()
    assert f"interrupted after epoch {epoch} of {cell}; rerun with --resume" in log  # the child said it too
    # the same command again: the cell resumes where the line said (one more epoch, then it stops as if killed)
    env = {**os.environ, "MINIBERT_STOP_AFTER_EPOCH": str(epoch + 1)}
    subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert f"resuming {cell} after epoch {epoch}" in (out / "logs" / f"{cell.name}.log").read_text()


# ---- one process per run folder --------------------------------------------------------------------------

def test_a_second_process_on_a_run_folder_is_refused_naming_the_first(tiny, data_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert TRAIN.main(train_argv(tiny, data_root, out, "--keep-checkpoint")) == 0
    files = lambda: {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != "run.lock"}  # noqa: E731
    before = files()
    other = subprocess.Popen([sys.executable, "-c", HOLD, str(out / "run.lock")], cwd=REPO, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert other.stdout.readline().strip() == "held"
        rc, _, err = run_main("train", train_argv(tiny, data_root, out, "--resume"), capsys)
        assert rc == 2
        assert_one_line(err, f"error: --out {out} is in use by pid {other.pid} on ", "wait for it to end, or pick "
                                                                                   "another --out")
        assert files() == before  # nothing written
    finally:
        other.kill()  # kill -9: the kernel drops the lock
        other.wait()
    rc, stdout, err = run_main("train", train_argv(tiny, data_root, out, "--resume"), capsys)
    assert rc == 0 and "holds this run, finished" in stdout, err
    # a run that fails on its input after taking the lock leaves neither its folder nor a lock file
    rc, _, err = run_main("train", train_argv(tiny, data_root, tmp_path / "new", "--model", tmp_path / "no-model"), capsys)
    assert rc == 2 and "not found" in err and not (tmp_path / "new").exists()


@pytest.mark.slow
def test_two_train_py_on_one_out_the_second_exits_naming_the_first(tiny, data_root, tmp_path):
    out = tmp_path / "run"
    argv = [sys.executable, "train.py", *train_argv(tiny, data_root, out, "--epochs", "1000", "--resume")]
    first = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (out / "checkpoint.pt").is_file(), first)
        second = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert_one_line(second.stderr.strip(), f"error: --out {out} is in use by pid {first.pid} on ")
        assert first.poll() is None  # the first trains on
    finally:
        first.kill()
        first.communicate()
    assert holder(out / "run.lock") is None  # kill -9 left no stale lock


@pytest.mark.slow
def test_a_grid_cell_takes_its_run_folder_lock_beside_the_grid_lock(tiny, data_root, tmp_path):
    """The grid holds <out>/logs/<cell>.lock and its train.py child <cell>/run.lock: two files, no deadlock."""
    out = tmp_path / "g"
    proc = subprocess.run([sys.executable, "-m", "minibert", "grid", "table2", "--quick", f"tiny={tiny}", "--datasets",
                           "ag_news", "--levels", "0", "--limit", "16", "--data-root", str(data_root), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cell = out / "table2-tiny-ag_news-0-s0"
    assert rundir.read_result(cell) is not None and (cell / "run.lock").is_file()  # the child took it
    assert "in use" not in (out / "logs" / f"{cell.name}.log").read_text()
    lock = claim(cell / "run.lock")  # and let it go
    assert lock is not None
    lock.release()


# ---- issue 33: parity on what --save-model writes; run folders tampered with ----------------------------------

@pytest.mark.parametrize("flavour, pooling, labels", [("bert", "cls", 2), ("bert", "cls", 6), ("bert", "mean", 4),
                                                      ("distilbert", "cls", 5), ("distilbert", "mean", 3)])
def test_parity_compares_a_saved_classifier_with_its_own_trained_head(flavour, pooling, labels, minilm_dir, tmp_path):
    pytest.importorskip("transformers")
    from helpers import scramble_

    from minibert import SequenceClassifier, load_pretrained, save_pretrained

    source = tiny_checkpoint(tmp_path / "encoder", minilm_dir, flavour=flavour)
    clf = scramble_(SequenceClassifier(load_pretrained(source), labels, pooling), seed=1, scale=0.5)  # far from init
    folder = save_pretrained(clf, tmp_path / "model", [f"class {i}" for i in range(labels)])
    for name in TOKENIZER_FILES:  # as train.py's save_model puts them beside it
        shutil.copyfile(source / name, folder / name)
    report = parity.compare(folder)
    assert report["passed"], parity.format_report(report)
    assert report["head"] == {**report["head"], "trained": True, "pooling": pooling, "num_labels": labels}
    text = parity.format_report(report)
    assert f"head (the logits row): the checkpoint's trained {labels}-label " in text
    assert ("mean-pooling head (minibert_head.safetensors)" if pooling == "mean" else "[CLS] head") in text
    broken = load_pretrained(folder)  # the encoder of the same folder, moved on minibert's side only
    with torch.no_grad():
        broken.layers[1].ffn_norm.weight[0] += 0.05
    assert parity.compare(folder, model=broken)["failed"][0] == "layer 2"


def test_parity_on_a_run_folder_compares_the_model_it_saved(saved_run, capsys):
    pytest.importorskip("transformers")
    rc, out, err = run_main("parity", [saved_run], capsys)
    assert rc == 0, out + err
    assert err == f"note: {saved_run} is a run folder: comparing the model it saved, {saved_run / 'model'}"
    assert f"minibert vs transformers on {saved_run / 'model'} (bert, fp32, " in out
    assert "head (the logits row): the checkpoint's trained 4-label [CLS] head (pooler -> classifier)" in out
    assert out.rstrip().endswith("PASS: every tensor within 1e-05")


def stopped_run(tiny, data_root, out, monkeypatch, *extra) -> Path:
    """A run of two epochs stopped after the first, as if killed: its checkpoint.pt holds epoch 1."""
    monkeypatch.setenv("MINIBERT_STOP_AFTER_EPOCH", "1")
    assert TRAIN.main(train_argv(tiny, data_root, out, "--epochs", "2", *extra)) == 0
    monkeypatch.delenv("MINIBERT_STOP_AFTER_EPOCH")
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1
    return out


def test_a_checkpoint_of_another_run_is_refused_not_adopted(tiny, data_root, tmp_path, monkeypatch, capsys):
    clean = stopped_run(tiny, data_root, tmp_path / "clean", monkeypatch)
    other = stopped_run(tiny, data_root, tmp_path / "other", monkeypatch, "--corrupt", "all", "--seed", "7")
    own = torch.load(clean / "checkpoint.pt", weights_only=True)
    shutil.copyfile(other / "checkpoint.pt", clean / "checkpoint.pt")  # same model, another run's state
    metrics = (clean / "metrics.jsonl").read_text()
    rc, out, err = run_main("train", train_argv(tiny, data_root, clean, "--epochs", "2", "--resume"), capsys)
    assert rc == 2, out
    assert_one_line(err, f"error: {clean / 'checkpoint.pt'} belongs to another run (corrupt 'all', this run's 'none'; "
                         f"seed 7, this run's 0); move it out of {clean} and rerun with --resume (this run then starts "
                         "from its first epoch)")
    assert (clean / "metrics.jsonl").read_text() == metrics and not (clean / "result.json").exists()
    # its own checkpoint as written before checkpoints carried an identity is resumed, as it always was
    del own["identity"]
    torch.save(own, clean / "checkpoint.pt")
    rc, out, err = run_main("train", train_argv(tiny, data_root, clean, "--epochs", "2", "--resume"), capsys)
    assert rc == 0 and f"resuming {clean} after epoch 1" in out, err


def test_temporary_files_a_killed_write_left_are_removed_when_the_run_starts_again(tiny, data_root, tmp_path,
                                                                                   monkeypatch, capsys):
    out = stopped_run(tiny, data_root, tmp_path / "run", monkeypatch, "--save-model")
    left = [out / ".checkpoint.pt.4242.tmp", out / ".metrics.jsonl.17.tmp", out / "model" / ".model.safetensors.9.tmp"]
    for path in left:  # what kill -9 in the middle of an atomic write leaves
        path.write_bytes(b"\0" * 1000)
    (out / "notes.tmp").write_text("the user's: not ours")
    rc, stdout, err = run_main("train", train_argv(tiny, data_root, out, "--epochs", "2", "--resume", "--save-model"),
                               capsys)
    assert rc == 0 and f"resuming {out} after epoch 1" in stdout, err
    assert not any(path.exists() for path in left) and (out / "notes.tmp").is_file()
    assert f"note: removed 3 temporary file(s) (2.9 KB) that an interrupted write left in {out}: " in err
    assert not list(out.rglob(".*.tmp"))


def test_a_folder_named_checkpoint_pt_is_refused_before_an_epoch_is_trained(tiny, data_root, tmp_path, monkeypatch,
                                                                            capsys):
    out = stopped_run(tiny, data_root, tmp_path / "run", monkeypatch)
    (out / "checkpoint.pt").unlink()
    (out / "checkpoint.pt").mkdir()
    metrics, _ = (out / "metrics.jsonl").read_text(), capsys.readouterr()
    rc, stdout, err = run_main("train", train_argv(tiny, data_root, out, "--epochs", "2", "--resume"), capsys)
    assert rc == 2 and "epoch 1/2" not in stdout  # nothing trained
    assert_one_line(err, f"error: {out / 'checkpoint.pt'} is a folder, where train.py writes its checkpoint.pt file; "
                         f"move it out of {out} and rerun")
    assert (out / "metrics.jsonl").read_text() == metrics


def test_a_data_field_longer_than_csvs_limit_is_read(tiny, data_root, tmp_path, capsys):
    rows = (data_root / "ag_news" / "test.csv").read_text().splitlines()
    long = "word " * 40_000  # 200,000 characters in one field: over csv's 131,072
    (tmp_path / "ag_news").mkdir()
    (tmp_path / "ag_news" / "test.csv").write_text("\n".join([rows[0], f'3,A long one,"{long}"', *rows[1:]]) + "\n")
    argv = train_argv(tiny, tmp_path, tmp_path / "run")
    argv[argv.index("--limit") + 1] = "2000"  # every row: the long one among them
    rc, _, err = run_main("train", argv, capsys)
    assert rc == 0 and "Traceback" not in err, err
    from minibert.data.readers import _delimited_rows
    assert max(len(row[2]) for row in _delimited_rows(tmp_path / "ag_news" / "test.csv")) == len(long)


def test_a_cell_without_weights_costs_its_healing_pair_not_the_report(tiny_runs, tiny_dir, tmp_path, capsys):
    from minibert.study.report import report

    clean, top2 = tiny_runs
    out = tmp_path / "g"
    cfg = GridConfig("table2", out, {"tiny": str(tiny_dir)}, ("ag_news",), (0, 50), (0,), None)
    write_manifest(cfg, cells(cfg))
    cell = {(c.level, c.side): c.name for c in cells(cfg)}
    for key, run in (((0, None), clean), ((50, "top"), top2), ((50, "bottom"), top2)):
        shutil.copytree(run, out / cell[key])
    (out / cell[50, "bottom"] / "model" / "model.safetensors").unlink()  # one cell's weights are gone
    text, _ = report(out, healing_n=16, figures_on=False, probes_on=False)
    healing = text[text.index("## Healing"):]
    assert "#### Healing: tiny on AG News" in healing and "top 2 of 6" in healing  # the other pair is analysed
    assert f"- {cell[50, 'bottom']} against {cell[0, None]}: not analysed ({out / cell[50, 'bottom'] / 'model'} has " \
           "no model.safetensors" in healing
    assert f"warning: healing of {cell[50, 'bottom']} skipped: " in capsys.readouterr().err


def test_a_result_with_scores_as_strings_is_named_and_counted_as_unfinished(tmp_path, capsys):
    from minibert.study.compare import compare
    from minibert.study.report import report

    out = synthetic_grid(tmp_path / "g")
    path = out / "table2-base-sst2-100-s0" / "result.json"
    result = json.loads(path.read_text())
    path.write_text(json.dumps({**result, "best": {"weighted_f1": "0.8"}}))
    text, _ = report(out, healing_on=False, figures_on=False)
    assert "1 done, 1 partial, 0 pending" in text
    assert "Counted as partial because their result.json cannot be read: table2-base-sst2-100-s0" in text
    err = capsys.readouterr().err
    assert f"warning: {path} is damaged (not a run result: best.weighted_f1 is \"0.8\", not a number); treating it " \
           "as missing" in err
    compare(out, synthetic_grid(tmp_path / "other"))  # the damaged cell is missing there too, not a TypeError
    for key, value in (("best_epoch", "1"), ("diverged", "no"), ("lr", "2e-5"), ("seconds", None)):
        path.write_text(json.dumps({**result, key: value}))
        assert rundir.result_problem(path) == f"not a run result: {key} is {json.dumps(value)}, not " + \
            {"best_epoch": "a whole number", "diverged": "true or false"}.get(key, "a number")


def test_run_folders_the_grid_json_does_not_list_are_said(tmp_path, capsys):
    from minibert.study.report import report

    out = synthetic_grid(tmp_path / "g")
    manifest = json.loads((out / "grid.json").read_text())
    del manifest["cells"]["table2-base-sst2-100-s0"]
    (out / "grid.json").write_text(json.dumps(manifest))
    report(out, healing_on=False, figures_on=False)
    assert capsys.readouterr().err == (
        f"warning: 1 run folder(s) in {out} are not in its grid.json, so not in this report: table2-base-sst2-100-s0; "
        "rerun the grid command that made them: it adds them to grid.json and reruns nothing that is done\n")


def test_eval_tsne_names_the_file_it_wrote(saved_run, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    rc, out, err = run_main("eval", [saved_run, "--device", "cpu", "--tsne", tmp_path / "figure"], capsys)
    assert rc == 0, err
    assert f"t-SNE figure -> {tmp_path / 'figure.png'}" in out and (tmp_path / "figure.png").is_file()


def test_cka_refuses_a_run_whose_config_names_a_model_of_another_shape(tiny_runs, minilm_dir, tmp_path, capsys):
    from minibert.study import layer_cka as cka

    other = tiny_checkpoint(tmp_path / "four_layers", minilm_dir, num_layers=4)
    runs = [shutil.copytree(run, tmp_path / run.name) for run in tiny_runs]
    for run in runs:  # config.json edited to claim another model; the saved models are still 6-layer ones
        config = json.loads((run / "config.json").read_text())
        config["args"]["model"] = config["checkpoint"] = str(other)
        (run / "config.json").write_text(json.dumps(config))
    try:
        rc = cka.main([str(runs[0]), str(runs[1]), "--n", "16"])
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    assert rc == 2 and out == "", out
    assert_one_line(err.strip(), f"error: {runs[0] / 'model'} is not shaped like {other}, the model "
                                 f"{runs[0] / 'config.json'} names (num_hidden_layers 6 vs 4): that config.json does "
                                 "not describe this run (edited?); restore it, or train the run again")
