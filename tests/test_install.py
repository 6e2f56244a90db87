"""A user installs the package, not the checkout: the wheel built from this repository, installed into a fresh
environment, runs a grid cell and `minibert eval` from a folder outside the checkout (a wheel holds no train.py)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run(cmd, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=900, **kw)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done


@pytest.mark.slow
def test_a_wheel_installed_elsewhere_runs_a_grid_cell_and_eval(tmp_path, minilm_dir, data_root):
    # the wheel, built from a copy of what it packages (building in the checkout would leave build/ there)
    src, dist, venv, elsewhere = tmp_path / "src", tmp_path / "dist", tmp_path / "venv", tmp_path / "elsewhere"
    shutil.copytree(REPO / "minibert", src / "minibert", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", dist, src])
    wheel, = dist.glob("minibert-*.whl")
    # a fresh environment that borrows torch and the rest from this one, and holds the wheel's minibert
    run([sys.executable, "-m", "venv", "--system-site-packages", venv])
    python, minibert = venv / "bin" / "python", venv / "bin" / "minibert"
    run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", wheel])
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"MINIBERT_DATA": str(data_root)}
    imported = Path(run([python, "-c", "import minibert; print(minibert.__file__)"], cwd=elsewhere, env=env).stdout.strip())
    assert imported.is_relative_to(venv) and not imported.is_relative_to(REPO), imported
    assert not (imported.parent.parent / "train.py").exists()

    assert "--corrupt SPEC" in run([minibert, "train", "--help"], cwd=elsewhere, env=env).stdout
    grid = run([minibert, "grid", "table2", "--quick", f"minilm={minilm_dir}", "--datasets", "ag_news", "--levels", "0",
                "--limit", "16", "--out", "g"], cwd=elsewhere, env=env)
    cell = "table2-minilm-ag_news-0-s0"
    assert f"[1/1] {cell}: weighted F1 " in grid.stdout, grid.stdout
    assert f"-m minibert train --model {minilm_dir}" in (elsewhere / "g" / "logs" / f"{cell}.log").read_text()
    result = json.loads((elsewhere / "g" / cell / "result.json").read_text())
    assert json.loads((elsewhere / "g" / cell / "config.json").read_text())["args"]["out"] == f"g/{cell}"

    # eval from yet another folder: the run finds its data and model from where the grid was started
    scores = run([minibert, "eval", f"elsewhere/g/{cell}", "--device", "cpu", "--json"], cwd=tmp_path, env=env)
    assert json.loads(scores.stdout.splitlines()[-1])["weighted_f1"] == result["best"]["weighted_f1"]
