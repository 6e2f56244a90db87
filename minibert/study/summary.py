"""A grid's numbers, one row per table position: each finished cell's facts (sizes, recipe, selection, flags,
convergence) and the summary over its seeds (mean, spread, diverged, collapsed, still improving), beside the paper's
value (a Row). report.py renders the rows, findings.py and budget.py read them; components.py summarises its own
cells with summarise().

    rows = table_rows(Path("runs/grid"), "table2", cells_of_table2, checkpoints)
"""
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from ..config import PRESETS, BertConfig
from ..corrupt import layer_ranges, parse_spec
from ..training.convergence import convergence
from ..training.rundir import read_config, read_json, read_metrics, read_result
from .cells import Cell, corrupt_spec, label_parts, model_label
from .paper import MODELS, TABLE1, errata_of, paper_value


def run_facts(run_dir: Path, result: dict) -> dict:
    """What a finished run was trained on and how: result.json's entries, else config.json's (older runs lack
    some: no recipe means `bert`, the only recipe then; no select_on means the test set; no collapsed flag, False).
    The convergence flag is recomputed from metrics.jsonl by convergence.py (its validation metric and train loss,
    never its test metric), so that committed runs get today's flag without a rerun; without a readable
    metrics.jsonl, result.json's record when it was made the same way, else None: unknown."""
    config = read_config(run_dir, resolve=False) or {}  # its paths are not read here
    args = config.get("args", {})

    def pick(key, default=None):
        for source in (result, config, args):
            if source.get(key) is not None:
                return source[key]
        return default
    history = read_metrics(run_dir / result.get("run_dir", ""))
    if history and all(r.get("train_loss") is not None for r in history):
        converged = convergence(history, pick("metric", "weighted_f1"), len(config.get("label_names") or [0, 1]),
                                pick("num_val"))
    else:  # a record that read the test metric (one without a basis) is no flag at all
        recorded = result.get("convergence")
        converged = recorded if isinstance(recorded, dict) and "basis" in recorded else {"still_improving": None}
    majority = result.get("majority_f1")
    return {"num_train": pick("num_train"), "num_test": pick("num_test"), "recipe": pick("recipe", "bert"),
            "select_on": pick("select_on", "test"), "collapsed": bool(result.get("collapsed")),
            "epochs_run": len(history) if history else result.get("epochs_run"), "epochs": pick("epochs"),
            "until_converged": bool(pick("until_converged", False)),
            "still_improving": converged["still_improving"], "majority_f1": None if majority is None else 100 * majority}


@dataclass
class Summary:
    """One table position (model, level, side, dataset) over its seeds: weighted F1 in %."""
    seeds: int  # cells expected
    done: list  # F1 of finished, non-diverged seeds
    diverged: list  # F1 of finished, diverged seeds
    partial: int
    collapsed: int = 0  # finished seeds flagged collapsed (diverged or not)
    by_seed: dict = field(default_factory=dict)  # seed -> F1 of every finished seed
    improving: set = field(default_factory=set)  # finished seeds still improving when they stopped (convergence.py)
    floor: set = field(default_factory=set)  # finished seeds at the majority-class floor: diverged or collapsed
    facts: list = field(default_factory=list)  # run_facts() of every finished seed

    def mean(self) -> float | None:
        values = self.done or self.diverged  # all seeds diverged: show what they reached, marked
        return statistics.fmean(values) if values else None

    def text(self) -> str:
        mean = self.mean()
        if mean is None:
            return "partial" if self.partial else "pending"
        text = f"{mean:.2f}"
        if len(self.done) > 1:
            text += f"±{statistics.stdev(self.done):.2f}"
        if not self.done:
            text += "†"
        elif self.diverged:
            text += f" ({len(self.diverged)} div)"
        if self.collapsed:
            text += f" ({self.collapsed} col)"
        if self.improving:
            text += f" ({len(self.improving)} imp)"
        if len(self.done) + len(self.diverged) < self.seeds:
            text += f" [{len(self.done) + len(self.diverged)}/{self.seeds}]"
        return text


def summarise(out: Path, group: list[Cell]) -> Summary:
    s = Summary(len(group), [], [], 0)
    for cell in group:
        result = read_result(out / cell.name)
        if result is None:
            s.partial += (out / cell.name).exists()
            continue
        f1, facts = 100 * result["best"]["weighted_f1"], run_facts(out / cell.name, result)
        (s.diverged if result["diverged"] else s.done).append(f1)
        s.by_seed[cell.seed] = f1
        s.facts.append(facts)
        s.collapsed += facts["collapsed"]
        if facts["still_improving"]:
            s.improving.add(cell.seed)
        if result["diverged"] or facts["collapsed"]:
            s.floor.add(cell.seed)
    return s


def corrupted_layers(checkpoint: str, level: int, side: str | None, run_dirs=()) -> list[int] | None:
    """The layers (1-based) a cell corrupts: those a finished run's corruption.json records, else those the
    checkpoint's config gives by the rounding train.py uses (None if neither can be read)."""
    if level == 0:
        return []
    for run_dir in run_dirs:  # what was run: the report of a copied folder needs no checkpoint
        recorded = read_json(Path(run_dir) / "corruption.json")
        if isinstance(recorded, dict) and recorded.get("layers"):
            return recorded["layers"]
    try:
        config = PRESETS[checkpoint][1] if checkpoint in PRESETS else BertConfig.from_json(Path(checkpoint) / "config.json")
    except (OSError, ValueError):
        return None
    return parse_spec(corrupt_spec(level, side), config.num_hidden_layers).layers


def layer_range(checkpoint: str, level: int, side: str, run_dirs=()) -> str:
    """'1-3' for base bottom 25%: the paper's notation ('' if the layers cannot be read)."""
    return layer_ranges(corrupted_layers(checkpoint, level, side, run_dirs) or [])


@dataclass(frozen=True)
class Row:
    """One table position (model, level, side, dataset) of a report: ours over the seeds (F1 in %), the paper's,
    the data sizes beside Table 1's, how the runs were made and what was flagged. report.csv's columns (less
    the claim comparisons, findings.claim_columns) are its fields of the same names."""
    table: str
    model: str  # cells.model_label(): the label, with the training-set size on a data-budget grid
    level: int
    side: str  # "" at 0% and 100%
    dataset: str
    seeds: int = 0  # cells expected
    done: int = 0  # finished, diverged or not
    diverged: int = 0
    f1: float | None = None  # Summary.mean()
    f1_std: float | None = None  # over the non-diverged seeds, with two or more
    paper: float | None = None
    diff: float | None = None  # f1 - paper
    text: str = "pending"  # Summary.text(): what the table shows
    layers: str = ""  # layer_range(): '1-3', '' at 0% and 100%
    n_layers: int | None = None  # layers corrupted (None if they cannot be read)
    collapsed: int = 0
    by_seed: dict = field(default_factory=dict)  # seed -> F1 of every finished seed
    improving: int = 0  # finished seeds still improving when they stopped
    improving_seeds: set = field(default_factory=set)
    floor_seeds: set = field(default_factory=set)  # finished seeds at the majority-class floor (diverged or collapsed)
    limit: int | None = None  # the training-set size on a data-budget grid
    sizes: list = field(default_factory=list)  # sorted (train, test) examples of the finished seeds
    majority: float | None = None  # the majority-class baseline's weighted F1, mean over seeds
    num_train: int | None = None  # the smallest of sizes
    num_test: int | None = None
    epochs_run: list = field(default_factory=list)  # sorted epochs trained by the finished seeds
    max_epochs: int | None = None  # --epochs: the most with --until-converged, else every seed's
    until_converged: bool = False  # a seed stopped at its first converged epoch (train --until-converged)
    paper_train: int | None = None  # Table 1's
    paper_test: int | None = None
    small: bool = False  # a run had less data than Table 1's
    recipe: str = ""  # "/"-joined over the seeds
    select_on: str = ""
    errata: str = ""  # the paper.ERRATA ids that mark the paper's cell, space-separated

    @property
    def key(self) -> tuple:
        return self.table, self.model, self.dataset, self.level, self.side


def table_rows(out: Path, table: str, group: list[Cell], checkpoints: dict) -> list[Row]:
    """One Row per (model, level, side, dataset) of `table`: ours over the seeds, the paper's, the difference,
    the data sizes beside Table 1's, the recipe and model selection, and the paper's errata marks."""
    positions = {}
    for cell in group:
        key = (model_label(cell.model, cell.limit), cell.level, cell.side or "", cell.dataset)
        positions.setdefault(key, []).append(cell)
    rows = []
    for (model, level, side, dataset), members in positions.items():
        s, base = summarise(out, members), members[0].model
        ours, paper = s.mean(), paper_value(table, base, level, side or None, dataset)
        sizes = sorted({(f["num_train"], f["num_test"]) for f in s.facts if f["num_train"] is not None})
        paper_train, paper_test = TABLE1.get(dataset, (None, None))
        run_dirs = [out / c.name for c in members]
        majority = [f["majority_f1"] for f in s.facts if f["majority_f1"] is not None]
        rows.append(Row(
            table, model, level, side, dataset, seeds=s.seeds, done=len(s.done) + len(s.diverged),
            diverged=len(s.diverged), f1=ours, f1_std=statistics.stdev(s.done) if len(s.done) > 1 else None,
            paper=paper, diff=None if ours is None or paper is None else ours - paper, text=s.text(),
            layers=layer_range(checkpoints[base], level, side, run_dirs) if side else "",
            n_layers=_count(corrupted_layers(checkpoints[base], level, side, run_dirs)), collapsed=s.collapsed,
            by_seed=s.by_seed, improving=len(s.improving), improving_seeds=s.improving, floor_seeds=s.floor,
            limit=members[0].limit,
            sizes=sizes, majority=statistics.fmean(majority) if majority else None,
            num_train=min((a for a, _ in sizes), default=None), num_test=min((b for _, b in sizes), default=None),
            epochs_run=sorted(f["epochs_run"] for f in s.facts if f["epochs_run"] is not None),
            max_epochs=max((f["epochs"] for f in s.facts if f["epochs"] is not None), default=None),
            until_converged=any(f["until_converged"] for f in s.facts),
            paper_train=paper_train, paper_test=paper_test,
            small=bool(paper_train and sizes and any(a < paper_train or b < paper_test for a, b in sizes)),
            recipe="/".join(sorted({f["recipe"] for f in s.facts})),
            select_on="/".join(sorted({f["select_on"] for f in s.facts})),
            errata=" ".join(errata_of(table, base, level, side or None, dataset))))
    return rows


def _count(layers: list | None) -> int | None:
    return None if layers is None else len(layers)


def model_order(models) -> list[str]:
    """The paper's models in its order, then any others by name (sizes of one model in increasing order)."""
    def key(m):
        name, size = label_parts(m)
        return MODELS.index(name) if name in MODELS else len(MODELS), name, size
    return sorted(models, key=key)
