"""The components grid and its report: the cells and their specs, the table and the answers on a synthetic grid
folder whose numbers are chosen so that each answer is known, the drift figure's data, and one tiny real grid run
(MiniLM on real SST-2 sentences) through `grid components` and `grid report` with its figures and probes."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from minibert.study.cells import GridConfig, cells, load_manifest, write_manifest
from minibert.study.components import component_comparisons, component_rows, drift_panels
from minibert.study.report import report

REPO = Path(__file__).resolve().parent.parent
SEEDS = (0, 1, 2)
CLEAN = 90.0
# F1 per (side, component) at 50%: attn is cheaper than the whole layers on both sides, ffn costs more on both,
# norm is cheaper and nearly heals, qk ends above clean (full recovery)
F1 = {("bottom", "all"): 80, ("top", "all"): 85, ("bottom", "attn"): 84, ("top", "attn"): 86, ("bottom", "ffn"): 78,
      ("top", "ffn"): 83, ("bottom", "norm"): 89, ("top", "norm"): 89, ("bottom", "qk"): 91, ("top", "qk"): 91}
LAYERS = 12  # BERT-base: 50% = layers 1-6 (bottom), 7-12 (top)


def f1_of(cell) -> float:
    noise = 0.1 * ((7 * cell.seed + len(cell.component) + (cell.side or "").count("o")) % 3)
    return (CLEAN if cell.level == 0 else F1[(cell.side, cell.component)]) + noise


def drift_of(cell, epoch: int) -> dict:
    """Synthetic drift: corrupted layers move 10x more than the others, growing with the epoch."""
    hit = range(6) if cell.side == "bottom" else range(6, 12) if cell.side == "top" else ()
    per = [epoch * (0.01 if i in hit else 0.001) for i in range(LAYERS)]
    return {"attn": per, "ffn": [2 * x for x in per], "norm": [x / 10 for x in per], "layer": per,
            "embeddings": 0.001 * epoch, "pooler": 0.001 * epoch}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("components")
    cfg = GridConfig("components", out, {"base": "base"}, ("sst2",), (0, 50), SEEDS, None)
    grid = cells(cfg)
    write_manifest(cfg, grid)
    for cell in grid:
        run = out / cell.name
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"args": {"seed": cell.seed}, "num_train": 100, "num_test": 50}))
        (run / "result.json").write_text(json.dumps({"status": "done", "best": {"weighted_f1": f1_of(cell) / 100},
                                                     "diverged": False, "best_epoch": 2, "lr": 1e-4, "seconds": 1.0,
                                                     "convergence": {"still_improving": False}}))
        (run / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "drift": drift_of(cell, e)}) + "\n"
                                                   for e in (1, 2)))
    return out, grid


def test_cells_are_clean_plus_each_side_times_each_component():
    cfg = GridConfig("components", Path("/tmp/x"), {"base": "base"}, ("sst2",), (0, 50), (0,), None)
    grid = cells(cfg)
    assert len(grid) == 11
    assert [c.corrupt for c in grid] == ["none", "bottom:0.5", "bottom:0.5/attn", "bottom:0.5/ffn", "bottom:0.5/norm",
                                         "bottom:0.5/qk", "top:0.5", "top:0.5/attn", "top:0.5/ffn", "top:0.5/norm",
                                         "top:0.5/qk"]
    assert grid[2].name == "components-base-sst2-bottom50-attn-s0" and grid[0].name == "components-base-sst2-0-s0"
    # a paper table's cells keep their names and specs
    table2 = cells(GridConfig("table2", Path("/tmp/x"), {"base": "base"}, ("sst2",), (0, 25), (0,), None))
    assert [c.name for c in table2] == ["table2-base-sst2-0-s0", "table2-base-sst2-bottom25-s0", "table2-base-sst2-top25-s0"]
    assert [c.corrupt for c in table2] == ["none", "bottom:0.25", "top:0.25"]


def test_an_older_grid_json_without_components_still_loads(tmp_path):
    cell = {"table": "table2", "model": "base", "dataset": "sst2", "level": 25, "side": "top", "seed": 0,
            "checkpoint": "base"}
    (tmp_path / "grid.json").write_text(json.dumps({"cells": {"table2-base-sst2-top25-s0": cell}}))
    grid, _ = load_manifest(tmp_path)
    assert grid["table2-base-sst2-top25-s0"].corrupt == "top:0.25"


def test_the_table_and_the_answers(synthetic):
    out = synthetic[0]
    text, _ = report(out, healing_on=False, figures_on=False)
    section = text.split("## Components: which parts of a layer heal")[1]
    assert (out / "components.md").read_text().rstrip() in text
    assert "| corrupted | bottom50 (1-6) | top50 (7-12) |" in section
    assert "| whole layers (all) | 80.10±0.10 | 85.10±0.10 |" in section
    assert "| nothing (clean) | 90.10±0.10 | |" in section
    answers = section.split("### Components: answers")[1]
    cheaper, recover = answers.split("**fine-tuning does not fully recover")
    assert "- attn: holds (2 of 2 hold; 2 of 2 supported" in cheaper
    assert "- ffn: fails (0 of 2 hold; 0 of 2 supported, 2 contradicted" in cheaper
    assert "- qk: holds (2 of 2 hold" in cheaper
    assert "- attn: holds (2 of 2 hold" in recover  # clean > attn: no full recovery
    assert "- qk: fails (0 of 2 hold" in recover  # qk ends above clean: recovered fully
    assert "base SST-2 bottom50: +4." in cheaper  # attn 84 vs all 80


def test_comparisons_pair_by_seed(synthetic):
    out, grid = synthetic
    comps = component_comparisons(component_rows(out, {c.name: c for c in grid}))
    assert len(comps) == 4 * 2 * 2  # 4 components x 2 sides x 2 questions
    attn_bottom = next(c for c in comps if c.claim == "cheaper" and c.better == (50, "bottom", "attn"))
    assert attn_bottom.pairs == 3 and attn_bottom.ours == pytest.approx(4, abs=0.3) and attn_bottom.supported


def test_drift_panels_show_the_corrupted_group_and_layers(synthetic):
    out, grid = synthetic
    panels = drift_panels(out, [c for c in grid if c.seed == 0])
    assert [len(row) for row in panels] == [1, 5, 5]  # clean; bottom x 5 components; top x 5
    title, series, hit = panels[1][3]  # bottom50 norm
    assert title == "bottom50-norm: LayerNorms" and hit == [1, 2, 3, 4, 5, 6]
    assert series[1] == [0.0, 0.001, 0.002] and series[12] == [0.0, 0.0001, 0.0002]  # norm = layer / 10
    assert panels[2][2][0] == "top50-ffn: feed-forward" and panels[2][2][1][12] == [0.0, 0.02, 0.04]
    assert panels[0][0][0] == "clean: whole layer"


def test_the_drift_figure_is_written_and_linked(synthetic):
    pytest.importorskip("matplotlib")
    out = synthetic[0]
    text, _ = report(out, healing_on=False, probes_on=False)
    png = out / "figures" / "components-drift-base-sst2-s0.png"
    assert png.is_file() and png.stat().st_size > 10_000
    assert "(figures/components-drift-base-sst2-s0.png)" in text
    assert "components-probes" not in text  # no saved models, and probes off


@pytest.mark.slow
def test_a_tiny_real_components_grid(tmp_path, minilm_dir, data_root):
    """11 cells of MiniLM on 24 real SST-2 sentences, one epoch, saved; then the report with figures and probes."""
    pytest.importorskip("matplotlib")
    out = tmp_path / "g"
    args = ["components", "--checkpoint", f"minilm={minilm_dir}", "--datasets", "sst2", "--data-root", str(data_root),
            "--limit", "24", "--epochs", "1", "--max-length", "16", "--lr", "1e-4", "--batch-size", "8",
            "--device", "cpu", "--save-models", "--out", str(out)]
    proc = subprocess.run([sys.executable, "-m", "minibert.study.grid", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("weighted F1") == 11
    corruption = json.loads((out / "components-minilm-sst2-top50-qk-s0" / "corruption.json").read_text())
    assert json.dumps(corruption).count("attention.qkv") >= 3  # rows of qkv in layers 4-6
    metrics = (out / "components-minilm-sst2-top50-ffn-s0" / "metrics.jsonl").read_text()
    history = [json.loads(x) for x in metrics.split("\n") if x]
    assert len(history[0]["drift"]["ffn"]) == 6 and min(history[0]["drift"]["ffn"]) > 0
    report_ = subprocess.run([sys.executable, "-m", "minibert.study.grid", "report", str(out), "--no-healing"], cwd=REPO,
                             capture_output=True, text=True, timeout=1200)
    assert report_.returncode == 0, report_.stderr[-3000:]
    section = (out / "components.md").read_text()
    assert "| corrupted | bottom50 (1-3) | top50 (4-6) |" in section
    for component in ("attn", "ffn", "norm", "qk"):
        row = next(line for line in section.splitlines() if line.startswith(f"| {component} |"))
        assert row.count(".") == 2, row  # a number under bottom and top
    assert (out / "figures" / "components-drift-minilm-sst2-s0.png").is_file()
    assert (out / "figures" / "components-probes-minilm-sst2-s0.png").is_file()
    probes = json.loads((out / "probes" / "components-minilm-sst2-top50-attn-s0.json").read_text())
    assert len(probes) == 7 and all(0 <= a <= 1 for a in probes)
