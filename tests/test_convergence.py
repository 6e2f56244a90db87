"""A run knows whether it stopped learning, from its validation metric and train loss, never its test metric; the
report counts, sets apart and warns about those that did not; the data-budget axis runs each cell at several sizes
and draws F1 against examples."""
import json
import random
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import history, write_cell

from minibert.study.budget import budget_panels, budget_section
from minibert.study.cells import GridConfig, cells, write_manifest
from minibert.study.grid import cell_config, grid_config
from minibert.study.report import convergence_warning, report
from minibert.study.summary import Row, run_facts
from minibert.training.config import TrainConfig
from minibert.training.convergence import convergence, describe
from minibert.training.rundir import read_result

REPO = Path(__file__).resolve().parent.parent
F1 = [.70, .80, .84, .85, .85, .86, .85, .86, .85, .86]
PLATEAU = history(F1, [.6, .4, .3, .2, .12, .07, .05, .04, .035, .03], val=F1)
UP = [.50, .55, .60, .63, .66, .69, .72, .74, .76, .78]
RISING = history(UP, [.68, .66, .63, .60, .57, .54, .51, .48, .45, .42], val=UP)


def test_a_plateau_has_converged_and_a_rising_curve_has_not():
    flat = convergence(PLATEAU, "weighted_f1", num_labels=2)
    assert not flat["still_improving"] and flat["window"] == 3 and flat["basis"] == "validation"
    assert flat["gain"] == pytest.approx(0.0033333, abs=1e-6)  # (.86+.85+.86)/3 - (.85+.86+.85)/3
    assert flat["train_loss_vs_chance"] == pytest.approx(0.03 / 0.693147, abs=1e-5)
    rising = convergence(RISING, "weighted_f1", num_labels=2)
    assert rising["still_improving"] and rising["gain"] == pytest.approx(0.07, abs=1e-6)
    assert "STILL IMPROVING" in describe(rising) and describe(flat) == "converged"


def test_the_flag_reads_the_validation_metric_never_the_test_one():
    fitted = [.08, .07, .06, .05, .05, .05]  # a fitted model: the train loss says nothing either way
    test_rising = history([.60, .62, .64, .66, .68, .70], fitted, val=[.80] * 6)
    val_rising = history([.80] * 6, fitted, val=[.60, .62, .64, .66, .68, .70])
    assert not convergence(test_rising, "weighted_f1", 2)["still_improving"]
    assert convergence(val_rising, "weighted_f1", 2)["still_improving"]


def test_a_rise_within_the_noise_of_a_small_validation_set_is_not_learning():
    fitted = [.05] * 6
    # 100 validation examples: a mean rise of exactly one example per epoch is one borderline example flipping
    one = history([.8] * 6, fitted, val=[.85, .85, .85, .86, .86, .86])
    c = convergence(one, "weighted_f1", 2, num_val=100)
    assert c["gain_examples"] == pytest.approx(1.0) and not c["still_improving"]
    # +5 points on average, but the epochs jump by 10 points: within the noise between epochs (t < 2.132)
    noisy = history([.8] * 6, fitted, val=[.70, .80, .60, .80, .65, .80])
    c = convergence(noisy, "weighted_f1", 2, num_val=50)
    assert c["gain"] == pytest.approx(0.05) and c["gain_t"] < 2.132 and not c["still_improving"]
    # the same rise with a steady climb is learning
    steady = history([.8] * 6, fitted, val=[.60, .62, .64, .66, .68, .70])
    c = convergence(steady, "weighted_f1", 2, num_val=50)
    assert c["gain_examples"] == pytest.approx(3.0) and c["gain_t"] > 2.132 and c["still_improving"]
    assert "validation metric +6.00 points, 3 examples" in describe(c)


def test_a_falling_loss_counts_only_while_the_model_has_not_fit_its_data():
    # the metric is flat in both; the loss falls by half in both, but only the first is still far from fitted
    learning = history([.6] * 6, [.69, .66, .63, .45, .40, .35], val=[.6] * 6)
    memorising = history([.9] * 6, [.08, .07, .06, .03, .02, .01], val=[.9] * 6)
    assert convergence(learning, "weighted_f1", 2)["still_improving"]
    assert not convergence(memorising, "weighted_f1", 2)["still_improving"]


def test_without_a_validation_set_only_a_fitted_model_has_converged():
    """--select-on test runs hold no validation set: the train loss alone decides, and a slowly falling loss far
    from fitted (the 2-epoch runs of results/minilm-short) is still learning, whatever the test set says."""
    slow = history([.45, .66], [.684, .642])  # test F1 +21 points, train loss -6%
    c = convergence(slow, "weighted_f1", 2)
    assert c["basis"] == "train loss" and c["still_improving"]
    fitted = convergence(history([.9] * 6, [.05, .04, .04, .04, .04, .04]), "weighted_f1", 2)
    assert not fitted["still_improving"] and describe(fitted) == "converged (train loss only: no validation set)"


def test_short_runs_compare_halves_and_one_epoch_cannot_have_converged():
    two = convergence(history([.44, .64], [.68, .62], val=[.44, .64]), "weighted_f1", 2)
    assert two["window"] == 1 and two["gain"] == pytest.approx(0.2) and two["still_improving"]
    one = convergence(history([.5], [.7], val=[.5]), "weighted_f1", 2)
    assert one["still_improving"] and one["gain"] is None and "one epoch" in describe(one)


def committed_cells(study: str = "results/minilm") -> list[Path]:
    try:
        listing = subprocess.run(["git", "ls-files", study], cwd=REPO, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"needs a git checkout ({e})")
    return sorted({REPO / Path(p).parent for p in listing.stdout.split() if p.endswith("/metrics.jsonl")})


def test_changing_only_the_test_metrics_of_a_committed_cell_does_not_change_its_flag(tmp_path):
    """Every committed cell of the converged study, its test metrics in metrics.jsonl replaced by random ones (and
    a result.json flag made by the old, test-reading rule dropped): the report's flag stays what it was."""
    cells_ = committed_cells()
    if not cells_:
        pytest.skip("no committed cell of results/minilm")
    rng, flagged = random.Random(0), 0
    for cell in cells_:
        result = read_result(cell)
        before = run_facts(cell, result)["still_improving"]
        copy = tmp_path / cell.name
        shutil.copytree(cell, copy)
        records = [json.loads(line) for line in (copy / "metrics.jsonl").read_text().splitlines()]
        for r in records:
            r.update({k: rng.random() for k in ("weighted_f1", "macro_f1", "accuracy", "loss", "top_class_fraction")})
        (copy / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        assert run_facts(copy, read_result(copy))["still_improving"] == before, cell.name
        flagged += bool(before)
    assert 0 < flagged < len(cells_)  # both kinds of cell were tried


# ---- the report ------------------------------------------------------------------------------

def f1_at(cell) -> float:
    """Bottom 25% below all layers at 100 examples, above it at 400: the sign turns with the data."""
    base = {0: 85, 100: 70}.get(cell.level, 80 if cell.side == "top" else (65 if cell.limit == 100 else 75))
    return (base + 0.3 * cell.seed) / 100


@pytest.fixture(scope="module")
def budget(tmp_path_factory):
    out = tmp_path_factory.mktemp("budget")
    cfg = GridConfig("table2", out, {"base": "base"}, ("sst2",), (0, 25, 100), (0, 1, 2), None, limits=(100, 400))
    grid = cells(cfg)
    write_manifest(cfg, grid)
    for cell in grid:
        top = f1_at(cell)
        # the bottom-25% runs at 100 examples were still rising when they stopped; every other run is flat
        rising = cell.limit == 100 and cell.side == "bottom"
        scores = [top - 0.01 * (7 - i) for i in range(8)] if rising else [top - 0.1, top - 0.01] + [top] * 6
        losses = [0.6 - 0.2 * i / 7 for i in range(8)] if rising else [0.6, 0.2] + [0.1] * 6
        write_cell(out / cell.name, scores, losses, num_train=cell.limit)
    return report(out, healing_on=False), out


def test_budget_cells_are_named_by_size_and_run_at_it(tmp_path):
    cfg = GridConfig("table2", tmp_path, {"m": "base"}, ("sst2",), (0,), (0,), None, epochs=(30, 10),
                     limits=(250, 1000), train=TrainConfig(test_limit=1000))
    first, second = cells(cfg)
    assert (first.name, second.name) == ("table2-m-sst2-n250-0-s0", "table2-m-sst2-n1000-0-s0")
    run = cell_config(cfg, first)
    assert (run.limit, run.test_limit, run.epochs) == (250, 1000, 30)
    assert cell_config(cfg, second).epochs == 10


def test_budget_flags_are_checked(tmp_path):
    args = dict(quick=False, checkpoint=None, models=None, datasets="sst2", levels=None, data_root="hub",
                out=str(tmp_path), seeds="0", split="paper", lr=None, batch_size=None, max_length=None, limit=None,
                device=None, precision="auto", save_models=False, recipe="hf-trainer", select_on="test",
                test_limit=None)
    with pytest.raises(ValueError, match="one per size of --limits"):
        grid_config("table2", SimpleNamespace(**args, limits="250,1000", epochs="30,10,5"))
    with pytest.raises(ValueError, match="--limit and --limits"):
        grid_config("table2", SimpleNamespace(**{**args, "limit": 100}, limits="250", epochs=None))


def test_the_report_sets_unsettled_comparisons_apart(budget):
    (text, rows), _ = budget
    at100 = text.split("### Findings: Table 2: fine-tuned, [CLS] pooling, base n=100")[1].split("###")[0]
    # 0 vs bottom25 and bottom25 vs 100 and top25 vs bottom25 rest on the rising runs (every seed's): with them set
    # aside no seed is left, so not settled, whatever their intervals say (each a constant difference: width 0)
    assert "| 2 | SST-2 | bottom25 vs 100% | -5.00 | [-5.00, -5.00] | [-5.00, -5.00] | 3 | not settled (without " \
           "bottom25 seeds 0, 1, 2 (still improving): no seed left) |" in at100
    assert re.search(r"\| 1 \| 2 \| 0 \| 0 \| 1 \|", at100)  # claim 1: 0 vs bottom25 not settled, the others cost
    at400 = text.split("### Findings: Table 2: fine-tuned, [CLS] pooling, base n=400")[1].split("\n## ")[0]
    assert "still improving" not in at400 and "| 2 | SST-2 | bottom25 vs 100% | +5.00 |" in at400
    assert "Convergence: 3 of 24 finished runs were still improving" in text
    assert "Not converged" not in text  # 3 of 24 is less than a fifth


def test_the_report_warns_loudly_when_more_than_a_fifth_still_improve():
    def row(done, improving):
        return Row("table2", "base", 0, "", "sst2", done=done, improving=improving)
    rows = [row(3, 1), row(2, 1)]
    assert convergence_warning(rows).startswith("**Not converged: 2 of 5 finished runs (40%) were still improving")
    assert convergence_warning([row(5, 1)]) is None


def test_the_budget_section_and_figure(budget):
    (text, rows), out = budget
    section = text.split("## Data budget")[1].split("\n## ")[0]
    assert "| setting | 100 examples | 400 examples |" in section  # no validation set: nothing held out
    assert "| seeds | 0-2 | 0-2 |" in section
    assert "| epochs | 8 | 8 |" in section  # every run trained its 8
    assert "| bottom 3 of 12 layers | 65.30±0.30 (3 imp) | 75.30±0.30 |" in section
    assert "| all 12 layers | 70.30±0.30 | 70.30±0.30 |" in section
    assert "| majority class | 40.00 | 40.00 |" in section
    # the recovery along the data axis: the cost of each corruption per size, and bottom against all re-initialised
    assert ("| cost of bottom 3 of 12 layers | +20.00 [+20.00, +20.00] not settled (without bottom25 seeds 0, 1, 2 "
            "(still improving): no seed left) | +10.00 [+10.00, +10.00] costs | -10.00 [-10.00, -10.00] not settled "
            "(without base n=100 bottom25 seeds 0, 1, 2 (still improving): no seed left) |") in section
    assert ("| cost of all 12 layers | +15.00 [+15.00, +15.00] costs | +15.00 [+15.00, +15.00] costs | +0.00 "
            "[+0.00, +0.00] equivalent within ±2 |") in section
    assert "| bottom 3 of 12 layers - all 12 layers | -5.00 [-5.00, -5.00] not settled (without bottom25 seeds 0, 1, " \
           "2 (still improving): no seed left) | +5.00 [+5.00, +5.00] gains |" not in section  # positive is costs
    assert "| bottom 3 of 12 layers - all 12 layers | -5.00 [-5.00, -5.00] not settled (without bottom25 seeds 0, 1, " \
           "2 (still improving): no seed left) | +5.00 [+5.00, +5.00] costs |" in section
    assert "Does the advantage of pre-trained upper layers (bottom 3 of 12 layers - all 12 layers" in section
    assert "![data budget](figures/budget.png)" in text
    assert (out / "figures" / "budget.png").read_bytes()[:4] == b"\x89PNG"


def test_the_budget_section_shows_only_what_was_run_at_several_sizes():
    """A dataset or a setting run at one size has no axis; a pending cell's unknown layers do not relabel a
    setting that a finished size names by its layers."""
    def row(dataset, level, side, limit, n_layers, text="80.00"):
        return Row("table2", f"minilm n={limit}", level, side, dataset, limit=limit, n_layers=n_layers, text=text,
                   by_seed={} if text == "pending" else {0: 80.0})
    rows = [row("sst2", 0, "", 250, 0), row("sst2", 0, "", 1000, 0),
            row("sst2", 25, "bottom", 250, 2), row("sst2", 25, "bottom", 1000, 2),
            row("sst2", 25, "bottom", 4000, None, "pending"),  # no run yet: its layers cannot be read
            row("sst2", 50, "bottom", 1000, 3),  # the Table 2 layout's other levels, at one size only
            row("sst2", 100, "", 250, 6), row("sst2", 100, "", 1000, 6),
            row("ag_news", 0, "", 1000, 0), row("ag_news", 25, "bottom", 1000, 2)]
    section = budget_section(rows)
    assert "| bottom 2 of 6 layers | 80.00 | 80.00 | pending |" in section
    assert "bottom 25%" not in section and "bottom 3 of 6" not in section
    assert "AG News" not in section and "### minilm, SST-2" in section
    assert [p[0] for p in budget_panels(rows)] == ["minilm, SST-2"]
    assert budget_section([r for r in rows if r.dataset == "ag_news"]) is None


def test_a_grid_of_one_size_has_no_data_budget(tmp_path):
    """--limits 500 alone (Table 5's layout) sizes the runs; there is no axis to tabulate or draw."""
    cfg = GridConfig("table2", tmp_path, {"base": "base"}, ("sst2",), (0, 25), (0,), None, limits=(500,))
    grid = cells(cfg)
    write_manifest(cfg, grid)
    for cell in grid:
        write_cell(tmp_path / cell.name, [.80, .85, .85, .85, .85, .85], [.6, .3, .05, .04, .04, .04])
    text, _ = report(tmp_path, healing_on=False)
    assert "## Data budget" not in text and "budget.png" not in text
    assert "| base n=500 | 0% | 85.00" in text
    assert "| base n=500 | majority class | 40.00 |  |" in text  # the floor beside every table's rows


def test_the_budget_table_says_how_many_epochs_runs_that_stop_when_converged_trained():
    def row(limit, seed_epochs, until_converged):
        return Row("table2", f"base n={limit}", 0, "", "sst2", done=len(seed_epochs), limit=limit, max_epochs=20,
                   by_seed=dict(enumerate([80.0] * len(seed_epochs))), epochs_run=seed_epochs,
                   until_converged=until_converged)
    section = budget_section([row(250, [20, 20, 20], False), row(16000, [7, 12, 20], True)])
    assert "| epochs | 20 | 7-20 (until converged, at most 20) |" in section
