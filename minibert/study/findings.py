"""The paper's three claims, tested on a grid's numbers and counted on the paper's own, in words no stronger than
their intervals.

    comps = comparisons(rows)            # rows: summary.table_rows()
    c.word(margin=2.0)                   # 'costs' | 'gains' | 'equivalent within ±2' | 'not settled'
    tally(c for c in comps if c.claim == 3)  # -> cells, verdict words, paper counts

The claims (section 4.2 of the paper), each as comparisons of two cells of one model and dataset where
the claim expects the first ("better") to score a higher weighted F1 than the second ("worse"):

    1. "a corrupted BERT model is unable to fully recover": clean (0%) > every corrupted setting
    2. "As the degree of corruption increases, the fine-tuned performance decreases": per side, each level
       > the next one (0% > bottom25 > bottom50 > bottom75 > 100%, and the same on top)
    3. "the impact of bottom-layer corruption is greater than top-layer corruption": top L% > bottom L%

A comparison is better - worse, paired by seed over the seeds both cells finished: the mean of the per-seed
differences with Student-t intervals (mean ± t · sd / sqrt(n), t from the tables below), and it is said in one of
four ways, nothing stronger (DESIGN.md, "Verdict words"): going from the first cell to the second
    costs                  the 95% interval lies above 0
    gains                  it lies below 0
    equivalent within ±m   the 90% interval lies inside [-m, +m]: two one-sided tests at 5% (TOST); m is declared
                           once per report (MARGIN F1 points unless `grid report --margin` says otherwise)
    not settled            anything else; and always when at some seed both runs sit at the majority-class floor
                           (diverged or collapsed: it would rank two runs that learnt nothing), or with fewer than
                           two paired seeds.
A run still improving when it stopped (convergence.py) is not evidence: more training could move it. A comparison
that pairs one is said only when the seeds left without it say the same word on their own (settled_word()); its
word then rests on converged runs alone, and the text names the runs set aside. Otherwise it is not settled.
Every other finished seed counts, diverged and collapsed ones too: a corrupted model that failed to learn beside a
clean one that did is part of what the claim is about. "Recovered" means equivalent within ±m.
"""
import math
import statistics
from collections import Counter
from dataclasses import dataclass, field

from .cells import label_parts, setting, setting_label
from .paper import MODELS, SIDES, errata_of, paper_value
from .summary import Row

CLAIMS = {1: "corrupted models do not fully recover (clean > corrupted)",
          2: "more corruption is worse (each level > the next, per side)",
          3: "bottom corruption hurts more than top (top > bottom at the same level)"}
MARGIN = 2.0  # F1 points: the equivalence margin m unless `grid report --margin` gives another
# t(0.975, df) and t(0.95, df): Student's two-sided 95% and 90% quantiles; between entries the smaller df's (wider)
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}
T95 = {1: 6.314, 2: 2.920, 3: 2.353, 4: 2.132, 5: 2.015, 6: 1.943, 7: 1.895, 8: 1.860, 9: 1.833, 10: 1.812,
       12: 1.782, 15: 1.753, 20: 1.725, 30: 1.697}
NOT_SETTLED = "not settled"


def t975(df: int) -> float:
    """The 95% two-sided t quantile for df degrees of freedom (conservative between table entries)."""
    return T975[max(k for k in T975 if k <= df)]


def t95(df: int) -> float:
    """The 90% two-sided (95% one-sided) t quantile for df degrees of freedom (conservative between entries)."""
    return T95[max(k for k in T95 if k <= df)]


@dataclass(frozen=True)
class Paired:
    """better - worse paired by seed: the mean difference, its 95% and 90% t-intervals (None under 2 pairs)."""
    mean: float | None
    lo: float | None = None
    hi: float | None = None
    lo90: float | None = None
    hi90: float | None = None
    pairs: int = 0
    seeds: tuple = ()  # the paired seeds


def paired(better: dict, worse: dict) -> Paired:
    """better - worse over the seeds both have. With no common seed, the difference of the means (no pairs)."""
    common = tuple(sorted(set(better) & set(worse)))
    if not common:
        if not better or not worse:
            return Paired(None)
        return Paired(statistics.fmean(better.values()) - statistics.fmean(worse.values()))
    diffs = [better[s] - worse[s] for s in common]
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return Paired(mean, pairs=1, seeds=common)
    se = statistics.stdev(diffs) / math.sqrt(len(diffs))
    h95, h90 = t975(len(diffs) - 1) * se, t95(len(diffs) - 1) * se
    return Paired(mean, mean - h95, mean + h95, mean - h90, mean + h90, len(diffs), common)


def without(better: dict, worse: dict, improving: tuple) -> Paired:
    """paired() over the seeds at which neither run is in `improving` ((name, seed) pairs: still improving)."""
    out = {seed for _, seed in improving}
    return paired({s: v for s, v in better.items() if s not in out}, {s: v for s, v in worse.items() if s not in out})


def settled_word(p: Paired, converged: Paired | None, margin: float, up: str = "costs", down: str = "gains") -> str:
    """word() of a paired difference whose seeds include runs still improving: the word when `converged` (the same
    difference without those seeds; None when there are none) says it too, else not settled."""
    said = word(p, margin, up, down)
    return said if converged is None or word(converged, margin, up, down) == said else NOT_SETTLED


def set_aside(improving: tuple, converged: Paired, margin: float, up: str = "costs", down: str = "gains") -> str:
    """What the seeds without the runs still improving say: 'without bottom25 seed 5 (still improving): +7.80 [+5.10,
    +10.50] over 9 seeds, costs'."""
    head = f"without {still_improving(improving).removesuffix(' still improving')} (still improving): "
    if converged.mean is None:
        return head + "no seed left"
    if converged.lo is None:
        return head + f"{converged.mean:+.2f} on 1 seed, {NOT_SETTLED}"
    return (head + f"{converged.mean:+.2f} {fmt_interval(converged.lo, converged.hi)} over {converged.pairs} seeds, "
            f"{word(converged, margin, up, down)}")


def paired_interval(better: dict, worse: dict) -> tuple[float | None, float | None, float | None, int]:
    """(mean difference, 95% low, 95% high, pairs) of better - worse over the seeds both have (paired())."""
    p = paired(better, worse)
    return p.mean, p.lo, p.hi, p.pairs


def equivalent(margin: float) -> str:
    return f"equivalent within ±{margin:g}"


def word(p: Paired, margin: float, up: str = "costs", down: str = "gains") -> str:
    """The verdict word of a paired difference (the module doc); `up`/`down` name the direction ("grows" for a
    difference that increases along the data axis)."""
    if p.pairs < 2 or p.lo is None:
        return NOT_SETTLED
    if p.lo > 0:
        return up
    if p.hi < 0:
        return down
    if p.lo90 is not None and -margin < p.lo90 and p.hi90 < margin:
        return equivalent(margin)
    return NOT_SETTLED


@dataclass(kw_only=True)
class Comparison:
    """One test of one claim: cell `better` is expected above cell `worse`; ours .. pairs as paired()'s. Built
    with keywords only."""
    claim: int | str  # 1-3; components.py's questions by name
    table: str
    model: str
    dataset: str
    better: tuple  # (level, side), side "" at 0% and 100% (components.py: (level, side, component))
    worse: tuple
    ours: float | None  # better - worse, F1 points
    lo: float | None  # 95% interval
    hi: float | None
    pairs: int
    lo90: float | None = None  # 90% interval (the equivalence test)
    hi90: float | None = None
    chains: tuple = ()  # claim 2: the sides whose chain the step belongs to
    paper: dict = field(default_factory=dict)  # paper model -> better - worse in the paper's numbers
    improving: tuple = ()  # the paired runs of either cell still improving when they stopped: (setting, seed)
    converged: Paired | None = None  # better - worse over the seeds without them (None when there are none)
    floor: tuple = ()  # seeds at which both cells' runs sit at the majority-class floor

    @property
    def holds(self) -> bool:
        return self.ours is not None and self.ours > 0

    @property
    def supported(self) -> bool:
        return self.lo is not None and self.lo > 0

    @property
    def contradicted(self) -> bool:
        return self.hi is not None and self.hi < 0

    @property
    def interval(self) -> Paired:
        """better - worse over every paired seed, as paired() gives it."""
        return Paired(self.ours, self.lo, self.hi, self.lo90, self.hi90, self.pairs)

    def word(self, margin: float = MARGIN) -> str:
        """costs | gains | equivalent within ±margin | not settled (the module doc)."""
        return NOT_SETTLED if self.floor else settled_word(self.interval, self.converged, margin)

    def unsettled(self, margin: float = MARGIN) -> bool:
        """Not settled because of runs still improving: every seed says a word that the seeds without them do not."""
        said = word(self.interval, margin)
        return self.converged is not None and said != NOT_SETTLED and word(self.converged, margin) != said

    def why(self, margin: float = MARGIN) -> str:
        """What stands behind the word beyond the interval ('' when nothing does): the runs still improving and what
        the seeds without them say, the pairs at the floor, a single seed."""
        reasons = []
        if self.converged is not None:
            reasons.append(set_aside(self.improving, self.converged, margin))
        if self.floor:
            reasons.append(f"both at the majority-class floor at seed {', '.join(map(str, self.floor))}")
        if not reasons and self.pairs < 2:
            reasons.append("one seed: no interval" if self.pairs else "no paired seed")
        return "; ".join(reasons)


def still_improving(runs) -> str:
    """'bottom25 seeds 0, 1, 100% seed 2 still improving' from (setting, seed) pairs."""
    by = {}
    for name, seed in runs:
        by.setdefault(name, []).append(str(seed))
    return ", ".join(f"{name} seed{'s' if len(v) > 1 else ''} {', '.join(v)}" for name, v in by.items()) + \
        " still improving"


def compare_rows(better: Row, worse: Row, **fields) -> Comparison:
    """A Comparison of two table positions (summary.Row) paired by seed, with the runs it rests on checked."""
    p = paired(better.by_seed, worse.by_seed)
    improving = tuple((setting(r.level, r.side), s) for r in (better, worse) for s in p.seeds if s in r.improving_seeds)
    floor = tuple(s for s in p.seeds if s in better.floor_seeds and s in worse.floor_seeds)
    return Comparison(better=(better.level, better.side), worse=(worse.level, worse.side), ours=p.mean, lo=p.lo,
                      hi=p.hi, lo90=p.lo90, hi90=p.hi90, pairs=p.pairs, improving=improving,
                      converged=without(better.by_seed, worse.by_seed, improving) if improving else None, floor=floor,
                      **fields)


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
    groups = {}
    for r in rows:
        if r.by_seed:
            groups.setdefault((r.table, r.model, r.dataset), {})[(r.level, r.side)] = r
    out = []
    for (table, model, dataset), at in groups.items():
        levels = sorted({lv for lv, _ in at})
        for claim, better, worse, chains in _steps(levels, lambda k: k in at):
            out.append(compare_rows(at[better], at[worse], claim=claim, table=table, model=model, dataset=dataset,
                                    chains=chains,
                                    paper=_paper_diffs(table, label_parts(model)[0], dataset, better, worse)))
    return out


def tally(comps, margin: float = MARGIN) -> dict:
    """Counts over comparisons: the verdict words ("words"); cells (those not unsettled by a run still improving),
    held, tested (>= 2 pairs), supported, contradicted, unsettled; and per paper model (cells, in the claim's
    direction, how many involve a cell marked in paper.ERRATA) over the same comparisons."""
    comps = list(comps)
    paper = {}
    for c in comps:
        for m, d in c.paper.items():
            n, k, marked = paper.get(m, (0, 0, 0))
            paper[m] = (n + 1, k + (d > 0), marked + bool(paper_marks(c, m)))
    settled = [c for c in comps if not c.unsettled(margin)]
    words = Counter(c.word(margin) for c in comps)
    return {"all": len(comps), "words": words, "improving": len(comps) - len(settled),
            "floor": sum(bool(c.floor) and not c.unsettled(margin) for c in comps),
            "cells": len(settled), "held": sum(c.holds for c in settled), "tested": sum(c.pairs >= 2 for c in settled),
            "supported": sum(c.supported for c in settled), "contradicted": sum(c.contradicted for c in settled),
            "unsettled": len(comps) - len(settled), "paper": paper}


def verdict(t: dict) -> str:
    """holds (in every cell) | fails (in none) | mixed: on the means (components.py's answers)."""
    if not t["cells"]:
        return "unsettled" if t["unsettled"] else "untested"
    return "holds" if t["held"] == t["cells"] else "fails" if t["held"] == 0 else "mixed"


def word_counts(t: dict, margin: float) -> str:
    """'3 costs, 0 gains, 1 equivalent within ±2, 2 not settled (1 because of a run still improving)'."""
    words = t["words"]
    text = (f"{words['costs']} costs, {words['gains']} gains, {words[equivalent(margin)]} {equivalent(margin)}, "
            f"{words[NOT_SETTLED]} {NOT_SETTLED}")
    why = [f"{t['improving']} because of a run still improving"] if t["improving"] else []
    why += [f"{t['floor']} between runs at the majority-class floor"] if t["floor"] else []
    return text + (f" ({', '.join(why)})" if why else "")


def _paper_counts(t: dict) -> str:
    paper = "; ".join(f"paper ({m}): {k} of {n}" + (f" ({marked} with a cell marked under Paper errata)" if marked else "")
                      for m, (n, k, marked) in t["paper"].items())
    return (paper + " in the claim's direction") if paper else "paper: no such cells"


def fmt_interval(lo: float | None, hi: float | None) -> str:
    return "" if lo is None else f"[{lo:+.2f}, {hi:+.2f}]"


def _paper_diff(c: Comparison) -> str:
    paper = ", ".join(f"{m} {d:+.2f}" for m, d in c.paper.items())
    marks = sorted({e for m in c.paper for e in paper_marks(c, m)})
    return paper + (f" ({', '.join(marks)})" if marks else "")


def verdict_text(c: Comparison, margin: float) -> str:
    """The comparison's word, with why when a run it rests on overrides its interval, and 'and equivalent within
    ±m' beside costs or gains when the 90% interval also lies inside the margin (a cost too small to matter)."""
    said, why = c.word(margin), c.why(margin)
    if said in ("costs", "gains") and -margin < c.lo90 and c.hi90 < margin:
        said += f", and {equivalent(margin)}"
    return said + (f" ({why})" if why else "")


def render_findings(comps: list[Comparison], titles: dict, table_titles: dict, margin: float = MARGIN) -> str:
    """The Findings section: per claim the verdict words counted over everything, then per table and model the
    counts and every comparison with its intervals, its word and the paper's difference."""
    if not comps:
        return "## Findings\n\nNo finished pair of cells to compare yet."
    lines = ["## Findings", ""]
    for claim, text in CLAIMS.items():
        t = tally((c for c in comps if c.claim == claim), margin)
        lines.append(f"{claim}. **{text}**: of {t['all']} comparisons, {word_counts(t, margin)}; {_paper_counts(t)}.  ")
    lines += ["", "Each claim is a set of comparisons of two cells of one model and dataset, first - second (the claim "
              "expects the first above the second), paired by seed over the seeds both finished, each said in one of "
              "the four verdict words above. The paper's counts are over the same comparisons in its own numbers, one "
              "run per cell, so without an interval (for a model that is not in the paper, each of its models'); "
              "E-marks name paper cells listed under Paper errata."]
    head = "| claim | " + " | ".join(("costs", "gains", equivalent(margin), NOT_SETTLED)) + " | paper |"
    for table, model in sorted({(c.table, c.model) for c in comps}):
        mine = [c for c in comps if (c.table, c.model) == (table, model)]
        lines += ["", f"### Findings: {table_titles[table]}, {model}", "", head, "|---|---|---|---|---|---|"]
        for claim in CLAIMS:
            t = tally((c for c in mine if c.claim == claim), margin)
            w = t["words"]
            lines.append(f"| {claim} | {w['costs']} | {w['gains']} | {w[equivalent(margin)]} | {w[NOT_SETTLED]} | "
                         f"{_paper_counts(t)} |")
        lines += ["", "| claim | dataset | first vs second | first - second | 95% interval | 90% interval | seeds | "
                      "verdict | paper (first - second) |", "|---|---|---|---|---|---|---|---|---|"]
        for c in sorted(mine, key=lambda c: (c.claim, c.dataset, c.worse)):
            ours = "" if c.ours is None else f"{c.ours:+.2f}"
            lines.append(f"| {c.claim} | {titles.get(c.dataset, c.dataset)} | {setting(*c.better)} vs "
                         f"{setting(*c.worse)} | {ours} | {fmt_interval(c.lo, c.hi)} | {fmt_interval(c.lo90, c.hi90)} "
                         f"| {c.pairs} | {verdict_text(c, margin)} | {_paper_diff(c)} |")
    return "\n".join(lines)


# ---- three questions of a Table 2 layout, over every seed ---------------------------------------------

QUESTIONS = ("clean vs top L: does a random top recover (recovered: equivalent within ±m)?",
             "bottom L vs all layers: do the pre-trained layers above a random bottom add anything (costs: they do)?",
             "clean vs bottom L: what does a random bottom cost?")


def question_comparisons(rows: list[Row]) -> list[tuple[str, str, Comparison]]:
    """(question, label, Comparison) for every table, model and dataset with clean, top L, bottom L and all layers
    finished (L the lowest level run on both sides): clean vs top L, bottom L vs all, clean vs bottom L, each paired
    over every seed both cells have (more seeds than the rest of the table where more were run)."""
    groups = {}
    for r in rows:
        if r.by_seed:
            groups.setdefault((r.table, r.model, r.dataset), {})[(r.level, r.side)] = r
    out = []
    for (table, model, dataset), at in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][2], _size(kv[0][1]))):
        levels = sorted(lv for lv in {lv for lv, s in at if s} if (lv, "top") in at and (lv, "bottom") in at)
        if not levels or (0, "") not in at or (100, "") not in at:
            continue
        level, total = levels[0], at[100, ""].n_layers

        def name(key):
            return setting_label(key[0], key[1], at[key].n_layers, total)
        fields = dict(table=table, model=model, dataset=dataset)
        for question, (a, b) in zip(("top", "above", "bottom"), (((0, ""), (level, "top")),
                                                                ((level, "bottom"), (100, "")),
                                                                ((0, ""), (level, "bottom")))):
            out.append((question, f"{name(a)} vs {name(b)}", compare_rows(at[a], at[b], claim=question, **fields)))
    return out


def _size(model: str) -> int:
    return label_parts(model)[1]


def render_questions(rows: list[Row], titles: dict, margin: float = MARGIN) -> str | None:
    """The '## Three questions' section (None when no group has the four settings)."""
    found = question_comparisons(rows)
    if not found:
        return None
    lines = ["## Three questions, over every seed", "",
             "Where a table has clean, top L, bottom L and all layers re-initialised (L the lowest level run on both "
             "sides), each paired by seed over every seed both settings finished: " + "; ".join(QUESTIONS) +
             f" First - second, F1 points; verdict words as in Findings (m = {margin:g}).", "",
             "| model | dataset | first vs second | seeds | first - second | 95% interval | 90% interval | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for _, label, c in found:
        ours = "" if c.ours is None else f"{c.ours:+.2f}"
        lines.append(f"| {c.model} | {titles.get(c.dataset, c.dataset)} | {label} | {c.pairs} | {ours} | "
                     f"{fmt_interval(c.lo, c.hi)} | {fmt_interval(c.lo90, c.hi90)} | {verdict_text(c, margin)} |")
    return "\n".join(lines)


def claim_columns(rows: list[Row], comps: list[Comparison], margin: float = MARGIN) -> dict[tuple, dict]:
    """Row.key -> report.csv's CSV_FIELDS of that row: the comparisons in which it is the `worse` cell, claim1
    (clean - this), claim2_bottom / claim2_top (the previous level on that side - this), claim3 (top - this
    bottom); each with _lo, _hi (95% interval over seeds), _verdict (the verdict word) and _paper (the paper's, for
    a model not in the paper its BERT-base's); None where the row is in no such comparison."""
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
            values[f"{name}_verdict"] = c.word(margin) if c else None
            values[f"{name}_paper"] = c.paper.get(r.model, c.paper.get("base")) if c else None
    return columns


CSV_CLAIMS = ("claim1", "claim2_bottom", "claim2_top", "claim3")
CSV_FIELDS = tuple(f"{n}{s}" for n in CSV_CLAIMS for s in ("", "_lo", "_hi", "_verdict", "_paper"))
