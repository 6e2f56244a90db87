"""The measured studies shipped in results/ (each run by its run.sh) are complete, consistent and portable.

results/minilm is the converged study (trained until the runs stop learning); results/minilm-short is the first,
short-budget one, kept for comparison. Every committed cell finished; a shipped folder (its report.md committed) has
every cell its grid asks for and its report regenerates word for word from the committed small files alone (no
models, no data, no checkpoint); at most 15% of each layout's cells in the converged study were still improving, by
the study's own flag (convergence.py: validation metric and train loss, never the test set) recomputed from the
committed metrics; a committed cell names its model and data portably and reruns; nothing
committed is large.
"""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from minibert.study.cells import load_manifest
from minibert.study.report import report
from minibert.study.summary import run_facts
from minibert.training.config import TrainConfig
from minibert.training.rundir import read_result
from minibert.training.trainer import train

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path("results")
# study -> folder -> cells
STUDIES = {
    # 4 datasets x 8 settings x 3 seeds; 2 datasets x 8 x 3; SST-2 x 4 settings x 3 seeds per recipe
    "minilm-short": {"table2": 96, "table3": 48, "recipe-paper": 12, "recipe-bert": 12},
    # table2: SST-2 and AG News x 8 settings x 3 seeds at 1,000 examples, and SST-2 x 4 settings x 3 seeds at 250 and
    # 4,000 (72); then (issue 31) SST-2 x 4 settings x seeds 3-9 at 1,000 (100) and x 3 seeds at 16,000 (112);
    # table3: SST-2 x 8 x 3; table4: AG News and DBPedia x 8 x 3; table5: MRPC and RTE x 4 settings x 3 seeds
    "minilm": {"table2": (72, 100, 112), "table3": 24, "table4": 48, "table5": 24},
}
FOLDERS = [(study, folder) for study, folders in STUDIES.items() for folder in folders]
CONVERGED = "minilm"  # the study whose cells must have stopped learning
MAX_IMPROVING = 0.15  # of each layout (folder) of it: issue 31's bar
CELL_FILES = ("config.json", "corruption.json", "metrics.jsonl", "result.json")
MAX_BYTES = 1_000_000


@pytest.fixture(scope="module")
def committed() -> list[Path]:
    """The studies' files as committed (paths relative to the repository)."""
    try:
        listing = subprocess.run(["git", "ls-files", "-z", str(RESULTS)], cwd=REPO, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"needs a git checkout to tell committed files from local ones ({e})")
    return [Path(p) for p in listing.stdout.decode().split("\0") if p]


def cells_of(committed: list[Path], study: str) -> list[Path]:
    return sorted({p.parent for p in committed if p.name in CELL_FILES and p.parts[1] == study})


def still_improving(cells: list[Path]) -> list[Path]:
    """The cells convergence.py's flag calls still improving, recomputed from their metrics as the report does."""
    return [c for c in cells if run_facts(REPO / c, read_result(REPO / c))["still_improving"]]


def shipped(study: str, folder: str, committed: list[Path]) -> bool:
    """A folder is shipped once its report is committed (run.sh writes the reports after the last cell)."""
    return RESULTS / study / folder / "report.md" in set(committed)


@pytest.mark.parametrize("study", STUDIES)
def test_every_committed_cell_finished(study, committed):
    """Cells are committed as they finish (a study runs over more than one sitting): never a partial one."""
    tracked = set(committed)
    for cell in cells_of(committed, study):
        missing = [f for f in CELL_FILES if cell / f not in tracked]
        assert not missing, f"{cell}: {', '.join(missing)} not committed"
        result = read_result(REPO / cell)
        assert result is not None and result["status"] == "done", f"{cell} is committed but did not finish"


@pytest.mark.parametrize("folder", STUDIES[CONVERGED])
def test_the_converged_study_stopped_learning(folder, committed):
    """convergence.py's flag, recomputed from the committed metrics as the report does, over each layout of the
    converged study: at most 15% of its cells still improving."""
    cells = [c for c in cells_of(committed, CONVERGED) if c.parts[2] == folder]
    if not cells:
        pytest.skip(f"no cell of {RESULTS / CONVERGED / folder} committed yet")
    improving = still_improving(cells)
    assert len(improving) <= MAX_IMPROVING * len(cells), (
        f"{len(improving)} of {len(cells)} cells still improving: {', '.join(c.name for c in improving)}")


@pytest.mark.parametrize("study,folder", FOLDERS)
def test_a_shipped_folder_has_every_cell(study, folder, committed):
    if not shipped(study, folder, committed):
        pytest.skip(f"{RESULTS / study / folder} is still running (no report.md committed yet)")
    out = REPO / RESULTS / study / folder
    grid, _ = load_manifest(out)
    expected = STUDIES[study][folder]
    assert len(grid) in (expected if isinstance(expected, tuple) else (expected,)), \
        f"{out}/grid.json lists {len(grid)} cells"
    tracked = set(committed)
    for name in grid:
        assert RESULTS / study / folder / name / "result.json" in tracked, f"{name} is not committed"
    assert RESULTS / study / folder / "report.csv" in tracked


@pytest.mark.parametrize("study,folder", FOLDERS)
def test_report_regenerates_from_the_committed_files(study, folder, committed, tmp_path, monkeypatch):
    """Copy only the committed files elsewhere and rerun the report: the same markdown, figures included."""
    if not shipped(study, folder, committed):
        pytest.skip(f"{RESULTS / study / folder} is still running (no report.md committed yet)")
    where = RESULTS / study / folder
    for path in committed:
        if path.parts[:3] == where.parts:
            (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(REPO / path, tmp_path / path)
    monkeypatch.chdir(tmp_path)  # the report names its folder as run.sh gave it: results/<study>/<folder>
    expected = (REPO / where / "report.md").read_text()
    # a path of this checkout would match here and differ on any other (a pair the report could not analyse)
    assert str(REPO) not in expected, f"{where / 'report.md'} names a path of this machine: regenerate it"
    text, _ = report(where, healing_on="## Healing (layer-wise CKA)" in expected)
    assert text == expected
    for link in (line.split("](")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")):
        assert (tmp_path / where / link).is_file(), link
        assert where / link in set(committed), f"{link} is linked from report.md but not committed"


@pytest.mark.parametrize("study", STUDIES)
def test_committed_cells_name_model_and_data_portably(study, committed):
    """No path of the machine that ran a cell: the model by its hub id, the data under $MINIBERT_DATA, the rest
    relative to the repository."""
    for cell in cells_of(committed, study):
        for name in ("config.json", "result.json"):
            text = (REPO / cell / name).read_text()
            assert '"/' not in text, f"{cell / name} holds an absolute path"
        args = json.loads((REPO / cell / "config.json").read_text())["args"]
        assert args["model"] == "sentence-transformers/all-MiniLM-L6-v2"
        assert args["data_dir"].startswith("$MINIBERT_DATA/") and args["out"] == str(cell)


@pytest.mark.slow
def test_a_committed_cell_reruns_from_its_config(committed, data_root, minilm_dir, tmp_path, monkeypatch):
    """The first epoch of a committed SST-2 cell, rerun from its config.json alone on this machine, lands where
    the committed metrics say (same data, corruption, seed and schedule; other CPUs may round differently)."""
    cell = next(c for c in cells_of(committed, "minilm-short") if "-sst2-bottom50-s0" in c.name)
    args = json.loads((REPO / cell / "config.json").read_text())["args"]
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "sentence-transformers--all-MiniLM-L6-v2").symlink_to(minilm_dir)  # the hub id, found offline
    monkeypatch.setenv("MINIBERT_WEIGHTS", str(weights))
    monkeypatch.setenv("MINIBERT_DATA", str(data_root))
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    result = train(TrainConfig(**{**args, "out": str(tmp_path / "rerun"), "cache_dir": None, "resume": False,
                                  "save_model": False, "stop_after_epoch": 1}))
    assert result["status"] == "stopped" and result["epoch"] == 1
    mine = json.loads((tmp_path / "rerun" / "metrics.jsonl").read_text().splitlines()[0])
    theirs = json.loads((REPO / cell / "metrics.jsonl").read_text().splitlines()[0])
    assert mine["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-3)
    assert abs(mine["weighted_f1"] - theirs["weighted_f1"]) < 0.01


def test_nothing_committed_is_large_or_a_model(committed):
    assert committed, f"nothing committed under {RESULTS}"
    for path in committed:
        assert os.path.getsize(REPO / path) <= MAX_BYTES, f"{path} is over 1 MB"
        assert path.suffix not in (".safetensors", ".pt", ".bin", ".log", ".lock"), f"{path} should not be committed"


WORDS = ("costs", "gains", "equivalent", "not settled")


def findings_counts(report_md: str) -> dict[str, dict[str, int]]:
    """claim number -> verdict word -> count, summed over a report's Findings sections (one per model and size)."""
    counts: dict[str, dict[str, int]] = {}
    lines = report_md.splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("### Findings"):
            continue
        assert lines[i + 2].startswith("| claim | costs | gains | equivalent within"), lines[i + 2]
        for row in lines[i + 4:]:
            if not row.startswith("| "):
                break
            claim, *numbers = [c.strip() for c in row.strip("|").split("|")][:5]
            for word, n in zip(WORDS, numbers):
                counts.setdefault(claim, dict.fromkeys(WORDS, 0))[word] += int(n)
    return counts


def test_readme_claims_table_sums_the_reports_findings():
    """README's table of the paper's three claims: each cell is the sum of that table's Findings rows, zeros left out."""
    rows = [line for line in (REPO / "README.md").read_text().splitlines() if line[:4] in ("| 1.", "| 2.", "| 3.")]
    assert len(rows) == 3, "README's claims table has a row per claim"
    for row in rows:
        claim, *cells = [c.strip() for c in row.strip("|").split("|")]
        for table, cell in zip((2, 3, 4, 5), cells, strict=True):
            report_md = (REPO / RESULTS / CONVERGED / f"table{table}" / "report.md").read_text()
            counts = findings_counts(report_md)[claim.split(".")[0]]
            said = ", ".join(f"{word} {n}" for word, n in counts.items() if n)
            assert cell == said, f"README, claim {claim[:2]} Table {table}: {cell!r}, its report sums to {said!r}"


def test_results_readme_flagged_counts_are_recomputed():
    """results/minilm/README.md's count of runs still improving, per table, is convergence.py's flag over the
    cells its report covers (those grid.json lists)."""
    text = " ".join((REPO / RESULTS / CONVERGED / "README.md").read_text().split())
    for folder in STUDIES[CONVERGED]:
        grid, _ = load_manifest(REPO / RESULTS / CONVERGED / folder)
        cells = [RESULTS / CONVERGED / folder / name for name in grid]
        said = f"Table {folder[-1]} {len(still_improving(cells))} of {len(cells)}"
        assert said in text, f"{RESULTS / CONVERGED / 'README.md'} should say {said!r}"
