"""The data-budget axis of a grid report: how recovery grows with the number of training examples.

A grid run with `--limits 250,1000,4000` has every cell at each size; the report's rows then carry the size in
their model label ("minilm n=250") and in "limit". This module renders them across the sizes: a table per model
and dataset (rows: clean, each corrupted setting named by its layers, the majority-class baseline; columns: the
sizes), the recovery per size (what each corruption costs against clean, and a re-initialised bottom against all
layers re-initialised, paired by seed) and one figure of weighted F1 against the number of training examples.
"""
import statistics
from pathlib import Path

from ..data.datasets import DATASET_TITLES
from .cells import setting_label
from .figures import budget_figure
from .findings import paired_interval
from .summary import Row


def _groups(rows: list[Row]) -> dict[tuple, list[Row]]:
    """(table, model, dataset) -> the rows of a data-budget grid, sizes in increasing order. A dataset run at one
    size only (one that a grid of several --limits calls shares with the budget axis) has no axis to show."""
    out = {}
    for r in sorted((r for r in rows if r.limit is not None), key=lambda r: r.limit):
        out.setdefault((r.table, r.model.partition(" n=")[0], r.dataset), []).append(r)
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
    """viz.budget_figure's panels: per model and dataset, each setting's seeds at every size, and the baseline."""
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
    png = budget_figure(budget_panels(rows), out / "figures" / "budget.png",
                        "Recovery against task data: weighted F1 at the best epoch", ylim)
    return str(png.relative_to(out))


BUDGET_CAPTION = ("Weighted F1 against the number of training examples (log scale): a line per setting through the mean "
                  "over seeds, the band from the lowest to the highest seed, the majority-class baseline dashed; "
                  "each setting's points are shifted sideways a little, so that settings that score alike stay "
                  "visible.")


def budget_section(rows: list[Row]) -> str | None:
    """The '## Data budget' section: a table per model and dataset, sizes as columns; None without --limits."""
    groups = _groups(rows)
    if not groups:
        return None
    lines = ["## Data budget", "", "Weighted F1 (%) at the best epoch by training-set size: mean ± std over the seeds "
             "that did not diverge; (k imp) seeds still improving when they stopped, (k div) diverged. Every size "
             "is tested on the same examples. Findings compare the settings at each size (model n=size)."]
    for (table, model, dataset), members in groups.items():
        sizes = sorted({r.limit for r in members})
        at = {(r.level, r.side, r.limit): r for r in members}
        lines += ["", f"### {model}, {DATASET_TITLES.get(dataset, dataset)} ({table})", "",
                  "| setting | " + " | ".join(f"{n:,} examples" for n in sizes) + " |", "|---|" + "---|" * len(sizes)]
        for (level, side), label in _settings(members):
            cells = [at[level, side, n].text if (level, side, n) in at else "" for n in sizes]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        majority = [statistics.fmean(r.majority for r in members if r.limit == n and r.majority is not None)
                    if any(r.limit == n and r.majority is not None for r in members) else None for n in sizes]
        lines.append("| majority class | " + " | ".join("" if m is None else f"{m:.2f}" for m in majority) + " |")
        lines += ["", *_recovery(members, sizes, at)]
    return "\n".join(lines)


def _difference(better: Row | None, worse: Row | None) -> str:
    """better - worse in F1 points, paired by seed, with its 95% interval from two seeds on; 'pending' until both
    have a finished seed; 'unsettled' when a seed of either was still improving when it stopped."""
    if better is None or worse is None:
        return ""
    mean, low, high, _ = paired_interval(better.by_seed, worse.by_seed)
    if mean is None:
        return "pending"
    interval = f" [{low:+.2f}, {high:+.2f}]" if low is not None else ""
    return f"{mean:+.2f}{interval}" + (" unsettled" if better.improving or worse.improving else "")


def _recovery(members: list[Row], sizes: list[int], at: dict) -> list[str]:
    """The paper's question along the data axis: what each corruption costs (clean - corrupted) at each size, and
    what the pre-trained layers above a re-initialised bottom are worth (bottom - all layers re-initialised)."""
    settings = [(key, label) for key, label in _settings(members) if key[0] > 0 and key[0] != 100]
    if not settings:
        return []
    lines = ["F1 points, paired by seed, with the 95% Student-t interval from two seeds on; unsettled: a seed still "
             "improving when it stopped. Cost: clean - corrupted.", "",
             "| | " + " | ".join(f"{n:,} examples" for n in sizes) + " |", "|---|" + "---|" * len(sizes)]
    everything = [(key, label) for key, label in _settings(members) if key[0] == 100]
    for (level, side), label in settings + everything:
        lines.append(f"| cost of {label} | " + " | ".join(
            _difference(at.get((0, "", n)), at.get((level, side, n))) for n in sizes) + " |")
    for (level, side), label in settings:
        for (all_level, all_side), all_label in everything if side == "bottom" else []:
            lines.append(f"| {label} - {all_label} | " + " | ".join(
                _difference(at.get((level, side, n)), at.get((all_level, all_side, n))) for n in sizes) + " |")
    return lines
