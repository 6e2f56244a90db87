"""`grid compare`: what corruption costs in one grid against another, paired by seed (issue 23)."""
import shutil
import statistics

import pytest
from helpers import assert_one_line_error, write_cell

from minibert.study.cells import GridConfig, cells, write_manifest
from minibert.study.compare import compare
from minibert.study.findings import t975
from minibert.study.grid import main as grid_main

# weighted F1 (%) per setting; seed s adds s * SPREAD[setting] so that the paired differences vary by seed
FINETUNE = {(0, None): 86, (25, "bottom"): 76, (25, "top"): 85, (100, None): 75}
PROBE = {(0, None): 85, (25, "bottom"): 65, (25, "top"): 83, (100, None): 70}
SPREAD = {(0, None): 0.5, (25, "bottom"): -1.0, (25, "top"): 0.0, (100, None): 0.2}
PROBE_SPREAD = {**SPREAD, (25, "bottom"): -2.5}


def make_grid(out, table, f1, spread=SPREAD, limits=None, rising=()):
    cfg = GridConfig(table, out, {"base": "base"}, ("sst2",), (0, 25, 100), (0, 1, 2), None, limits=limits)
    grid = cells(cfg)
    write_manifest(cfg, grid)
    for cell in grid:
        top = (f1[cell.level, cell.side] + cell.seed * spread[cell.level, cell.side]) / 100
        if (cell.level, cell.side, cell.seed) in rising:  # still 2 points up over its last epochs
            write_cell(out / cell.name, [top - 0.01 * (7 - i) for i in range(8)], [0.6 - 0.05 * i for i in range(8)])
        else:
            write_cell(out / cell.name, [top - 0.1, top - 0.01] + [top] * 6, [0.6, 0.2] + [0.1] * 6)
    return out


def cost(f1, spread, setting, seed):
    return (f1[0, None] + seed * spread[0, None]) - (f1[setting] + seed * spread[setting])


def test_the_change_in_cost_is_paired_by_seed_with_its_interval(tmp_path):
    a = make_grid(tmp_path / "t2", "table2", FINETUNE)
    b = make_grid(tmp_path / "t4", "table4", PROBE, PROBE_SPREAD, rising={(25, "top", 1)})
    text = compare(a, b)
    assert "Table 2: fine-tuned" in text and "Table 4: linear probe" in text
    probe = [cost(PROBE, PROBE_SPREAD, (25, "bottom"), s) for s in range(3)]
    finetune = [cost(FINETUNE, SPREAD, (25, "bottom"), s) for s in range(3)]
    diffs = [p - f for p, f in zip(probe, finetune)]
    mean, half = statistics.fmean(diffs), t975(2) * statistics.stdev(diffs) / 3 ** 0.5
    bottom = next(line for line in text.splitlines() if line.startswith("| bottom 3 of 12 layers"))
    assert bottom == (f"| bottom 3 of 12 layers | {statistics.fmean(finetune):+.2f} | {statistics.fmean(probe):+.2f} "
                      f"| {mean:+.2f} [{mean - half:+.2f}, {mean + half:+.2f}] | 3 |")
    assert mean == pytest.approx(11.5) and half > 0  # the probe loses 10 points more at seed 0, 1.5 more per seed
    top = next(line for line in text.splitlines() if line.startswith("| top 3 of 12 layers"))
    assert "unsettled" in top and "unsettled" not in bottom  # a rising run in B's top cell
    assert text.index("| bottom") < text.index("| top") < text.index("| all 12 layers")
    shutil.rmtree(a / "table2-base-sst2-bottom25-s2")  # seed 2 unfinished in A: both costs over seeds 0 and 1
    bottom = next(line for line in compare(a, b).splitlines() if line.startswith("| bottom 3 of 12 layers"))
    assert bottom.startswith(f"| bottom 3 of 12 layers | {statistics.fmean(finetune[:2]):+.2f} | "
                             f"{statistics.fmean(probe[:2]):+.2f} | {statistics.fmean(diffs[:2]):+.2f} [")


def test_a_budget_grid_needs_the_size_named(tmp_path, capsys):
    a = make_grid(tmp_path / "budget", "table2", FINETUNE, limits=(100, 400))
    b = make_grid(tmp_path / "t4", "table4", PROBE, PROBE_SPREAD)
    assert_one_line_error(grid_main(["compare", str(a), str(b)]), capsys.readouterr().err)
    assert grid_main(["compare", str(a), str(b), "--model-a", "base n=400", "--md", str(tmp_path / "c.md")]) == 0
    assert "| all 12 layers |" in capsys.readouterr().out and (tmp_path / "c.md").is_file()
    assert_one_line_error(grid_main(["compare", str(a), str(b), "--model-a", "base n=999"]), capsys.readouterr().err)
    assert_one_line_error(grid_main(["compare", str(a), str(b), "--datasets", "rte"]), capsys.readouterr().err)
    assert_one_line_error(grid_main(["compare", str(a), str(tmp_path)]), capsys.readouterr().err)  # no grid.json
