"""The report on a synthetic grid folder whose numbers are chosen so that each of the paper's claims is known to
hold, fail or be mixed; the paired interval against a hand computation; the paper's errata against PAPER.txt."""
import csv
import json
import math
import re
import shutil

import pytest
from helpers import write_cell

from minibert.study.cells import GridConfig, cells, write_manifest
from minibert.study.findings import paired_interval, t975
from minibert.study.healing import render_healing
from minibert.study.paper import ERRATA, TABLE1, TABLES, errata_of, paper_value
from minibert.study.report import level_panels, render_figures, report, write_csv
from minibert.study.summary import Row, Summary

SEEDS = (0, 1, 2)


def f1_of(cell) -> float:
    """Claim 1 holds (clean 90 above every corrupted cell), claim 2 is mixed (25 -> 50 -> 75 gets better on both
    sides, 0 -> 25 and 75 -> 100 worse), claim 3 fails (top is 3 points below bottom at every level)."""
    noise = 0.2 * ((7 * cell.seed + cell.level) % 3)  # per seed and cell, so the paired differences vary
    if cell.level == 0:
        return 90 + noise
    if cell.level == 100:
        return 70 + noise
    return 80 + cell.level / 10 - (3 if cell.side == "top" else 0) + noise


def write_run(run_dir, f1: float, config: dict, **result):
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"args": {"seed": 0}, **config}))
    # every field a finished result.json has (a result without them reads as damaged)
    (run_dir / "result.json").write_text(json.dumps({"status": "done", "best": {"weighted_f1": f1 / 100},
                                                     "diverged": False, "best_epoch": 1, "lr": 2e-5,
                                                     "seconds": 1.0, "majority_f1": 0.5, **result}))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    cfg = GridConfig("table2", out, {"base": "base"}, ("sst2", "imdb"), (0, 25, 50, 75, 100), SEEDS, None)
    grid = cells(cfg)
    write_manifest(cfg, grid)
    for cell in grid:
        flags = {}
        if cell.name == "table2-base-imdb-100-s2":
            flags = {"diverged": True}
        if cell.name == "table2-base-imdb-bottom75-s1":
            flags = {"collapsed": True}
        sizes = {"num_train": 100, "num_test": 50}
        # sst2 records its sizes in result.json (newer runs), which wins over config.json
        result_sizes = {"num_train": 56000, "num_test": 12000} if cell.dataset == "sst2" else {}
        write_run(out / cell.name, f1_of(cell), sizes, **result_sizes, **flags)
    text, rows = report(out, healing_on=False)
    write_csv(rows, out / "report.csv")
    return text, rows, list(csv.DictReader(open(out / "report.csv"))), out


def test_the_three_line_answer_counts_each_claims_verdict_words(synthetic):
    text = synthetic[0]
    assert "equivalent within ±2** (its 90% interval lies inside [-2, +2]" in text  # the margin, declared once
    findings = text.split("\n## Findings\n")[1].split("\n## Data\n")[0]
    lines = [line for line in findings.splitlines() if re.match(r"\d\. \*\*", line)]
    assert len(lines) == 3
    # claim 1: 7 corrupted settings x 2 datasets, all 10 or more points below clean over 3 seeds: each costs
    assert "of 14 comparisons, 14 costs, 0 gains, 0 equivalent within ±2, 0 not settled" in lines[0]
    assert "paper (base): 14 of 14 in the claim's direction" in lines[0]
    # claim 2: 4 steps per side x 2 sides x 2 datasets; 25->50 and 50->75 go up (they gain), the others cost
    assert "of 16 comparisons, 8 costs, 8 gains, 0 equivalent within ±2, 0 not settled" in lines[1]
    assert "paper (base): 16 of 16" in lines[1]
    assert "of 6 comparisons, 0 costs, 6 gains, 0 equivalent within ±2, 0 not settled" in lines[2]
    assert "paper (base): 6 of 6" in lines[2]
    assert "| 3 | SST-2 | top25 vs bottom25 | -3.00 | [-3.00, -3.00] | [-3.00, -3.00] | 3 | gains | base +1.56" \
        in findings
    assert "holds" not in findings and "supported" not in findings  # no word stronger than an interval


def test_verdict_words_by_hand():
    """costs / gains from the 95% interval; equivalent within ±m when the 90% interval lies inside [-m, +m] (two
    one-sided tests); not settled when it spans a bound or with one seed (runs still improving: the next test)."""
    from minibert.study.findings import paired, word
    close = paired({s: 80.0 + d for s, d in enumerate([0.5, -0.3, 0.2, 0.9, -0.6])}, {s: 80.0 for s in range(5)})
    diffs = [0.5, -0.3, 0.2, 0.9, -0.6]
    sd = math.sqrt(sum((d - 0.14) ** 2 for d in diffs) / 4)
    assert close.pairs == 5 and close.mean == pytest.approx(0.14)
    assert (close.lo90, close.hi90) == pytest.approx((0.14 - 2.132 * sd / math.sqrt(5), 0.14 + 2.132 * sd / math.sqrt(5)))
    assert (close.lo, close.hi) == pytest.approx((0.14 - 2.776 * sd / math.sqrt(5), 0.14 + 2.776 * sd / math.sqrt(5)))
    assert -1 < close.lo90 and close.hi90 < 1  # inside ±1 ...
    assert word(close, margin=1.0) == "equivalent within ±1"
    assert word(close, margin=0.5) == "not settled"  # ... but it spans +0.5
    wide = paired({0: 84.0, 1: 78.0, 2: 81.0}, {0: 80.0, 1: 80.0, 2: 80.0})  # +1 [-6.5, +8.5]: spans ±2
    assert word(wide, margin=2.0) == "not settled"
    assert word(paired({0: 85.0, 1: 86.0, 2: 85.5}, {0: 80.0, 1: 80.5, 2: 80.2}), 2.0) == "costs"
    assert word(paired({0: 75.0, 1: 76.0, 2: 75.5}, {0: 80.0, 1: 80.5, 2: 80.2}), 2.0) == "gains"
    assert word(paired({0: 85.0}, {0: 80.0}), 2.0) == "not settled"  # one seed: no interval


def test_a_run_still_improving_is_set_aside_and_the_word_stands_only_if_the_rest_say_it():
    """A comparison pairing a run still improving is said only when the seeds without that run say the same word on
    their own; else not settled. Either way the text names the run and what the seeds without it say."""
    from minibert.study.findings import Comparison, paired, without
    better, worse = {0: 85.0, 1: 88.0, 2: 86.0}, {0: 80.0, 1: 80.0, 2: 80.0}  # +6.33 [+2.54, +10.13]: costs

    def comparison(improving):
        p = paired(better, worse)
        return Comparison(claim=1, table="table2", model="m", dataset="sst2", better=(0, ""), worse=(25, "top"),
                          ours=p.mean, lo=p.lo, hi=p.hi, lo90=p.lo90, hi90=p.hi90, pairs=p.pairs, improving=improving,
                          converged=without(better, worse, improving) if improving else None)  # as compare_rows

    shaky = comparison((("top25", 2),))  # without seed 2: +6.50 over 2 seeds, [-12.56, +25.56]
    assert shaky.word() == "not settled" and shaky.unsettled()
    assert shaky.why() == "without top25 seed 2 (still improving): +6.50 [-12.56, +25.56] over 2 seeds, not settled"
    for s in range(3, 8):  # five more seeds as clear as the first three: without seed 2 the rest still say costs
        better[s], worse[s] = 86.0 + s % 2, 80.0
    steady = comparison((("top25", 2),))
    assert steady.word() == "costs" and not steady.unsettled()
    assert steady.why().startswith("without top25 seed 2 (still improving): ") and steady.why().endswith(
        "over 7 seeds, costs")
    assert comparison(()).word() == "costs" and comparison(()).why() == ""  # no run still improving: no note


def test_claims_in_the_csv(synthetic):
    rows = {(r["dataset"], r["level"], r["side"]): r for r in synthetic[2]}
    bottom25 = rows[("sst2", "25", "bottom")]
    assert float(bottom25["claim3"]) == pytest.approx(-3)  # top and bottom share the noise of a seed and level
    assert float(bottom25["claim3_hi"]) < 0
    assert float(bottom25["claim3_paper"]) == pytest.approx(91.72 - 90.16)
    assert bottom25["claim3_verdict"] == "gains" and bottom25["claim1_verdict"] == "costs"
    assert rows[("sst2", "25", "top")]["claim3"] == ""  # claim 3 sits on the bottom cell only
    whole = rows[("sst2", "100", "")]
    assert float(whole["claim2_bottom"]) > 0 and float(whole["claim2_top"]) > 0  # 75 -> 100 gets worse on both sides
    assert float(whole["claim2_bottom_paper"]) == pytest.approx(82.18 - 75.17)
    assert float(rows[("imdb", "50", "top")]["claim2_top_hi"]) < 0  # 25 -> 50 got better: contradicted
    assert float(rows[("imdb", "50", "top")]["claim1_lo"]) > 0


def test_sizes_recipe_selection_and_flags(synthetic):
    text, rows, _, out = synthetic
    assert "| table2 | IMDB | 100 / 50 ‡ | 25,000 / 5,000 |" in text
    assert "| table2 | SST-2 | 56,000 / 12,000 | 56,000 / 12,000 |" in text
    small = {r.dataset: r.small for r in rows}
    assert small == {"imdb": True, "sst2": False}
    imdb_clean = next(r for r in rows if (r.dataset, r.level) == ("imdb", 0))
    assert imdb_clean.text.startswith("90.") and "‡" in text.split("## Tables")[1]
    assert "Training recipe: `bert`" in text and "Model selection: `test`" in text and "Selection on test" in text
    assert "Runs flagged: 1 diverged" in text and "1 collapsed" in text
    assert "(1 div)" in text and "(1 col)" in text
    assert "48 cells: 48 done, 0 partial, 0 pending; 1 diverged runs. 1 collapsed runs." in text


def test_a_damaged_result_is_named_and_counted_as_partial(synthetic, tmp_path):
    """A result.json damaged from outside (a bad copy) is no finished run: the report says which cell and how to
    redo it, instead of only moving one cell from done to partial."""
    out = tmp_path / "grid"
    shutil.copytree(synthetic[3], out)
    (out / "table2-base-sst2-top25-s1" / "result.json").write_text('{"status": "done", ')
    text, _ = report(out, healing_on=False, figures_on=False)
    assert "48 cells: 47 done, 1 partial, 0 pending" in text
    assert ("Counted as partial because their result.json cannot be read: table2-base-sst2-top25-s1; rerun the grid "
            "command, which sets each aside and reruns that cell.") in text
    assert "cannot be read" not in synthetic[0]


def test_paired_interval_by_hand():
    mean, lo, hi, n = paired_interval({0: 3.0, 1: 5.0, 2: 4.0}, {0: 1.0, 1: 2.0, 2: 1.0, 3: 9.0})
    diffs = [2.0, 3.0, 3.0]  # seed 3 has no pair
    sd = math.sqrt(sum((d - 8 / 3) ** 2 for d in diffs) / 2)
    assert n == 3 and mean == pytest.approx(8 / 3)
    assert (lo, hi) == pytest.approx((8 / 3 - 4.303 * sd / math.sqrt(3), 8 / 3 + 4.303 * sd / math.sqrt(3)))
    assert paired_interval({0: 3.0}, {0: 1.0}) == (2.0, None, None, 1)
    assert paired_interval({0: 3.0}, {1: 1.0}) == (2.0, None, None, 0)  # no common seed: difference of means
    assert t975(1) == 12.706 and t975(11) == t975(10) and t975(100) == 2.042


def test_summary_counts_collapsed_runs():
    assert Summary(2, [90.0, 92.0], [], 0, collapsed=1).text() == "91.00±1.41 (1 col)"


def test_table1_and_errata_match_the_paper(data_root):
    paper = (data_root.parent / "PAPER.txt").read_text()
    titles = {"sst2": "SST-2", "imdb": "IMDB", "ag_news": "AG News", "emotion": "Emotion", "dbpedia": "DBPedia",
              "tfnt": "TFNT"}
    for name, (train, test) in TABLE1.items():
        assert re.search(rf"^{titles[name]} \d+ {train // 1000}k {test // 1000}k ", paper, re.M), name
    same = [k for k, v in TABLES["table3"].values.items() if k[0] == "large" and k[3] == "imdb"
            and TABLES["table3"].values[("base", *k[1:])] == v]
    assert len(same) == 7 and len(ERRATA["E1"].cells) == 7 and "7 of 8" in ERRATA["E1"].text
    assert errata_of("table3", "large", 25, "bottom", "imdb") == []
    assert [paper_value(*c) for c in ERRATA["E2"].cells] == [30.05] * 3
    assert "(54.22%) outperforming the undamaged model (55.84%)" in paper and "on the MRPC dataset" in paper
    assert [paper_value(*c) for c in ERRATA["E3"].cells] == [55.84, 54.22, 53.71, 53.34]  # RTE's, not MRPC's
    assert paper_value("table5", "base", 0, None, "mrpc") == 76.38
    assert "marked by convergence failures and low metrics" in paper
    assert [paper_value(*c) for c in ERRATA["E4"].cells] == [33.97, 16.98, 16.98]


def test_a_figure_per_dataset_is_written_and_linked(synthetic):
    text, rows, _, out = synthetic
    section = text.split("\n## Figures\n")[1].split("\n## Data\n")[0]
    links = re.findall(r"!\[[^\]]*\]\((figures/table2-\w+\.png)\)", section)
    assert links == ["figures/table2-sst2.png", "figures/table2-imdb.png"]
    assert all((out / link).read_bytes()[:4] == b"\x89PNG" for link in links)
    panels = level_panels(rows, "table2", "sst2")
    (model, ours, paper, majority), = panels
    # x is the number of layers corrupted: BERT-base's 25% is 3 of 12 layers
    assert model == "base" and [x for x, _ in ours["bottom"]] == [0, 3, 6, 9, 12]
    assert len(ours["top"][2][1]) == len(SEEDS)  # every seed's F1 at top 50%, for the band
    assert paper["top"][1] == (3, 91.72)
    assert majority == 50.0  # the majority-class baseline line, from result.json's majority_f1


def test_without_matplotlib_the_figures_are_a_one_line_note(synthetic, tmp_path, monkeypatch):
    import minibert.study.figures

    def no_matplotlib():
        raise ImportError("figures need matplotlib: pip install 'minibert[plot]' (or pip install matplotlib)")
    monkeypatch.setattr(minibert.study.figures, "_pyplot", no_matplotlib)
    text = render_figures(tmp_path, synthetic[1])
    assert text.splitlines()[-1] == "(no figures: figures need matplotlib: pip install 'minibert[plot]' (or pip " \
                                    "install matplotlib))"
    assert not (tmp_path / "figures").exists()


def healing_result(floor: bool) -> dict:
    result = {"layers": [0, 1, 2], "before": [1.0, 0.1, 0.5], "after": [1.0, 0.6, 0.9], "n": 40,
              "corrupt": "bottom:0.5", "corrupted_layers": [1]}
    if floor:
        result.update(floor=[0.01, -0.02, 0.03], floor_after=None, estimator="debiased")
    return result


def test_healing_table_shows_the_floor_beside_each_layer():
    results = {"bottom50": healing_result(True), "top50": healing_result(False)}
    text = render_healing(("table2", "minilm", "sst2", 0), results)
    assert "Debiased linear CKA" in text and "floor = " in text
    assert "| layer | bottom 1 of 2 | top 1 of 2 | floor bottom 1 of 2 |" in text  # settings named by layers
    assert "| 1 | 0.10 -> 0.60 * | 0.10 -> 0.60 * | -0.02 |" in text
    old = render_healing(("table2", "minilm", "sst2", 0), {"bottom50": healing_result(False)})
    assert "No floor" in old and "| 1 | 0.10 -> 0.60 * |" in old and "Linear CKA" in old
    with_after = {**healing_result(True), "floor_after": [0.0, 0.05, 0.1]}
    assert "| 2 | 0.50 -> 0.90 | 0.03 -> 0.10 |" in render_healing(("table2", "m", "sst2", 0), {"bottom50": with_after})
    zero = {**healing_result(True), "floor": [0.0, -0.004, 0.001]}  # debiased CKA of shuffled rows: 0 by design
    text = render_healing(("table2", "m", "sst2", 0), {"bottom50": zero, "100": {**zero, "corrupted_layers": [1, 2]}})
    assert "| layer | bottom 1 of 2 | all 2 layers |" in text and "floor bottom" not in text
    assert "Every floor here is 0.00" in text and "Reference: all 2 layers re-initialised" in text


def test_paper_counts_name_the_comparisons_that_rest_on_errata():
    from minibert.study.findings import comparisons, tally
    rows = [Row("table5", "large", lv, side, "rte", by_seed={0: 50.0 - lv / 10})
            for lv, side in ((0, ""), (50, "bottom"), (50, "top"), (100, ""))]
    t = tally(c for c in comparisons(rows) if c.claim == 1)
    assert t["cells"] == 3 and t["held"] == 3
    assert t["paper"]["large"] == (3, 3, 2)  # bottom50 and 100% are E2's 30.05


def test_the_report_and_the_cka_command_say_what_healed_in_the_same_words():
    from minibert.study.layer_cka import format_healing, healed
    result = healing_result(True)
    line = healed(result)
    assert line == "re-initialised layers 1-1: CKA 0.10 -> 0.60; the other layers: 0.50 -> 0.90; last layer 0.50 -> 0.90"
    assert f"- bottom 1 of 2: {line}" in render_healing(("table2", "minilm", "sst2", 0), {"bottom50": result})
    assert format_healing(result).endswith(f"Healed: {line}")


def test_healing_across_sizes_reads_each_setting_against_the_all_random_model():
    from minibert.study.healing import render_healing_by_size

    def result(after, hit):
        return {"layers": [0, 1, 2, 3, 4], "before": [1.0, .9, .5, .3, .2], "after": after, "n": 40,
                "corrupt": "x", "corrupted_layers": hit}
    by_size = {250: {"bottom25": result([1.0, .5, .5, .4, .4], [1]), "100": result([1.0, .5, .5, .5, .5], [1, 2, 3, 4])},
               4000: {"bottom25": result([1.0, .7, .9, .9, .8], [1]), "100": result([1.0, .6, .6, .7, .7], [1, 2, 3, 4])}}
    text = render_healing_by_size(("table2", "minilm", "sst2", 0), by_size)
    assert "#### Healing against task data: minilm on SST-2 (Table 2, seed 0)" in text
    assert "| setting: layers | 250 examples | 4,000 examples |" in text
    assert "| bottom 1 of 4: re-initialised (1) | 0.50 (0.50) | 0.70 (0.60) |" in text
    assert "| bottom 1 of 4: the others (2-4) | 0.43 (0.50) | 0.87 (0.67) |" in text
    assert "| all 4 layers: re-initialised (1-4) | 0.50 | 0.65 |" in text  # the reference itself: no brackets
    assert render_healing_by_size(("table2", "m", "sst2", 0), {250: {"top25": {**result(None, [4])}}}) == ""


# ---- more seeds where three could not decide, and a larger size: results/minilm/table2's layout ----------------

BASE = {250: 80.0, 1000: 86.0, 16000: 92.0}
ADVANTAGE = {250: 0.0, 1000: 0.0, 16000: 4.0}  # bottom 25% - all layers: nothing at first, 4 points at 16,000


def jitter(seed: int, k: int) -> float:
    return 0.1 * ((3 * seed + k) % 5 - 2)


def study_f1(cell) -> float:
    """A random top 25% costs nothing (equivalent within ±2 over 10 seeds); a random bottom 8 points; the
    pre-trained layers above a random bottom add nothing until 16,000 examples, then 4 points."""
    clean, bottom = BASE[cell.limit] + jitter(cell.seed, 0), BASE[cell.limit] - 8 + jitter(cell.seed, 2)
    if cell.level == 0:
        return clean
    if cell.side == "top":
        return clean + jitter(cell.seed, 1)
    if cell.level == 100:
        return bottom - ADVANTAGE[cell.limit] + jitter(cell.seed, 3)
    return bottom - (cell.level - 25) / 25  # bottom 50%: a point below bottom 25%


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Seeds 0-2 of every setting at 1,000 examples and of clean / top / bottom 25% / all layers at 250 and 16,000;
    seeds 3-9 of those four at 1,000 (three grid commands into one folder, as results/minilm/run.sh does)."""
    out = tmp_path_factory.mktemp("study")
    grid = []
    for levels, seeds, limits in (((0, 25, 50, 100), (0, 1, 2), (1000,)), ((0, 25, 100), (0, 1, 2), (250, 16000)),
                                  ((0, 25, 100), tuple(range(3, 10)), (1000,))):
        cfg = GridConfig("table2", out, {"m": "base"}, ("sst2",), levels, seeds, None, limits=limits)
        write_manifest(cfg, cells(cfg))
        grid += cells(cfg)
    for cell in grid:
        f1 = study_f1(cell) / 100
        # each run holds out a tenth of its examples to choose its epoch, like --select-on val
        write_cell(out / cell.name, [f1 - 0.1, f1 - 0.01] + [f1] * 6, [0.6, 0.2] + [0.05] * 6,
                   num_train=cell.limit * 9 // 10, num_val=cell.limit // 10)
    text, rows = report(out, healing_on=False)
    return text, rows, out


def test_ten_seeds_answer_the_three_questions(study):
    text = study[0]
    section = text.split("## Three questions, over every seed")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| m n=")]
    assert [r.split(" | ")[0] for r in rows] == ["| m n=250"] * 3 + ["| m n=1000"] * 3 + ["| m n=16000"] * 3
    top1000 = next(r for r in rows if r.startswith("| m n=1000 | SST-2 | clean vs top 3 of 12 layers |"))
    # 10 seeds paired: clean - top = -jitter(seed, 1), which sums to 0 over seeds 0-9
    assert top1000.split(" | ")[3:5] == ["10", "+0.00"] and top1000.endswith("| equivalent within ±2 |")
    assert "| m n=1000 | SST-2 | bottom 3 of 12 layers vs all 12 layers | 10 | +0.00 |" in section
    assert "| m n=1000 | SST-2 | clean vs bottom 3 of 12 layers | 10 | +8.00 |" in section
    assert re.search(r"\| m n=16000 \| SST-2 \| bottom 3 of 12 layers vs all 12 layers \| 3 \| \+3\.93 \|.*\| costs \|",
                     section)
    # the Findings at 1,000 pair the 10-seed positions over 10 seeds, the others over the 3 they share
    assert "| 1 | SST-2 | 0% vs top25 | +0.00 |" in text and "| 10 | equivalent within ±2 |" in text
    # 9 points + the mean over seeds 0-2 of jitter(seed, 0) - jitter(seed, 2): (-0.2 + 0.1 - 0.1 - 0 + 0.2 - 0.1) / 3
    assert re.search(r"\| 1 \| SST-2 \| 0% vs bottom50 \| \+8\.97 \| [^|]+ \| [^|]+ \| 3 \| costs \|", text)
    tables = text.split("## Tables")[1]
    assert "| m n=1000 | 0% | 86.00±0.15 (10 seeds)‡ |" in tables  # a position run over more seeds says so
    assert "| m n=1000 | 50% (1-6 / 7-12) | 76.97±0.15‡ |" in tables


def test_the_data_budget_gets_a_column_per_size_and_says_whether_the_advantage_grows(study):
    text, _, out = study
    section = text.split("## Data budget")[1].split("\n## ")[0]
    assert "| setting | 250 (225 + 25) | 1,000 (900 + 100) | 16,000 (14,400 + 1,600) |" in section
    assert "| seeds | 0-2 | 0-9 | 0-2 |" in section
    assert "one test subset per seed, the same for every size and setting of that seed" in section
    assert "| bottom 3 of 12 layers - all 12 layers | " in section
    # bottom - all = the advantage - jitter(seed, 3): at 250 and 16,000 over seeds 0-2 (0.1 - 0.1 + 0.2) / 3 off it
    assert ("It is -0.07 at 250, +0.00 at 1,000, +3.93 at 16,000 examples; from 250 to 16,000 examples it changes by "
            "+4.00 [+4.00, +4.00] grows.") in section
    assert "| change, 250 to 16,000 |" in section
    assert "![data budget](figures/budget.png)" in text and (out / "figures" / "budget.png").is_file()
