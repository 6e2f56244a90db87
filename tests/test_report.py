"""The report on a synthetic grid folder whose numbers are chosen so that each of the paper's claims is known to
hold, fail or be mixed; the paired interval against a hand computation; the paper's errata against PAPER.txt."""
import csv
import json
import math
import re
import shutil

import pytest

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


def test_the_three_line_answer_gives_each_claims_verdict(synthetic):
    text = synthetic[0]
    findings = text.split("\n## Findings\n")[1].split("\n## Data\n")[0]
    lines = [line for line in findings.splitlines() if re.match(r"\d\. \*\*", line)]
    assert len(lines) == 3
    # claim 1: 7 corrupted settings x 2 datasets, all below clean, all supported over 3 seeds
    assert "holds (14 of 14 cells hold; with seeds, 14 of 14 tested cells supported and 0 contradicted" in lines[0]
    assert "paper (base): 14 of 14" in lines[0]
    # claim 2: 4 steps per side x 2 sides x 2 datasets; 25->50 and 50->75 go up (8 contradicted)
    assert "mixed (8 of 16 cells hold; with seeds, 8 of 16 tested cells supported and 8 contradicted" in lines[1]
    assert "paper (base): 16 of 16" in lines[1]
    assert "fails (0 of 6 cells hold; with seeds, 0 of 6 tested cells supported and 6 contradicted" in lines[2]
    assert "paper (base): 6 of 6" in lines[2]
    assert "claim 3, SST-2: top25 vs bottom25: -3." in findings


def test_claims_in_the_csv(synthetic):
    rows = {(r["dataset"], r["level"], r["side"]): r for r in synthetic[2]}
    bottom25 = rows[("sst2", "25", "bottom")]
    assert float(bottom25["claim3"]) == pytest.approx(-3)  # top and bottom share the noise of a seed and level
    assert float(bottom25["claim3_hi"]) < 0
    assert float(bottom25["claim3_paper"]) == pytest.approx(91.72 - 90.16)
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
    assert "| 2 | 0.50 -> 0.90 | 0.03 -> 0.10 |" in render_healing(("table2", "m", "sst2", 0), {"b": with_after})
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
    from minibert.training.cka import format_healing, healed
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
