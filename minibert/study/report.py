"""The grid's report: the paper's claims tested (Findings), our tables beside the paper's, data sizes, figures,
and the healing analysis (layer-wise CKA, healing.py).

    python -m minibert grid report runs/grid        # writes runs/grid/report.md, report.csv, figures/; prints the md

    text, rows = report(Path("runs/grid"))           # the same from Python

report.md, top to bottom: how the numbers were made (recipe, model selection, flagged runs), Findings (a line
per claim, then per table and model), figures, data sizes beside Table 1, the tables, the paper's errata, the
components table when the grid has one (components.py; also written alone to components.md), healing.
report.csv: one line per table position, with the claim comparisons in which it is the worse cell (findings.py).
"""
import csv
import math
import statistics
import sys
from collections import Counter
from pathlib import Path

from ..data.datasets import DATASET_TITLES
from ..training.convergence import FIT_FRACTION, MIN_EXAMPLES, MIN_GAIN, MIN_LOSS_DROP, WINDOW
from ..training.rundir import damaged_results, status
from ..training.trainer import COLLAPSE_FRACTION
from .budget import BUDGET_CAPTION, budget_panels, budget_section, render_budget_figure, seed_list
from .cells import load_manifest, setting, unlisted_runs
from .components import components_section
from .figures import level_figure
from .findings import CSV_FIELDS as CLAIM_FIELDS
from .findings import MARGIN, claim_columns, comparisons, equivalent, render_findings, render_questions
from .healing import healing_section
from .paper import ERRATA, SIDES, TABLES
from .summary import Row, model_order, table_rows

# what trainer.py's `collapsed` flag means, said where the report names it
COLLAPSED = (f"at the best epoch predicted one class for at least {COLLAPSE_FRACTION:.0%} of the test set, or was no "
             "more accurate than always predicting the majority class")


def _entry(row: Row | None, usual: int | None = None) -> str:
    """A table cell: ours (with its seed count when a finished position has other than the table's usual number),
    the paper's, the difference and the marks."""
    if row is None:
        return ""
    text = row.text + (f" ({row.done} seeds)" if usual and row.done == row.seeds and row.done != usual else "")
    marks = ("‡" if row.small else "") + (f" {row.errata}" if row.errata else "")
    if row.diff is not None:
        return f"{text} / {row.paper:.2f} ({row.diff:+.2f}){marks}"
    return text + (f" / {row.paper:.2f}" if row.paper is not None else "") + marks


def table_datasets(table: str, present: set) -> list[str]:
    """The datasets of `present` in the paper's column order of `table`, then any others by name."""
    return [d for d in TABLES[table].datasets if d in present] + sorted(present - set(TABLES[table].datasets))


def render_markdown(table: str, rows: list[Row]) -> str:
    """The paper's layout: rows model x corruption, columns dataset x bottom/top; ours / paper (difference)."""
    datasets = table_datasets(table, {r.dataset for r in rows})
    at = {(r.model, r.level, r.side, r.dataset): r for r in rows}
    counts = Counter(r.done for r in rows if r.done)
    usual = counts.most_common(1)[0][0] if counts else None
    head = ["model", "corruption"] + [f"{DATASET_TITLES.get(d, d)} {s}" for d in datasets for s in SIDES]
    lines = [f"### {TABLES[table].title}", "",
             "Weighted F1 (%) at the best epoch: ours / paper (ours - paper). 0% and 100% are one run per dataset, "
             "shown under bottom; the layers corrupted are in brackets (bottom / top). With several seeds: mean ± std "
             "over the seeds that did not diverge, (k div) seeds that diverged, [k/n] seeds finished so far" +
             (f", (k seeds) a position run over other than this table's usual {usual} seeds" if usual else "") + "; "
             "† every seed diverged (weighted F1 at or below the majority-class baseline); (k col) seeds that "
             f"collapsed ({COLLAPSED}), kept in the mean; ‡ run on less data than the paper's Table 1 (sizes "
             "under Data); E1-E4: the paper's value is marked under Paper errata. Majority class: the weighted F1 on the "
             "test set of always predicting the run's most frequent training class (mean over the runs), the floor "
             "a run must beat.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model in model_order({r.model for r in rows}):
        for level in sorted({r.level for r in rows if r.model == model}):
            whole = level in (0, 100)
            ranges = [next((r.layers for r in rows if (r.model, r.level, r.side) == (model, level, s)), "")
                      for s in SIDES]
            label = f"{level}%" if whole or not all(ranges) else f"{level}% ({' / '.join(ranges)})"
            entries = []
            for d in datasets:
                entries += [_entry(at.get((model, level, "", d)), usual), ""] if whole else \
                           [_entry(at.get((model, level, s, d)), usual) for s in SIDES]
            lines.append(f"| {model} | {label} | " + " | ".join(entries) + " |")
        majority = []
        for d in datasets:
            seen = [r.majority for r in rows if (r.model, r.dataset) == (model, d) and r.majority is not None]
            majority += [f"{statistics.fmean(seen):.2f}" if seen else "", ""]
        if any(majority):
            lines.append(f"| {model} | majority class | " + " | ".join(majority) + " |")
    return "\n".join(lines)


CSV_FIELDS = ("table", "model", "level", "side", "dataset", "seeds", "done", "diverged", "f1", "f1_std", "paper", "diff",
              "collapsed", "improving", "majority", "num_train", "num_test", "paper_train", "paper_test", "small",
              "recipe", "select_on", "errata", *CLAIM_FIELDS)


def write_csv(rows: list[Row], path: Path, margin: float = MARGIN):
    """Long format, one line per table position, with the claim comparisons in which it is the worse cell
    (findings.claim_columns, with their verdict words at `margin`); F1 in %, empty where there is no value yet."""
    claims = claim_columns(rows, comparisons(rows), margin)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, CSV_FIELDS)
        writer.writeheader()
        for r in rows:
            values = {k: getattr(r, k) for k in CSV_FIELDS if k not in CLAIM_FIELDS} | claims[r.key]
            writer.writerow({k: round(v, 4) if isinstance(v, float) else v for k, v in values.items()})


def render_header(rows: list[Row], margin: float = MARGIN) -> str:
    """How the numbers were made and said: recipe, model selection, convergence, flagged runs, verdict words."""
    recipes = sorted({x for r in rows for x in r.recipe.split("/") if x})
    select = sorted({x for r in rows for x in r.select_on.split("/") if x})
    lines = [f"Training recipe: {', '.join(f'`{x}`' for x in recipes) or 'none finished yet'} (train.py --recipe; "
             "runs from before recipes existed count as `bert`). Model selection: "
             f"{', '.join(f'`{x}`' for x in select) or 'none finished yet'} (--select-on; absent = `test`)."]
    if "test" in select:
        tests = [r.num_test for r in rows if r.select_on != "val" and r.num_test]
        lines.append("Selection on test: the best epoch and learning rate are chosen by test-set score (the paper's "
                     "way: \"we test every epoch and choose the best indicator\"), so every number is the best of "
                     "several test scores and optimistic" + (f", the more so on small test sets (here as few as "
                                                             f"{min(tests):,} examples)." if tests else "."))
    finished, improving = sum(r.done for r in rows), sum(r.improving for r in rows)
    untested = sum(r.done for r in rows if "test" in r.select_on.split("/"))
    rule = (f"over the last {WINDOW} epochs against the {WINDOW} before, the validation metric's mean rose by more "
            f"than {100 * MIN_GAIN:g} points, more than {MIN_EXAMPLES} validation example and more than its noise "
            f"between epochs (one-sided 95% t), or the train loss fell more than {MIN_LOSS_DROP:.0%} while above "
            f"{FIT_FRACTION:.0%} of chance")
    loss_only = (f"judged by their train loss alone: still improving until it is below "
                 f"{FIT_FRACTION:.0%} of chance and has stopped falling (over the last {WINDOW} epochs against the "
                 f"{WINDOW} before, or half the epochs of a shorter run)")
    how = (f"these runs have no validation set and are {loss_only}" if untested and untested == finished else
           rule + (f"; {untested} runs have no validation set and are {loss_only}" if untested else ""))
    lines.append(f"Convergence: {improving} of {finished} finished runs were still improving when they stopped, by a "
                 "flag that never reads the test set (minibert/training/convergence.py, recomputed here from each "
                 f"run's metrics.jsonl): {how}. Marked (k imp) in the tables. Such a run is not evidence: a "
                 "comparison that pairs one keeps its word only when the seeds without it say the same word on their "
                 "own (its verdict names the runs set aside and what those seeds say); otherwise it is not settled.")
    diverged, collapsed = sum(r.diverged for r in rows), sum(r.collapsed for r in rows)
    lines.append(f"Runs flagged: {diverged} diverged (weighted F1 at or below the majority-class baseline), left out of "
                 f"the table means unless all seeds of a cell diverged; {collapsed} collapsed ({COLLAPSED}), "
                 "kept in the table means and marked (k col). Both sit at the majority-class floor; Findings count "
                 "every finished run, but two runs of one seed that both sit at the floor rank nothing: a comparison "
                 "resting on such a pair is not settled.")
    lines.append("Verdict words: a comparison of two settings, paired by seed (first - second, weighted F1 points), "
                 "is said in one of four ways and nothing stronger: going from the first to the second **costs** (its "
                 "95% Student-t interval lies above 0), **gains** (below 0), is **" + equivalent(margin) + "** (its "
                 f"90% interval lies inside [-{margin:g}, +{margin:g}]: two one-sided tests at 5%), or is **not "
                 "settled** (anything else, or one seed, or a run still improving whose seed changes the word, or a "
                 f"pair at the floor). The margin m = {margin:g} F1 points is this report's (`grid report --margin`); "
                 "\"recovered\" means equivalent within ±m.")
    return "\n\n".join(lines)


def convergence_warning(rows: list[Row]) -> str | None:
    """A loud first line when more than a fifth of the finished runs were still learning when they stopped."""
    finished, improving = sum(r.done for r in rows), sum(r.improving for r in rows)
    if finished and improving > finished / 5:
        return (f"**Not converged: {improving} of {finished} finished runs ({improving / finished:.0%}) were still "
                "improving when they stopped. More training would change their numbers: read this report as a "
                "short-budget run, not as the paper's experiment.**")
    return None


def render_sizes(rows: list[Row]) -> str:
    """Train/test examples per table and dataset beside Table 1's; ‡ where a run had less."""
    seen = {}
    for r in rows:
        entry = seen.setdefault((r.table, r.dataset), [set(), r.paper_train, r.paper_test])
        entry[0].update(r.sizes)
    lines = ["## Data", "", "Examples each run trained and was tested on, beside the paper's Table 1 (MRPC and RTE: "
             "GLUE's official splits, not in Table 1).", "", "| table | dataset | train / test (ours) | Table 1 |",
             "|---|---|---|---|"]
    for (table, dataset), (sizes, paper_train, paper_test) in seen.items():
        ours = ", ".join(f"{a:,} / {b:,}" for a, b in sorted(sizes)) or "not recorded"
        small = paper_train and any(a < paper_train or b < paper_test for a, b in sizes)
        paper = f"{paper_train:,} / {paper_test:,}" if paper_train else "-"
        lines.append(f"| {table} | {DATASET_TITLES.get(dataset, dataset)} | {ours}{' ‡' if small else ''} | {paper} |")
    return "\n".join(lines)


def level_panels(rows: list[Row], table: str, dataset: str) -> list[tuple]:
    """figures.level_figure's panels of one table and dataset: per model, every finished seed per number of layers
    corrupted and side, the paper's values for a paper model, and the majority-class baseline."""
    panels = []
    for model in model_order({r.model for r in rows if (r.table, r.dataset) == (table, dataset)}):
        at = {(r.level, r.side): r for r in rows
              if (r.table, r.model, r.dataset) == (table, model, dataset) and r.by_seed}
        x = {k: r.level if r.n_layers is None else r.n_layers for k, r in at.items()}
        ours, paper = {}, {}
        for side in SIDES:
            keys = sorted((lv, s) for lv, s in at if s in ("", side))
            if len(keys) > 1:
                ours[side] = [(x[k], list(at[k].by_seed.values())) for k in keys]
                marks = [(x[k], at[k].paper) for k in keys if at[k].paper is not None]
                if marks:
                    paper[side] = marks
        majorities = [r.majority for r in at.values() if r.majority is not None]
        if ours:
            panels.append((model, ours, paper, statistics.fmean(majorities) if majorities else None))
    return panels


def figure_range(rows: list[Row]) -> tuple[float, float]:
    """One y-range (F1 %) for every figure of a report: from 5 points under the lowest seed or baseline, down to a
    multiple of 10, up to 100."""
    values = [v for r in rows for v in r.by_seed.values()] + [r.majority for r in rows if r.majority]
    return (10 * math.floor((min(values, default=5) - 5) / 10), 100.0)


def render_figures(out: Path, rows: list[Row]) -> str:
    """One PNG per table and dataset in <out>/figures/ (F1 against layers corrupted), and with a data-budget axis
    one of F1 against training examples; linked; a note without matplotlib."""
    pairs = [(t, d) for t in TABLES for d in table_datasets(t, {r.dataset for r in rows if r.table == t})]
    drawn = [(t, d, p) for t, d in pairs if (p := level_panels(rows, t, d))]
    crosses = any(panel[2] for _, _, panels in drawn for panel in panels)
    lines = ["## Figures", "", "Weighted F1 against the number of layers corrupted: bottom (red) and top (blue), the "
             "line through the mean over seeds, the band from the lowest to the highest seed (every finished seed, "
             "diverged and collapsed ones included), the majority-class baseline dashed" +
             (", the paper's values as faint crosses" if crosses else "") + "; 0 and all layers are shared. One "
             "y-range for every figure of this report."]
    ylim = figure_range(rows)
    try:
        for table, dataset, panels in drawn:
            title = f"{TABLES[table].title.split(':')[0]}, {DATASET_TITLES.get(dataset, dataset)}"
            png = level_figure(panels, out / "figures" / f"{table}-{dataset}.png", title, ylim)
            lines += ["", f"![{title}]({png.relative_to(out)})"]
        if budget_panels(rows):  # a grid of one --limits size has no data axis to draw
            lines += ["", BUDGET_CAPTION, "", f"![data budget]({render_budget_figure(out, rows, ylim)})"]
    except ImportError as e:
        return "\n".join(lines + ["", f"(no figures: {e})"])
    return "\n".join(lines)


def render_errata() -> str:
    return "## Paper errata\n\n" + "\n".join(f"- {name}: {e.text}" for name, e in ERRATA.items())


def check_unlisted(out: Path, grid: dict) -> None:
    """Run folders that grid.json does not list, which the report cannot show: a warning on stderr naming them; an
    error when it lists none of the runs there (then grid.json belongs to another grid)."""
    stray = unlisted_runs(out, grid)
    if not stray:
        return
    names = ", ".join(stray[:3]) + (f" (+{len(stray) - 3} more)" if len(stray) > 3 else "")
    fix = "rerun the grid command that made them: it adds them to grid.json and reruns nothing that is done"
    if not any((out / name).is_dir() for name in grid):
        raise ValueError(f"{out / 'grid.json'} lists none of the {len(stray)} runs in {out} ({names}): it belongs to "
                         f"another grid; {fix}")
    print(f"warning: {len(stray)} run folder(s) in {out} are not in its grid.json, so not in this report: {names}; "
          f"{fix}", file=sys.stderr)


def floor_note(rows: list[Row]) -> str:
    """' At the majority-class floor: MRPC (minilm n=500) 0% seed 0, 100% seeds 0-2.' ('' when no run is)."""
    at = {}
    for r in rows:
        if r.floor_seeds:
            at.setdefault((r.dataset, r.model), []).append(f"{setting(r.level, r.side)} seed"
                                                           f"{'s' if len(r.floor_seeds) > 1 else ''} "
                                                           f"{seed_list(r.floor_seeds)}")
    if not at:
        return ""
    return (" At the majority-class floor (diverged or collapsed): " +
            "; ".join(f"{DATASET_TITLES.get(d, d)} ({m}) {', '.join(v)}" for (d, m), v in at.items()) +
            ". Settings are not ranked among these runs: a comparison with a seed at which both sit at the floor is "
            "not settled.")


def report(out: Path, healing_n: int = 2000, device: str = "cpu", healing_on: bool = True,
           figures_on: bool = True, probes_on: bool = True, margin: float = MARGIN) -> tuple[str, list[Row]]:
    """The report of a grid folder as markdown, and its rows (for the CSV); figures go to <out>/figures/.
    A components grid's section (components.py) is also written alone to <out>/components.md. `margin`: the m of
    "equivalent within ±m", F1 points (findings.py)."""

    if not margin > 0:
        raise ValueError(f"--margin must be a positive number of F1 points, got {margin:g}")
    grid, checkpoints = load_manifest(out)
    check_unlisted(out, grid)
    tables, rows = [], []
    for table in TABLES:
        group = [c for c in grid.values() if c.table == table]
        if group:
            table_rows_ = table_rows(out, table, group, checkpoints)
            rows += table_rows_
            statuses = {c.name: status(out / c.name) for c in group}  # each result.json read once
            counts = Counter(statuses.values())
            # only an unfinished cell can hold a result.json that does not read
            damaged = [name for name, s in statuses.items() if s == "partial" and damaged_results(out / name)]
            tables.append(render_markdown(table, table_rows_) + "\n\n" +
                          f"{len(group)} cells: {counts['done']} done, {counts['partial']} partial, "
                          f"{counts['pending']} pending; "
                          f"{sum(r.diverged for r in table_rows_)} diverged runs. "
                          f"{sum(r.collapsed for r in table_rows_)} collapsed runs." + floor_note(table_rows_) +
                          (f" Counted as partial because their result.json cannot be read: {', '.join(damaged)}; "
                           "rerun the grid command, which sets each aside and reruns that cell." if damaged else ""))
    comps = comparisons(rows)
    parts = [f"# Grid report: {out}", *filter(None, [convergence_warning(rows)]), render_header(rows, margin),
             render_findings(comps, DATASET_TITLES, {t: TABLES[t].title for t in TABLES}, margin),
             *filter(None, [render_questions(rows, DATASET_TITLES, margin)]),
             *([render_figures(out, rows)] if figures_on else []), *filter(None, [budget_section(rows, margin)]),
             render_sizes(rows),
             "## Tables", *tables, render_errata()]
    if section := components_section(out, grid, checkpoints, device, probes_on, figures_on):
        parts.append(section.rstrip())
        (out / "components.md").write_text(section)
    if healing_on:
        section = healing_section(out, grid, healing_n, device)
        parts.append("## Healing (layer-wise CKA)\n\n" + (section or "No finished pairs of a clean and a corrupted "
                                                              "fine-tuning cell yet."))
    return "\n\n".join(parts) + "\n", rows


def run_command(args) -> int:
    """`python -m minibert grid report` (grid.py parses the command line and calls this)."""
    if args.healing_n < 4 and not args.no_healing:
        raise ValueError(f"--healing-n must be at least 4 (CKA needs 4 test examples), got {args.healing_n}")
    out = Path(args.dir)
    margin = getattr(args, "margin", MARGIN)
    text, rows = report(out, args.healing_n, args.device, not args.no_healing, probes_on=not args.no_probes,
                        margin=margin)
    (out / "report.md").write_text(text)
    write_csv(rows, out / "report.csv", margin)
    print(text if args.format == "md" else (out / "report.csv").read_text(), end="")
    return 0
