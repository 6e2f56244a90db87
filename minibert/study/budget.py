"""The data-budget axis of a grid report: how recovery grows with the number of training examples.

A grid run with `--limits 250,1000,4000` has every cell at each size; the report's rows then carry the size in
their model label ("minilm n=250") and in "limit". This module renders them across the sizes: a table per model
and dataset (rows: clean, each corrupted setting named by its layers, the majority-class baseline; columns: the
sizes, with what was trained on and held out), the recovery per size (what each corruption costs against clean, and
a re-initialised bottom against all layers re-initialised, paired by seed, in findings.py's verdict words), how each
of those changes from the smallest size to the largest (grows, shrinks, equivalent within ±m, not settled: the answer
to whether the paper's advantage of pre-trained upper layers grows with data) and one figure of weighted F1 against
the number of training examples.
"""
import statistics
from pathlib import Path

from ..data.datasets import DATASET_TITLES
from .cells import label_parts, setting, setting_label
from .figures import budget_figure
from .findings import MARGIN, Paired, compare_rows, fmt_interval, paired, set_aside, settled_word, verdict_text, without
from .summary import Row


def _groups(rows: list[Row]) -> dict[tuple, list[Row]]:
    """(table, model, dataset) -> the rows of a data-budget grid, sizes in increasing order. A dataset run at one
    size only (one that a grid of several --limits calls shares with the budget axis) has no axis to show."""
    out = {}
    for r in sorted((r for r in rows if r.limit is not None), key=lambda r: r.limit):
        out.setdefault((r.table, label_parts(r.model)[0], r.dataset), []).append(r)
    return {key: members for key, members in out.items() if len({r.limit for r in members}) > 1}


def _settings(members: list[Row]) -> list[tuple[tuple, str]]:
    """The settings of one group run at two sizes or more, in the order clean, bottom, top, all; each with its
    label by layers (read from whichever size has a finished run: a pending cell's layers may be unknown)."""
    total = next((r.n_layers for r in members if r.level == 100 and r.n_layers is not None), None)
    sizes = {}
    for r in members:
        sizes.setdefault((r.level, r.side), set()).add(r.limit)
    keys = sorted((k for k, at in sizes.items() if len(at) > 1),
                  key=lambda k: (k[0] == 100, k[0] > 0, k[1], k[0]))
    labels = {}
    for r in sorted(members, key=lambda r: r.n_layers is not None):  # a known layer count labels last, so it wins
        labels[(r.level, r.side)] = setting_label(r.level, r.side, r.n_layers, total)
    return [(k, labels[k]) for k in keys]


def budget_panels(rows: list[Row]) -> list[tuple]:
    """figures.budget_figure's panels: per model and dataset, each setting's seeds at every size, and the baseline."""
    panels = []
    for (_, model, dataset), members in _groups(rows).items():
        lines = {}
        for key, label in _settings(members):
            points = [(r.limit, list(r.by_seed.values())) for r in members
                      if (r.level, r.side) == key and r.by_seed]
            if points:
                lines[label] = points
        majorities = [r.majority for r in members if r.majority is not None]
        if lines:
            panels.append((f"{model}, {DATASET_TITLES.get(dataset, dataset)}", lines,
                           statistics.fmean(majorities) if majorities else None))
    return panels


def render_budget_figure(out: Path, rows: list[Row], ylim: tuple) -> str:
    """Draw <out>/figures/budget.png; returns its path relative to `out`."""
    drawn = [r for r in rows if r.limit is not None and r.num_train is not None]
    held = drawn and all(r.num_train < r.limit for r in drawn)
    png = budget_figure(budget_panels(rows), out / "figures" / "budget.png",
                        "Recovery against task data: weighted F1 at the best epoch", ylim,
                        "examples per run" + (" (trained on + held out to choose the epoch)" if held else ""))
    return str(png.relative_to(out))


BUDGET_CAPTION = ("Weighted F1 against the number of examples per run (log scale; with a validation set, a tenth of "
                  "them held out to choose the epoch): a line per setting through the mean over seeds (the seeds of "
                  "each size: the Data budget table's seeds row), the band from the lowest to the highest seed, the "
                  "majority-class baseline dashed; "
                  "each setting's points are shifted sideways a little, so that settings that score alike stay "
                  "visible.")


def budget_section(rows: list[Row], margin: float = MARGIN) -> str | None:
    """The '## Data budget' section: a table per model and dataset, sizes as columns; None without --limits."""
    groups = _groups(rows)
    if not groups:
        return None
    lines = ["## Data budget", "", "Weighted F1 (%) at the best epoch by training-set size: mean ± std over the seeds "
             "that did not diverge; (k imp) seeds still improving when they stopped, (k div) diverged. A size N is "
             "the examples a run drew; with a validation set, N (T + V): T trained on and V held out to choose the "
             "epoch; epochs: those the runs trained (until converged: each stopped at the first epoch its convergence flag "
             "no longer called it still improving). Findings compare the settings at each size (model n=size)."]
    for (table, model, dataset), members in groups.items():
        sizes = sorted({r.limit for r in members})
        at = {(r.level, r.side, r.limit): r for r in members}
        lines += ["", f"### {model}, {DATASET_TITLES.get(dataset, dataset)} ({table})", "", _tested_on(members), "",
                  "| setting | " + " | ".join(_size_head(members, n) for n in sizes) + " |", "|---|" + "---|" * len(sizes)]
        for (level, side), label in _settings(members):
            cells = [at[level, side, n].text if (level, side, n) in at else "" for n in sizes]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        majority = [statistics.fmean(r.majority for r in members if r.limit == n and r.majority is not None)
                    if any(r.limit == n and r.majority is not None for r in members) else None for n in sizes]
        lines.append("| majority class | " + " | ".join("" if m is None else f"{m:.2f}" for m in majority) + " |")
        lines.append("| seeds | " + " | ".join(seed_list({s for r in members if r.limit == n for s in r.by_seed})
                                               for n in sizes) + " |")
        lines.append("| epochs | " + " | ".join(_epochs([r for r in members if r.limit == n]) for n in sizes) + " |")
        lines += ["", *_recovery(members, sizes, at, margin)]
    return "\n".join(lines)


def seed_list(seeds) -> str:
    """'0-2', '0-9', '0-2, 5': the seeds as runs of consecutive numbers."""
    runs = []
    for s in sorted(seeds):
        if runs and s == runs[-1][1] + 1:
            runs[-1][1] = s
        else:
            runs.append([s, s])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _epochs(runs: list[Row]) -> str:
    """'20', or '8-20' with ' (until converged, at most 20)': the epochs the finished runs of one size trained."""
    trained = [e for r in runs for e in r.epochs_run]
    if not trained:
        return ""
    lo, hi = min(trained), max(trained)
    text = str(lo) if lo == hi else f"{lo}-{hi}"
    most = max((r.max_epochs for r in runs if r.max_epochs is not None), default=None)
    return text + (f" (until converged, at most {most})" if any(r.until_converged for r in runs) else "")


def _size_head(members: list[Row], n: int) -> str:
    """'1,000 (900 + 100)': drawn, trained on + held out, when the runs held some out."""
    trained = {r.num_train for r in members if r.limit == n and r.num_train is not None}
    if len(trained) == 1 and (t := trained.pop()) < n:
        return f"{n:,} ({t:,} + {n - t:,})"
    return f"{n:,} examples"


def _tested_on(members: list[Row]) -> str:
    """What the runs were tested on: one test subset per seed, shared by every size and setting of that seed."""
    tests = {b for r in members for _, b in r.sizes}
    if len(tests) == 1:
        return (f"Tested on {tests.pop():,} examples drawn with the run's seed: one test subset per seed, the same for "
                "every size and setting of that seed, so every difference is paired by seed.")
    return (f"Tested on {', '.join(f'{b:,}' for b in sorted(tests))} examples (the test subset changes with the size "
            "as well as the seed: differences across sizes compare different test examples).")


def _difference(better: Row | None, worse: Row | None, margin: float) -> tuple[str, float | None]:
    """better - worse in F1 points, paired by seed, with its 95% interval from two seeds on and its verdict word
    ('pending' until both have a finished seed; '' where a setting was not run at that size); and the mean."""
    if better is None or worse is None:
        return "", None
    c = compare_rows(better, worse, claim="budget", table=better.table, model=better.model, dataset=better.dataset)
    if c.ours is None:
        return "pending", None
    interval = f" {fmt_interval(c.lo, c.hi)}" if c.lo is not None else ""
    return f"{c.ours:+.2f}{interval} {verdict_text(c, margin)}", c.ours


def growth(small: tuple[Row, Row], large: tuple[Row, Row]) -> tuple[Paired, tuple, Paired | None]:
    """How a difference (first - second) changes from one size to another: (large's - small's), paired by seed over
    the seeds all four rows finished; the (setting, size, seed) of the runs among them still improving; and the
    change over the seeds without them (None when there are none)."""
    def diffs(pair):
        a, b = pair
        return {s: a.by_seed[s] - b.by_seed[s] for s in set(a.by_seed) & set(b.by_seed)}
    p = paired(diffs(large), diffs(small))
    improving = tuple((f"{r.model} {setting(r.level, r.side)}", s) for r in (*small, *large) for s in p.seeds
                      if s in r.improving_seeds)
    return p, improving, without(diffs(large), diffs(small), improving) if improving else None


def _growth_text(p: Paired, improving: tuple, converged: Paired | None, margin: float) -> str:
    if p.mean is None:
        return "pending"
    interval = f" {fmt_interval(p.lo, p.hi)}" if p.lo is not None else ""
    said = settled_word(p, converged, margin, up="grows", down="shrinks")
    why = f" ({set_aside(improving, converged, margin, up='grows', down='shrinks')})" if improving else ""
    return f"{p.mean:+.2f}{interval} {said}{why}"


def _recovery(members: list[Row], sizes: list[int], at: dict, margin: float) -> list[str]:
    """The paper's question along the data axis: what each corruption costs (clean - corrupted) at each size, what
    the pre-trained layers above a re-initialised bottom are worth (bottom - all layers re-initialised), and how each
    changes from the smallest size to the largest, paired by seed; then the verdict on the paper's advantage."""
    settings = [(key, label) for key, label in _settings(members) if key[0] > 0 and key[0] != 100]
    if not settings:
        return []
    first, last = sizes[0], sizes[-1]
    lines = [f"F1 points, paired by seed, with the 95% Student-t interval from two seeds on and the verdict word "
             f"(Findings; m = {margin:g}). Cost: clean - corrupted. The last column: the change from {first:,} to "
             f"{last:,} examples (the difference at {last:,} - at {first:,}, paired by seed over the seeds both sizes "
             "have): grows (95% interval above 0), shrinks (below), equivalent within ±m (90% interval inside "
             "[-m, +m]), not settled.", "",
             "| | " + " | ".join(f"{n:,} examples" for n in sizes) + f" | change, {first:,} to {last:,} |",
             "|---|" + "---|" * (len(sizes) + 1)]
    everything = [(key, label) for key, label in _settings(members) if key[0] == 100]
    pairs = [(f"cost of {label}", (0, ""), (level, side)) for (level, side), label in settings + everything]
    pairs += [(f"{label} - {all_label}", (level, side), all_key) for (level, side), label in settings
              if side == "bottom" for all_key, all_label in everything]
    answers = []
    for name, a, b in pairs:
        cells = [_difference(at.get((*a, n)), at.get((*b, n)), margin) for n in sizes]
        ends = [(at.get((*a, n)), at.get((*b, n))) for n in (first, last)]
        change = _growth_text(*growth(*ends), margin) if all(x is not None for e in ends for x in e) else ""
        lines.append(f"| {name} | " + " | ".join(text for text, _ in cells) + f" | {change} |")
        if a[0] and a[1] == "bottom" and change:
            answers.append((name, cells, change))
    for name, cells, change in answers:
        values = ", ".join(f"{mean:+.2f} at {n:,}" for (_, mean), n in zip(cells, sizes) if mean is not None)
        lines += ["", f"Does the advantage of pre-trained upper layers ({name}: the paper's bottom 25% minus all "
                  f"layers) grow with task data? It is {values} examples; from {first:,} to {last:,} examples it "
                  f"changes by {change}."]
    return lines
