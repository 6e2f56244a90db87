"""What a hostile user types, through the real entry points: train.py, eval.py, the grid and trace.

Every bad input is one line on stderr that names the flag or the file and the fix, exit 2, found before any
expensive work; a meaningful input gets the right behaviour and a one-line note. CASES is the list: a new
hostile input is one more row (entry point, flags, a fragment of the expected line, exit status). The tests
below it cover what needs a run folder, Ctrl-C and the one-process-per-run-folder lock.

Runs use a tiny random BERT (helpers.tiny_checkpoint, 64 positions) on 16 real AG News examples: a second each.
"""
import importlib.util
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import tiny_checkpoint

from minibert.locks import claim, holder
from minibert.study import grid
from minibert.tools import eval as eval_command
from minibert.tools import trace
from minibert.training import rundir

REPO = Path(__file__).resolve().parent.parent


def load_script(name):
    spec = importlib.util.spec_from_file_location(f"{name}_script", REPO / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TRAIN, EVAL = load_script("train"), load_script("eval")
MAINS = {"train": TRAIN.main, "eval": EVAL.main, "grid": grid.main, "trace": trace.main}


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
]


@pytest.fixture
def places(tmp_path, tiny, data_root, saved_run) -> dict:
    (tmp_path / "sst2").mkdir()
    shutil.copyfile(data_root / "sst2" / "validation.tsv", tmp_path / "sst2" / "test.tsv")  # GLUE: never read
    (tmp_path / "mrpc").mkdir()
    shutil.copyfile(data_root / "mrpc" / "train.tsv", tmp_path / "mrpc" / "train.tsv")
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "out").mkdir()
    return {"tiny": tiny, "run": saved_run, "data": data_root, "file": tmp_path / "a_file", "out": tmp_path / "out",
            "sst2_test_only": tmp_path / "sst2", "mrpc_train_only": tmp_path / "mrpc"}


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
def test_sigint_to_train_py_is_one_line_and_the_checkpoint_resumes(tiny, data_root, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    # a background shell starts its jobs with SIGINT ignored, and Python keeps it so: give the child the default
    # disposition, as a terminal's Ctrl-C finds it, however this test suite was started
    proc = subprocess.Popen([sys.executable, "train.py", *train_argv(tiny, data_root, out, "--epochs", "1000")],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    wait_for(lambda: (out / "checkpoint.pt").is_file(), proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    line = err.strip().splitlines()[-1]
    assert "Traceback" not in err and re.fullmatch(rf"interrupted after epoch (\d+) of {out}; rerun with --resume", line)
    epoch = int(re.search(r"epoch (\d+)", line)[1])
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == epoch >= 1
    monkeypatch.setenv("MINIBERT_STOP_AFTER_EPOCH", str(epoch + 1))  # one more epoch: it resumes from there
    rc, stdout, err = run_main("train", train_argv(tiny, data_root, out, "--epochs", "1000", "--resume"), capsys)
    assert rc == 0 and f"resuming {out} after epoch {epoch}" in stdout, err


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
