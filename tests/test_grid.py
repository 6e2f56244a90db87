"""The experiment grid: the paper's tables as data, cells and shards, and a real --quick grid on MiniLM that is
killed mid-way, resumed, rerun, reported (with the healing analysis) and drawn (Figure 1)."""
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import assert_one_line_error, run_main

from minibert.study.cells import GridConfig, cells, shard
from minibert.study.grid import main, read_result, status
from minibert.study.paper import TABLES, paper_value
from minibert.study.summary import Summary, layer_range

REPO = Path(__file__).resolve().parent.parent


def grid_cli(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "minibert.study.grid", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, **kw)


def listing(*args) -> list[list[str]]:
    """--list output as [name, status, command] rows (in this process: it starts no run)."""
    out = io.StringIO()
    with redirect_stdout(out):
        assert main([*map(str, args), "--list"]) == 0
    return [line.split("\t") for line in out.getvalue().splitlines()]


# ---- the paper's tables ---------------------------------------------------------------------------

ROW = re.compile(r"(?:(Base|Large|Distil) )?(\d+)% (?:\(\d+-\d+\) )?((?:\d+\.\d+ ?)+)$")


def printed_rows(paper: str, number: int) -> list[tuple[str, int, list[float]]]:
    """The rows of 'Table <number>:' as printed in PAPER.txt: (model, level, values left to right)."""
    lines = paper.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"Table {number}:"))
    rows, model = [], None
    for line in lines[start + 3:]:  # the caption, then two header lines
        m = ROW.match(line.strip())
        if not m:
            break
        model = (m[1] or model).lower()
        rows.append((model, int(m[2]), [float(x) for x in m[3].split()]))
    return rows


def test_paper_tables_match_the_paper_text(data_root):
    """Every value of Tables 2-5 against PAPER.txt, the appendix A outliers (large 50% bottom IMDB 33.97) and
    section 4.2's worked example (base SST-2 92.11 -> 82.18 -> 75.17) among them."""
    paper = (data_root.parent / "PAPER.txt").read_text()
    for number in (2, 3, 4, 5):
        table = TABLES[f"table{number}"]
        rows = printed_rows(paper, number)
        assert len(rows) == 13, f"table {number}: found {len(rows)} rows in PAPER.txt"
        for model, level, values in rows:
            if level in (0, 100):
                ours = [paper_value(table.name, model, level, None, d) for d in table.datasets]
            else:
                ours = [paper_value(table.name, model, level, s, d) for d in table.datasets for s in ("bottom", "top")]
            assert ours == values, f"table {number} {model} {level}%"
        assert len(table.values) == sum(len(v) for _, _, v in rows)


def test_paper_value_whole_model_rows_ignore_the_side_and_unknown_cells_are_none():
    assert paper_value("table2", "base", 0, "top", "imdb") == paper_value("table2", "base", 0, None, "imdb") == 82.41
    assert paper_value("table2", "distil", 25, "bottom", "sst2") is None  # DistilBERT has only 50%
    assert paper_value("table4", "base", 0, None, "sst2") is None
    assert paper_value("table2", "minilm", 0, None, "sst2") is None


# ---- cells and shards -------------------------------------------------------------------------------

def config(table="table2", **kw) -> GridConfig:
    base = dict(table=table, out=Path("/grid"), models={"base": "base", "large": "large", "distil": "distil"},
                datasets=TABLES[table].datasets, levels=(0, 25, 50, 75, 100), seeds=(0,), data_root=None)
    return GridConfig(**{**base, **kw})


def test_cells_follow_the_paper_levels():
    grid = cells(config())
    # base and large: 0, 100 and bottom/top x 25/50/75 = 8 each; distil: 0, bottom/top 50, 100 = 4
    assert len(grid) == (8 + 8 + 4) * 6
    assert len({c.name for c in grid}) == len(grid)
    distil = {c.setting for c in grid if c.model == "distil"}
    assert distil == {"0", "bottom50", "top50", "100"}
    specs = {c.setting: c.corrupt for c in grid if c.model == "base"}
    assert specs == {"0": "none", "bottom25": "bottom:0.25", "top25": "top:0.25", "bottom50": "bottom:0.5",
                     "top50": "top:0.5", "bottom75": "bottom:0.75", "top75": "top:0.75", "100": "all"}
    seeds = cells(config(seeds=(0, 1, 2), levels=(0, 50), datasets=("mrpc",), table="table5"))
    assert len(seeds) == (3 + 3 + 3) * 3


def test_layer_ranges_are_the_papers():
    assert layer_range("base", 25, "bottom") == "1-3"
    assert layer_range("base", 25, "top") == "10-12"
    assert layer_range("large", 50, "bottom") == "1-12"
    assert layer_range("distil", 50, "bottom") == "1-3"


def test_layer_ranges_come_from_what_ran_when_the_checkpoint_is_gone(tmp_path):
    """A copied grid folder (results/ on another machine) names its layers from the cells' corruption.json."""
    (tmp_path / "cell").mkdir()
    (tmp_path / "cell" / "corruption.json").write_text(json.dumps({"spec": "top:0.5", "layers": [4, 5, 6]}))
    assert layer_range(str(tmp_path / "no-such-checkpoint"), 50, "top") == ""
    assert layer_range(str(tmp_path / "no-such-checkpoint"), 50, "top", [tmp_path / "missing", tmp_path / "cell"]) == "4-6"


def test_shards_are_disjoint_and_cover_the_list(tmp_path):
    full = [row[0] for row in listing("table2", "--out", tmp_path)]
    assert len(full) == 120
    parts = [[row[0] for row in listing("table2", "--out", tmp_path, "--shard", f"{i}/2")] for i in range(2)]
    assert not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == sorted(full)
    thirds = [name for i in range(3) for name in shard(full, f"{i}/3")]
    assert sorted(thirds) == sorted(full)
    assert not (tmp_path / "grid.json").exists()  # --list runs and writes nothing


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    for args in (["--shard", "2/2"], ["--shard", "x"], ["--levels", "30"], ["--seeds", "a"], ["--datasets", "nope"],
                 ["--models", "tiny"]):
        assert main(["table2", "--out", str(tmp_path), *args, "--list"]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "grid.json" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["table2", "--list"])  # no --out
    assert exit_.value.code == 2 and capsys.readouterr().err.startswith("error: the following arguments are required: --out")


def test_a_data_folder_without_the_dataset_names_where_it_came_from(tmp_path, capsys, monkeypatch):
    """$MINIBERT_DATA pointing at the wrong folder: the error names the variable, not a flag the user never gave."""
    monkeypatch.setenv("MINIBERT_DATA", str(tmp_path))
    assert main(["table5", "--out", str(tmp_path / "grid"), "--datasets", "mrpc", "--list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: $MINIBERT_DATA {tmp_path} has no folder for mrpc;") and err.count("\n") == 1
    assert main(["table5", "--out", str(tmp_path / "grid"), "--datasets", "mrpc", "--data-root", str(tmp_path),
                 "--list"]) == 2
    assert capsys.readouterr().err.startswith(f"error: --data-root {tmp_path} has no folder for mrpc;")


def test_summary_over_seeds():
    assert Summary(1, [91.234], [], 0).text() == "91.23"
    assert Summary(3, [90.0, 92.0], [16.98], 0).text() == "91.00±1.41 (1 div)"
    assert Summary(2, [], [16.98], 0).text() == "16.98† [1/2]"
    assert Summary(2, [], [], 1).text() == "partial"
    assert Summary(1, [], [], 0).text() == "pending"


# ---- a real --quick grid ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def quick(tmp_path_factory, data_root, minilm_dir):
    """The --quick grid on MiniLM and AG News (4 cells), killed right after its first cell, then rerun twice."""
    out = tmp_path_factory.mktemp("grid")
    args = ["table2", "--quick", "--datasets", "ag_news", "--out", out, "--data-root", data_root,
            "--checkpoint", f"minilm={minilm_dir}"]
    rows = listing(*args)
    names = [row[0] for row in rows]
    proc = subprocess.Popen([sys.executable, "-m", "minibert.study.grid", *map(str, args)], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 600
    while read_result(out / names[0]) is None:
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read() if proc.poll() is not None else "timeout"
        time.sleep(0.2)
    while not (out / names[1]).exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)  # let the second cell start, so the kill lands in the middle of a run
    os.killpg(proc.pid, signal.SIGKILL)  # the grid and its train.py child, like a scheduler's kill
    proc.communicate()
    killed = {name: status(out / name) for name in names}
    finished = {name: ((out / name / "result.json").read_bytes(), (out / name / "result.json").stat().st_mtime_ns)
                for name in names if killed[name] == "done"}
    rerun = grid_cli(*args)
    logs = {p.name: p.read_text() for p in (out / "logs").iterdir()}
    again = grid_cli(*args)
    return SimpleNamespace(out=out, args=args, names=names, commands=[row[2] for row in rows], killed=killed,
                           finished=finished, rerun=rerun, logs=logs, again=again)


@pytest.mark.slow
def test_killed_grid_resumes_without_rerunning_or_losing_cells(quick):
    assert quick.killed[quick.names[0]] == "done"
    assert list(quick.killed.values()).count("done") < len(quick.names), "the kill came too late to test anything"
    assert quick.rerun.returncode == 0, quick.rerun.stdout + quick.rerun.stderr
    for name, (content, mtime) in quick.finished.items():
        assert f"{name}: done, skipped" in quick.rerun.stdout
        path = quick.out / name / "result.json"
        assert path.read_bytes() == content and path.stat().st_mtime_ns == mtime, f"{name} was rerun"
    for name in quick.names:
        result = read_result(quick.out / name)
        assert result is not None, f"{name} missing after the rerun"
        assert result["dataset"] == "ag_news" and result["epochs_run"] == 1
    cell_dirs = {p.name for p in quick.out.iterdir() if p.is_dir()} - {"logs", "token_cache", "healing"}
    assert cell_dirs == set(quick.names)  # nothing missing, nothing extra
    for name in quick.names:  # each cell ran to completion exactly once: one result line per cell in its log
        assert quick.logs[f"{name}.log"].count("best epoch") == 1, name


@pytest.mark.slow
def test_second_invocation_runs_nothing(quick):
    assert quick.again.returncode == 0
    assert f"{len(quick.names)} done, 0 partial, 0 pending" in quick.again.stdout
    assert quick.again.stdout.count("done, skipped") == len(quick.names)
    assert {p.name: p.read_text() for p in (quick.out / "logs").iterdir()} == quick.logs  # no train.py started


@pytest.mark.slow
def test_resumed_cell_equals_an_uninterrupted_run(quick, tmp_path):
    """The cell the kill interrupted, run again from scratch in a fresh folder, gives the same numbers."""
    name = quick.names[1]
    cmd = shlex.split(quick.commands[1])
    cmd[cmd.index("--out") + 1] = str(tmp_path / "fresh")
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
    fresh = json.loads((tmp_path / "fresh" / "result.json").read_text())
    grid = read_result(quick.out / name)
    assert fresh["best"] == grid["best"] and fresh["best_epoch"] == grid["best_epoch"]


@pytest.mark.slow
def test_report_has_every_cell_and_the_healing_analysis(quick):
    result = grid_cli("report", quick.out, "--healing-n", 48)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text == (quick.out / "report.md").read_text()
    rows = {line.split("|")[2].strip(): line for line in text.splitlines()  # Table 2's rows, not the findings'
            if line.startswith("| minilm |") and re.match(r" (\d+%|majority)", line.split("|")[2])}
    assert set(rows) == {"0%", "50% (1-3 / 4-6)", "100%", "majority class"}
    assert re.search(r"\| minilm \| majority class \| \d+\.\d\d \|", rows["majority class"])
    for name in quick.names:
        f1 = 100 * read_result(quick.out / name)["best"]["weighted_f1"]
        assert f"{f1:.2f}" in text, name
    assert not any(word in line for line in rows.values() for word in ("pending", "partial"))
    assert re.search(r"4 cells: 4 done, 0 partial, 0 pending; \d diverged runs\.", text)
    csv_lines = (quick.out / "report.csv").read_text().splitlines()
    assert csv_lines[0].startswith("table,model,level,side,dataset") and len(csv_lines) == 1 + 4
    healing = text.split("## Healing (layer-wise CKA)")[1]
    layer_rows = [line for line in healing.splitlines() if re.match(r"\| (emb|\d) \|", line)]
    assert len(layer_rows) == 7  # embeddings + 6 layers of MiniLM
    assert layer_rows[0].count("1.00 -> ") == 3  # no setting corrupts the embeddings
    assert re.search(r"\| 4 \| \S+ -> \S+ \| 0\.\d\d -> 0\.\d\d \* \|", healing)  # top 50% re-initialises 4-6
    assert (quick.out / "healing" / "table2-minilm-ag_news-s0.png").stat().st_size > 0
    cached = json.loads((quick.out / "healing" / f"{quick.names[1]}.json").read_text())
    assert cached["after"] is not None and cached["n"] == 48


def test_tsne_names_what_the_grid_has_when_asked_for_what_it_lacks(capsys):
    """A dataset, seed or model the grid did not run: one line that lists what it did run, before any model loads."""
    folder = REPO / "results" / "minilm" / "table3"  # committed: 3 seeds of table3 on SST-2
    status, err = run_main(main, ["tsne", str(folder), "--dataset", "ag_news"], capsys)
    assert_one_line_error(status, err)
    assert "no table2 cells on ag_news with seed 0" in err and "table3 sst2 seed 2" in err and "--table" in err
    status, err = run_main(main, ["tsne", str(folder), "--table", "table3", "--dataset", "sst2", "--model", "base"],
                           capsys)
    assert_one_line_error(status, err)
    assert "no model 'base'" in err and "(it has: minilm)" in err


@pytest.mark.slow
def test_tsne_figure(quick):
    result = grid_cli("tsne", quick.out, "--n", 40)
    assert result.returncode == 0, result.stderr
    png = quick.out / "figure1-table2-minilm-ag_news-s0.png"
    assert result.stdout.strip() == f"wrote {png}" and png.read_bytes()[:4] == b"\x89PNG"
