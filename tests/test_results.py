"""The measured study shipped in results/minilm-cpu (run by its run.sh) is complete and consistent.

Every cell the study asks for is committed and finished, its report regenerates word for word from the committed
small files alone (no models, no data, no checkpoint), and nothing committed there is large.
"""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from minibert.report import load_manifest, report
from minibert.rundir import read_result

REPO = Path(__file__).resolve().parent.parent
STUDY = Path("results") / "minilm-cpu"
# folder -> cells: 4 datasets x 8 settings x 3 seeds; 2 datasets x 8 x 3; SST-2 x 4 settings x 3 seeds per recipe
FOLDERS = {"table2": 96, "table3": 48, "recipe-paper": 12, "recipe-bert": 12}
CELL_FILES = ("config.json", "corruption.json", "metrics.jsonl", "result.json")
MAX_BYTES = 1_000_000


@pytest.fixture(scope="module")
def committed() -> list[Path]:
    """The study's files as committed (paths relative to the repository)."""
    try:
        listing = subprocess.run(["git", "ls-files", "-z", str(STUDY)], cwd=REPO, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"needs a git checkout to tell committed files from local ones ({e})")
    return [Path(p) for p in listing.stdout.decode().split("\0") if p]


def shipped(folder: str, committed: list[Path]) -> bool:
    """A folder is shipped once its report is committed (run.sh writes the reports after the last cell)."""
    return STUDY / folder / "report.md" in set(committed)


def test_every_committed_cell_finished(committed):
    """Cells are committed as they finish (the study runs over more than one sitting): never a partial one."""
    names = {path.parent for path in committed if path.name in CELL_FILES}
    assert names, f"no cells committed under {STUDY}"
    tracked = set(committed)
    for cell in sorted(names):
        missing = [f for f in CELL_FILES if cell / f not in tracked]
        assert not missing, f"{cell}: {', '.join(missing)} not committed"
        result = read_result(REPO / cell)
        assert result is not None and result["status"] == "done", f"{cell} is committed but did not finish"


@pytest.mark.parametrize("folder", FOLDERS)
def test_a_shipped_folder_has_every_cell(folder, committed):
    if not shipped(folder, committed):
        pytest.skip(f"{STUDY / folder} is still running (no report.md committed yet)")
    out = REPO / STUDY / folder
    grid, _ = load_manifest(out)
    assert len(grid) == FOLDERS[folder], f"{out}/grid.json lists {len(grid)} cells"
    tracked = set(committed)
    for name in grid:
        assert STUDY / folder / name / "result.json" in tracked, f"{name} is not committed"
    assert STUDY / folder / "report.csv" in tracked


@pytest.mark.parametrize("folder", FOLDERS)
def test_report_regenerates_from_the_committed_files(folder, committed, tmp_path, monkeypatch):
    """Copy only the committed files elsewhere and rerun the report: the same markdown, figures included."""
    if not shipped(folder, committed):
        pytest.skip(f"{STUDY / folder} is still running (no report.md committed yet)")
    for path in committed:
        if path.parts[:3] == (*STUDY.parts, folder):
            (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(REPO / path, tmp_path / path)
    monkeypatch.chdir(tmp_path)  # the report names its folder as run.sh gave it: results/minilm-cpu/<folder>
    expected = (REPO / STUDY / folder / "report.md").read_text()
    text, _ = report(STUDY / folder, healing_on="## Healing (layer-wise CKA)" in expected)
    assert text == expected
    for link in (line.split("](")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")):
        assert (tmp_path / STUDY / folder / link).is_file(), link
        assert STUDY / folder / link in set(committed), f"{link} is linked from report.md but not committed"


def test_nothing_committed_is_large_or_a_model(committed):
    assert committed, f"nothing committed under {STUDY}"
    for path in committed:
        assert os.path.getsize(REPO / path) <= MAX_BYTES, f"{path} is over 1 MB"
        assert path.suffix not in (".safetensors", ".pt", ".bin", ".log", ".lock"), f"{path} should not be committed"
