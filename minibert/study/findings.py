"""The paper's three claims, tested on a grid's numbers and counted on the paper's own.

    comps = comparisons(rows)            # rows: summary.table_rows()
    tally(c for c in comps if c.claim == 3)  # -> cells, held, supported, contradicted, paper counts

The claims (section 4.2 of the paper), each as comparisons of two cells of one model and dataset where
the claim expects the first ("better") to score a higher weighted F1 than the second ("worse"):

    1. "a corrupted BERT model is unable to fully recover": clean (0%) > every corrupted setting
    2. "As the degree of corruption increases, the fine-tuned performance decreases": per side, each level
       > the next one (0% > bottom25 > bottom50 > bottom75 > 100%, and the same on top)
    3. "the impact of bottom-layer corruption is greater than top-layer corruption": top L% > bottom L%

A comparison holds when the difference better - worse is positive (on the mean over seeds). With two or
more seeds run in both cells it is also tested, paired by seed: the mean of the per-seed differences with
a 95% Student-t interval (mean ± t(0.975, n-1) · sd / sqrt(n), t from the table below); "supported"
when the whole interval is above 0, "contradicted" when it is below. Every finished seed counts, diverged
and collapsed ones too: a corrupted model that failed to learn is part of what the claim is about.
A comparison resting on a seed that was still improving when it stopped (convergence.py) is "unsettled":
more training could flip it, so it is listed apart and counted neither for nor against the claim.
"""
import math
import statistics
from dataclasses import dataclass, field

from .cells import setting
from .paper import MODELS, SIDES, errata_of, paper_value
from .summary import Row

CLAIMS = {1: "corrupted models do not fully recover (clean > corrupted)",
          2: "more corruption is worse (each level > the next, per side)",
          3: "bottom corruption hurts more than top (top > bottom at the same level)"}
# t(0.975, df): the two-sided 95% quantile of Student's t; between entries the smaller df's (wider) value
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


def t975(df: int) -> float:
    """The 95% two-sided t quantile for df degrees of freedom (conservative between table entries)."""
    return T975[max(k for k in T975 if k <= df)]


def paired_interval(better: dict, worse: dict) -> tuple[float | None, float | None, float | None, int]:
    """(mean difference, 95% low, 95% high, pairs) of better - worse over the seeds both have.

    With fewer than 2 common seeds there is no interval; with none, the difference of the means.
    """
    common = sorted(set(better) & set(worse))
    if not common:
        if not better or not worse:
            return None, None, None, 0
        return statistics.fmean(better.values()) - statistics.fmean(worse.values()), None, None, 0
    diffs = [better[s] - worse[s] for s in common]
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return mean, None, None, 1
    half = t975(len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return mean, mean - half, mean + half, len(diffs)


@dataclass(kw_only=True)
class Comparison:
    """One test of one claim: cell `better` is expected above cell `worse`; ours, lo, hi and pairs are
    paired_interval()'s. Built with keywords only."""
    claim: int | str  # 1-3; components.py's questions by name
    table: str
    model: str
    dataset: str
    better: tuple  # (level, side), side "" at 0% and 100% (components.py: (level, side, component))
    worse: tuple
    ours: float | None  # better - worse, F1 points
    lo: float | None
    hi: float | None
    pairs: int
    chains: tuple = ()  # claim 2: the sides whose chain the step belongs to
    paper: dict = field(default_factory=dict)  # paper model -> better - worse in the paper's numbers
    unsettled: bool = False  # a seed of either cell was still improving when it stopped

    @property
    def holds(self) -> bool:
        return self.ours is not None and self.ours > 0

    @property
    def supported(self) -> bool:
        return self.lo is not None and self.lo > 0

    @property
    def contradicted(self) -> bool:
        return self.hi is not None and self.hi < 0


def paper_marks(c: Comparison, model: str) -> list[str]:
    """The paper.ERRATA ids that mark either of the paper's cells behind a comparison, for one paper model."""
    return [e for k in (c.better, c.worse) for e in errata_of(c.table, model, k[0], k[1] or None, c.dataset)]


def _steps(levels: list[int], have) -> list[tuple]:
    """Claims 1-3 as (claim, better, worse, chains) over the settings `have` holds."""
    steps = [(1, (0, ""), (lv, s), ()) for lv in levels if lv
             for s in (("",) if lv == 100 else SIDES) if have((0, "")) and have((lv, s))]
    seen = {}
    for side in SIDES:
        chain = [(lv, "" if lv in (0, 100) else side) for lv in levels]
        chain = [k for k in chain if have(k)]
        for a, b in zip(chain, chain[1:]):
            seen[(a, b)] = seen.get((a, b), ()) + (side,)
    steps += [(2, a, b, chains) for (a, b), chains in seen.items()]
    steps += [(3, (lv, "top"), (lv, "bottom"), ()) for lv in levels if lv not in (0, 100)
              and have((lv, "top")) and have((lv, "bottom"))]
    return steps


def _paper_diffs(table: str, model: str, dataset: str, better: tuple, worse: tuple) -> dict:
    """better - worse in the paper's numbers: for a paper model its own, for any other every paper model's."""
    out = {}
    for m in ((model,) if model in MODELS else MODELS):
        a = paper_value(table, m, better[0], better[1] or None, dataset)
        b = paper_value(table, m, worse[0], worse[1] or None, dataset)
        if a is not None and b is not None:
            out[m] = a - b
    return out


def comparisons(rows: list[Row]) -> list[Comparison]:
    """Every comparison of the three claims over `rows` (those with a finished seed)."""
    groups, improving = {}, {}
    for r in rows:
        if r.by_seed:
            key = (r.table, r.model, r.dataset)
            groups.setdefault(key, {})[(r.level, r.side)] = r.by_seed
            improving.setdefault(key, {})[(r.level, r.side)] = r.improving_seeds
    out = []
    for (table, model, dataset), at in groups.items():
        levels = sorted({lv for lv, _ in at})
        for claim, better, worse, chains in _steps(levels, lambda k: k in at):
            ours, lo, hi, pairs = paired_interval(at[better], at[worse])
            still = improving[table, model, dataset]
            out.append(Comparison(claim=claim, table=table, model=model, dataset=dataset, better=better, worse=worse,
                                  ours=ours, lo=lo, hi=hi, pairs=pairs, chains=chains,
                                  paper=_paper_diffs(table, model.partition(" n=")[0], dataset, better, worse),
                                  unsettled=bool(still[better] or still[worse])))
    return out


def tally(comps) -> dict:
    """Counts over comparisons: cells, held, tested (>= 2 pairs), supported, contradicted; and per paper model
    (cells, held, how many involve a cell marked in paper.ERRATA) over the same comparisons."""
    comps = list(comps)
    paper = {}
    for c in comps:
        for m, d in c.paper.items():
            n, k, marked = paper.get(m, (0, 0, 0))
            paper[m] = (n + 1, k + (d > 0), marked + bool(paper_marks(c, m)))
    settled = [c for c in comps if not c.unsettled]
    return {"cells": len(settled), "held": sum(c.holds for c in settled), "tested": sum(c.pairs >= 2 for c in settled),
            "supported": sum(c.supported for c in settled), "contradicted": sum(c.contradicted for c in settled),
            "unsettled": len(comps) - len(settled), "paper": paper}


def verdict(t: dict) -> str:
    """holds (in every cell) | fails (in none) | mixed."""
    if not t["cells"]:
        return "unsettled" if t["unsettled"] else "untested"
    return "holds" if t["held"] == t["cells"] else "fails" if t["held"] == 0 else "mixed"


def _counts(t: dict) -> str:
    if not t["cells"]:
        text = f"all {t['unsettled']} cells unsettled (a run still improving)"
    else:
        text = f"{t['held']} of {t['cells']} cells hold"
        if t["unsettled"]:
            text += f", {t['unsettled']} more unsettled (a run still improving)"
        if t["tested"]:
            text += (f"; with seeds, {t['supported']} of {t['tested']} tested cells supported and {t['contradicted']} "
                     f"contradicted (95% paired t-interval)")
        else:
            text += " (one seed per cell: no interval)"
    paper = "; ".join(f"paper ({m}): {k} of {n}" + (f" ({marked} with a cell marked under Paper errata)" if marked else "")
                      for m, (n, k, marked) in t["paper"].items())
    return f"{text}; {paper or 'paper: no such cells'}"


def _diff(c: Comparison) -> str:
    text = f"{c.ours:+.2f}"
    if c.lo is not None:
        text += f" [{c.lo:+.2f}, {c.hi:+.2f}] ({c.pairs} seeds)"
    paper = ", ".join(f"paper ({m}) {d:+.2f}" for m, d in c.paper.items())
    marks = sorted({e for m in c.paper for e in paper_marks(c, m)})
    return text + (f"; {paper}" if paper else "") + (f" ({', '.join(marks)})" if marks else "")


def render_findings(comps: list[Comparison], titles: dict, table_titles: dict) -> str:
    """The Findings section: a three-line answer over everything, then per table and model the counts per claim
    and the cells where a claim fails (ours), with the seed interval and the paper's difference."""
    if not comps:
        return "## Findings\n\nNo finished pair of cells to compare yet."
    lines = ["## Findings", ""]
    for claim, text in CLAIMS.items():
        t = tally(c for c in comps if c.claim == claim)
        lines.append(f"{claim}. **{text}**: {verdict(t)} ({_counts(t)}).  ")
    lines += ["", "Each claim is a set of comparisons of two cells of one model and dataset; a comparison holds when "
              "the first cell's weighted F1 is above the second's (mean over seeds). With two or more seeds in both "
              "cells, the per-seed differences (paired by seed) get a 95% Student-t interval: supported when it lies "
              "above 0, contradicted when below. Every finished seed counts, diverged and collapsed ones included. "
              "The paper's counts are over the same comparisons in its own numbers (for a model that is not in the "
              "paper, each of its models'); E-marks name paper cells listed under Paper errata. A comparison that rests "
              "on a seed still improving when it stopped is unsettled: listed apart, counted neither way."]
    for table, model in sorted({(c.table, c.model) for c in comps}):
        mine = [c for c in comps if (c.table, c.model) == (table, model)]
        lines += ["", f"### Findings: {table_titles[table]}, {model}", "", "| claim | verdict | detail |", "|---|---|---|"]
        for claim in CLAIMS:
            t = tally(c for c in mine if c.claim == claim)
            lines.append(f"| {claim} | {verdict(t)} | {_counts(t)} |")
        failing = [c for c in mine if c.ours is not None and not c.holds and not c.unsettled]
        if failing:
            lines += ["", "Where a claim does not hold (better - worse, F1 points):"]
            lines += [f"- claim {c.claim}, {titles.get(c.dataset, c.dataset)}: {setting(*c.better)} vs {setting(*c.worse)}: "
                      f"{_diff(c)}" for c in sorted(failing, key=lambda c: (c.claim, c.dataset, c.worse))]
        unsettled = [c for c in mine if c.ours is not None and c.unsettled]
        if unsettled:
            lines += ["", "Unsettled (a seed of either cell was still improving when it stopped; not counted):"]
            lines += [f"- claim {c.claim}, {titles.get(c.dataset, c.dataset)}: {setting(*c.better)} vs {setting(*c.worse)}: "
                      f"{_diff(c)}" for c in sorted(unsettled, key=lambda c: (c.claim, c.dataset, c.worse))]
    return "\n".join(lines)


def claim_columns(rows: list[Row], comps: list[Comparison]) -> dict[tuple, dict]:
    """Row.key -> report.csv's CSV_FIELDS of that row: the comparisons in which it is the `worse` cell, claim1
    (clean - this), claim2_bottom / claim2_top (the previous level on that side - this), claim3 (top - this
    bottom); each with _lo, _hi (95% interval over seeds) and _paper (the paper's, for a model not in the paper
    its BERT-base's); None where the row is in no such comparison."""
    index = {}
    for c in comps:
        for name in ([f"claim2_{s}" for s in c.chains] if c.claim == 2 else [f"claim{c.claim}"]):
            index[(c.table, c.model, c.dataset, c.worse, name)] = c
    columns = {}
    for r in rows:
        values = columns[r.key] = {}
        for name in CSV_CLAIMS:
            c = index.get((r.table, r.model, r.dataset, (r.level, r.side), name))
            values[name], values[f"{name}_lo"], values[f"{name}_hi"] = (c.ours, c.lo, c.hi) if c else (None, None, None)
            values[f"{name}_paper"] = c.paper.get(r.model, c.paper.get("base")) if c else None
    return columns


CSV_CLAIMS = ("claim1", "claim2_bottom", "claim2_top", "claim3")
CSV_FIELDS = tuple(f"{n}{s}" for n in CSV_CLAIMS for s in ("", "_lo", "_hi", "_paper"))
