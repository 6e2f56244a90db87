"""Two grids side by side: what corruption costs under one protocol against another, paired by seed.

The paper's Tables 3 and 4 change one thing against Table 2 (mean pooling; a linear probe on the frozen encoder)
and read the change off the tables by eye. This puts a number on it. For each corrupted setting of a dataset both
grids ran, the cost of the corruption in each grid is clean - corrupted (weighted F1 points, per seed), and the
change is B's cost - A's cost, paired by seed, with a 95% Student-t interval over the seeds:

    python -m minibert grid compare results/minilm/table2 results/minilm/table4 --model-a "minilm n=1000"
    # table2 fine-tunes, table4 probes: a positive change means corruption costs more under the probe

A comparison that rests on a run still improving when it stopped (convergence.py) is marked unsettled.
"""
from dataclasses import dataclass
from pathlib import Path

from ..data.datasets import DATASET_TITLES
from .cells import load_manifest, setting_label
from .findings import paired_interval
from .paper import TABLES
from .summary import Row, table_rows


def grid_rows(out: Path) -> list[Row]:
    """Every table position of a grid folder (the report's rows)."""
    grid, checkpoints = load_manifest(out)
    rows = []
    for table in TABLES:
        group = [c for c in grid.values() if c.table == table]
        if group:
            rows += table_rows(out, table, group, checkpoints)
    return rows


def pick_model(rows: list[Row], dataset: str, model: str | None, folder: Path, flag: str) -> list[Row]:
    """The rows of one model on `dataset`: the one given, or the only one the grid has there."""
    mine = [r for r in rows if r.dataset == dataset]
    tables = sorted({r.table for r in mine})
    if len(tables) > 1:
        raise ValueError(f"{folder} holds several tables on {dataset} ({', '.join(tables)}); compare folders of one "
                         f"table each")
    models = sorted({r.model for r in mine})
    if model is not None:
        if model not in models:
            raise ValueError(f"{folder} has no model {model!r} on {dataset} (it has: {', '.join(models)}); "
                             f"pick one of those with {flag}")
        return [r for r in mine if r.model == model]
    if len(models) > 1:
        raise ValueError(f"{folder} has several models on {dataset} ({', '.join(models)}); pick one with {flag}")
    return mine


@dataclass(frozen=True)
class Change:
    """One corrupted setting of one dataset: its cost (clean - corrupted, mean over seeds) in grids A and B, and
    B's cost - A's cost paired by seed (low/high: the 95% interval, from two paired seeds on)."""
    dataset: str
    setting: str
    cost_a: float
    cost_b: float
    change: float
    low: float | None
    high: float | None
    pairs: int
    unsettled: bool  # a run it rests on was still improving when it stopped


def _costs(clean: Row, row: Row) -> dict:
    """seed -> clean - corrupted, over the seeds both finished."""
    return {s: clean.by_seed[s] - row.by_seed[s] for s in set(clean.by_seed) & set(row.by_seed)}


def changes(a_rows: list[Row], b_rows: list[Row]) -> list[Change]:
    """A Change per corrupted setting that both row sets have finished, in the order clean, bottom, top, all."""
    out = []
    a_at, b_at = ({(r.level, r.side): r for r in rows} for rows in (a_rows, b_rows))
    if (0, "") not in a_at or (0, "") not in b_at:
        return out
    total = next((r.n_layers for r in a_rows if r.level == 100), None)
    for key in sorted(set(a_at) & set(b_at), key=lambda k: (k[0] == 100, k[1], k[0])):
        if key == (0, ""):
            continue
        cost_a, cost_b = _costs(a_at[0, ""], a_at[key]), _costs(b_at[0, ""], b_at[key])
        if not cost_a or not cost_b:
            continue
        if common := set(cost_a) & set(cost_b):  # the costs over the paired seeds: the columns add up
            cost_a, cost_b = ({s: c[s] for s in common} for c in (cost_a, cost_b))
        change, low, high, pairs = paired_interval(cost_b, cost_a)
        involved = (a_at[0, ""], a_at[key], b_at[0, ""], b_at[key])
        out.append(Change(a_rows[0].dataset, setting_label(key[0], key[1], a_at[key].n_layers, total),
                          sum(cost_a.values()) / len(cost_a), sum(cost_b.values()) / len(cost_b), change, low, high,
                          pairs, any(r.improving for r in involved)))
    return out


def render(a: Path, b: Path, a_rows: list[Row], b_rows: list[Row], found: list[Change]) -> str:
    """Markdown: what A and B are, then a table per dataset."""
    def title(rows):
        return TABLES[rows[0].table].title + f" ({rows[0].model})"
    lines = [f"# What corruption costs: {b} against {a}", "",
             f"- A: `{a}`, {title(a_rows)}", f"- B: `{b}`, {title(b_rows)}", "",
             "Cost: clean - corrupted, weighted F1 points, mean over the seeds both grids finished (over each grid's "
             "own seeds when they share none). Change: B's cost - A's cost, paired by seed, with its 95% Student-t "
             "interval (from two seeds on); positive: the corruption costs more in B. "
             "Unsettled: a run it rests on was still improving when it stopped."]
    for dataset in dict.fromkeys(c.dataset for c in found):
        lines += ["", f"## {DATASET_TITLES.get(dataset, dataset)}", "",
                  "| setting | cost in A | cost in B | change (B - A) | seeds |", "|---|---|---|---|---|"]
        for c in (c for c in found if c.dataset == dataset):
            interval = f" [{c.low:+.2f}, {c.high:+.2f}]" if c.low is not None else ""
            lines.append(f"| {c.setting} | {c.cost_a:+.2f} | {c.cost_b:+.2f} | {c.change:+.2f}{interval}"
                         f"{' unsettled' if c.unsettled else ''} | {c.pairs} |")
    if not found:
        lines += ["", "No corrupted setting of a dataset is finished in both grids, with its clean cell, yet."]
    return "\n".join(lines) + "\n"


def compare(a: Path, b: Path, datasets: list[str] | None = None, model_a: str | None = None,
            model_b: str | None = None) -> str:
    """The markdown comparison of grid folders `a` and `b` on the datasets both ran (or those given)."""
    a_all, b_all = grid_rows(a), grid_rows(b)
    shared = sorted({r.dataset for r in a_all} & {r.dataset for r in b_all})
    if datasets:
        missing = [d for d in datasets if d not in shared]
        if missing:
            raise ValueError(f"{', '.join(missing)} not in both {a} and {b} (both have: {', '.join(shared) or 'none'})")
        shared = datasets
    if not shared:
        raise ValueError(f"{a} and {b} share no dataset; compare grids run on the same data")
    found, a_used, b_used = [], [], []
    for dataset in shared:
        a_rows = pick_model(a_all, dataset, model_a, a, "--model-a")
        b_rows = pick_model(b_all, dataset, model_b, b, "--model-b")
        a_used += a_rows
        b_used += b_rows
        found += changes(a_rows, b_rows)
    return render(a, b, a_used, b_used, found)
