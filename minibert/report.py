"""The grid's report: the paper's claims tested (Findings), our tables beside the paper's, data sizes, figures,
the healing analysis (layer-wise CKA, report_healing.py) and Figure 1.

    python -m minibert.grid report runs/grid        # writes runs/grid/report.md, report.csv, figures/; prints the md
    python -m minibert.grid tsne runs/grid          # Figure 1: t-SNE of [CLS] features on AG News

    text, rows = report(Path("runs/grid"))           # the same from Python

report.md, top to bottom: how the numbers were made (recipe, model selection, flagged runs), Findings (a line
per claim, then per table and model), figures, data sizes beside Table 1, the tables, the paper's errata, the
components table when the grid has one (report_components.py; also written alone to components.md), healing.
report.csv: one line per table position, with the claim comparisons in which it is the worse cell (findings.py).
"""
import csv
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .checkpoint import load_classifier
from .cka import read_run, saved_model
from .config import PRESETS, BertConfig
from .corrupt import parse_spec
from .data import encode
from .datasets import DATASET_TITLES, load_dataset
from .findings import CSV_FIELDS as CLAIM_FIELDS
from .findings import claim_columns, comparisons, render_findings
from .grid import Cell, read_manifest
from .paper import ERRATA, MODELS, SIDES, TABLE1, TABLES, errata_of, paper_value
from .report_budget import BUDGET_CAPTION, budget_section, render_budget_figure
from .report_healing import healing_section
from .convergence import FIT_FRACTION, MIN_GAIN, MIN_LOSS_DROP, WINDOW, convergence
from .rundir import read_json, read_metrics, read_result, status
from .viz import budget_figure, level_figure, tsne_figure


def load_manifest(out: Path) -> tuple[dict[str, Cell], dict[str, str]]:
    """The cells a grid folder expects (name -> Cell) and each model's checkpoint."""
    path = out / "grid.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {out} a grid folder (made by python -m minibert.grid)?")
    raw, why = read_manifest(path)
    if raw is None:
        raise ValueError(f"{path} is corrupt ({why}); rerun the grid command that made {out}: it rebuilds the file "
                         "and reruns nothing that is done")
    grid = {name: Cell(**{k: c[k] for k in Cell.__dataclass_fields__ if k in c}) for name, c in raw.items()}
    return grid, {c["model"]: c["checkpoint"] for c in raw.values()}


def run_facts(run_dir: Path, result: dict) -> dict:
    """What a finished run was trained on and how: result.json's entries, else config.json's (older runs lack
    some: no recipe means `bert`, the only recipe then; no select_on means the test set; no collapsed flag, False;
    no convergence record, the test of convergence.py on its metrics.jsonl, and without one, None: unknown)."""
    try:
        config = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    args = config.get("args", {})

    def pick(key, default=None):
        for source in (result, config, args):
            if source.get(key) is not None:
                return source[key]
        return default
    converged = result.get("convergence")
    if converged is None:  # runs from before result.json recorded it: the same test on their metrics.jsonl
        history = read_metrics(run_dir / result.get("run_dir", ""))
        converged = convergence(history, pick("metric", "weighted_f1"), len(config.get("label_names") or [0, 1])) \
            if history else {"still_improving": None}  # no epochs recorded: nothing to judge by
    majority = result.get("majority_f1")
    return {"num_train": pick("num_train"), "num_test": pick("num_test"), "recipe": pick("recipe", "bert"),
            "select_on": pick("select_on", "test"), "collapsed": bool(result.get("collapsed")),
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
    return parse_spec("all" if level == 100 else f"{side}:{level / 100:g}", config.num_hidden_layers).layers


def layer_range(checkpoint: str, level: int, side: str, run_dirs=()) -> str:
    """'1-3' for base bottom 25%: the paper's notation ('' if the layers cannot be read)."""
    layers = corrupted_layers(checkpoint, level, side, run_dirs)
    if not layers:
        return ""
    return f"{layers[0]}-{layers[-1]}" if len(layers) > 1 else str(layers[0])


def table_rows(out: Path, table: str, group: list[Cell], checkpoints: dict) -> list[dict]:
    """One dict per (model, level, side, dataset) of `table`: ours over the seeds, the paper's, the difference,
    the data sizes beside Table 1's, the recipe and model selection, and the paper's errata marks."""
    positions = {}
    for cell in group:
        positions.setdefault((row_model(cell), cell.level, cell.side or "", cell.dataset), []).append(cell)
    rows = []
    for (model, level, side, dataset), members in positions.items():
        s, base = summarise(out, members), members[0].model
        ours, paper = s.mean(), paper_value(table, base, level, side or None, dataset)
        sizes = sorted({(f["num_train"], f["num_test"]) for f in s.facts if f["num_train"] is not None})
        paper_train, paper_test = TABLE1.get(dataset, (None, None))
        rows.append({"table": table, "model": model, "level": level, "side": side, "dataset": dataset,
                     "seeds": s.seeds, "done": len(s.done) + len(s.diverged), "diverged": len(s.diverged),
                     "f1": ours, "f1_std": statistics.stdev(s.done) if len(s.done) > 1 else None, "paper": paper,
                     "diff": None if ours is None or paper is None else ours - paper, "text": s.text(),
                     "layers": layer_range(checkpoints[base], level, side, [out / c.name for c in members]) if side else "",
                     "n_layers": _count(corrupted_layers(checkpoints[base], level, side, [out / c.name for c in members])),
                     "collapsed": s.collapsed, "by_seed": s.by_seed, "improving": len(s.improving),
                     "improving_seeds": s.improving, "limit": members[0].limit, "sizes": sizes,
                     "majority": statistics.fmean(m) if (m := [f["majority_f1"] for f in s.facts
                                                               if f["majority_f1"] is not None]) else None,
                     "num_train": min((a for a, _ in sizes), default=None),
                     "num_test": min((b for _, b in sizes), default=None),
                     "paper_train": paper_train, "paper_test": paper_test,
                     "small": bool(paper_train and sizes and any(a < paper_train or b < paper_test for a, b in sizes)),
                     "recipe": "/".join(sorted({f["recipe"] for f in s.facts})),
                     "select_on": "/".join(sorted({f["select_on"] for f in s.facts})),
                     "errata": " ".join(errata_of(table, base, level, side or None, dataset))})
    return rows


def _count(layers: list | None) -> int | None:
    return None if layers is None else len(layers)


def row_model(cell: Cell) -> str:
    """The model column of a cell's row: its label, with the training-set size on a data-budget grid."""
    return cell.model if cell.limit is None else f"{cell.model} n={cell.limit}"


def model_order(models) -> list[str]:
    """The paper's models in its order, then any others by name (sizes of one model in increasing order)."""
    def key(m):
        name, _, size = m.partition(" n=")
        return MODELS.index(name) if name in MODELS else len(MODELS), name, int(size or 0)
    return sorted(models, key=key)


def _entry(row: dict | None) -> str:
    if row is None:
        return ""
    marks = ("‡" if row["small"] else "") + (f" {row['errata']}" if row["errata"] else "")
    if row["diff"] is not None:
        return f"{row['text']} / {row['paper']:.2f} ({row['diff']:+.2f}){marks}"
    return row["text"] + (f" / {row['paper']:.2f}" if row["paper"] is not None else "") + marks


def table_datasets(table: str, present: set) -> list[str]:
    """The datasets of `present` in the paper's column order of `table`, then any others by name."""
    return [d for d in TABLES[table].datasets if d in present] + sorted(present - set(TABLES[table].datasets))


def render_markdown(table: str, rows: list[dict]) -> str:
    """The paper's layout: rows model x corruption, columns dataset x bottom/top; ours / paper (difference)."""
    datasets = table_datasets(table, {r["dataset"] for r in rows})
    at = {(r["model"], r["level"], r["side"], r["dataset"]): r for r in rows}
    head = ["model", "corruption"] + [f"{DATASET_TITLES.get(d, d)} {s}" for d in datasets for s in SIDES]
    lines = [f"### {TABLES[table].title}", "",
             "Weighted F1 (%) at the best epoch: ours / paper (ours - paper). 0% and 100% are one run per dataset, "
             "shown under bottom; the layers corrupted are in brackets (bottom / top). With several seeds: mean ± std "
             "over the seeds that did not diverge, (k div) seeds that diverged, [k/n] seeds finished so far; "
             "† every seed diverged (weighted F1 at or below the majority-class baseline); (k col) seeds that "
             "collapsed (predicted one class), kept in the mean; ‡ run on less data than the paper's Table 1 (sizes "
             "under Data); E1-E4: the paper's value is marked under Paper errata.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model in model_order({r["model"] for r in rows}):
        for level in sorted({r["level"] for r in rows if r["model"] == model}):
            whole = level in (0, 100)
            ranges = [next((r["layers"] for r in rows if (r["model"], r["level"], r["side"]) == (model, level, s)), "")
                      for s in SIDES]
            label = f"{level}%" if whole or not all(ranges) else f"{level}% ({' / '.join(ranges)})"
            entries = []
            for d in datasets:
                entries += [_entry(at.get((model, level, "", d))), ""] if whole else \
                           [_entry(at.get((model, level, s, d))) for s in SIDES]
            lines.append(f"| {model} | {label} | " + " | ".join(entries) + " |")
    return "\n".join(lines)


CSV_FIELDS = ("table", "model", "level", "side", "dataset", "seeds", "done", "diverged", "f1", "f1_std", "paper", "diff",
              "collapsed", "improving", "majority", "num_train", "num_test", "paper_train", "paper_test", "small", "recipe", "select_on",
              "errata", *CLAIM_FIELDS)


def write_csv(rows: list[dict], path: Path):
    """Long format, one line per table position; F1 in %, empty where there is no value yet."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()})


def render_header(rows: list[dict]) -> str:
    """How the numbers were made: recipe, model selection, diverged and collapsed runs."""
    recipes = sorted({x for r in rows for x in r["recipe"].split("/") if x})
    select = sorted({x for r in rows for x in r["select_on"].split("/") if x})
    lines = [f"Training recipe: {', '.join(f'`{x}`' for x in recipes) or 'none finished yet'} (train.py --recipe; "
             "runs from before recipes existed count as `bert`). Model selection: "
             f"{', '.join(f'`{x}`' for x in select) or 'none finished yet'} (--select-on; absent = `test`)."]
    if "test" in select:
        tests = [r["num_test"] for r in rows if r["select_on"] != "val" and r["num_test"]]
        lines.append("Selection on test: the best epoch and learning rate are chosen by test-set score (the paper's "
                     "way: \"we test every epoch and choose the best indicator\"), so every number is the best of "
                     "several test scores and optimistic" + (f", the more so on small test sets (here as few as "
                                                             f"{min(tests):,} examples)." if tests else "."))
    finished, improving = sum(r["done"] for r in rows), sum(r["improving"] for r in rows)
    lines.append(f"Convergence: {improving} of {finished} finished runs were still improving when they stopped "
                 f"(over the last {WINDOW} epochs against the {WINDOW} before, the test metric's mean rose more than "
                 f"{100 * MIN_GAIN:g} points, or the train loss fell more than {MIN_LOSS_DROP:.0%} while above "
                 f"{FIT_FRACTION:.0%} of chance; minibert/convergence.py), marked (k imp) in the tables; Findings count "
                 "no comparison that rests on one.")
    diverged, collapsed = sum(r["diverged"] for r in rows), sum(r["collapsed"] for r in rows)
    lines.append(f"Runs flagged: {diverged} diverged (weighted F1 at or below the majority-class baseline), left out of "
                 f"the table means unless all seeds of a cell diverged; {collapsed} collapsed (predicted one class), "
                 "kept in the table means and marked (k col); Findings count every finished run.")
    return "\n\n".join(lines)


def convergence_warning(rows: list[dict]) -> str | None:
    """A loud first line when more than a fifth of the finished runs were still learning when they stopped."""
    finished, improving = sum(r["done"] for r in rows), sum(r["improving"] for r in rows)
    if finished and improving > finished / 5:
        return (f"**Not converged: {improving} of {finished} finished runs ({improving / finished:.0%}) were still "
                "improving when they stopped. More training would change their numbers: read this report as a "
                "short-budget run, not as the paper's experiment.**")
    return None


def render_sizes(rows: list[dict]) -> str:
    """Train/test examples per table and dataset beside Table 1's; ‡ where a run had less."""
    seen = {}
    for r in rows:
        entry = seen.setdefault((r["table"], r["dataset"]), [set(), r["paper_train"], r["paper_test"]])
        entry[0].update(r["sizes"])
    lines = ["## Data", "", "Examples each run trained and was tested on, beside the paper's Table 1 (MRPC and RTE: "
             "GLUE's official splits, not in Table 1).", "", "| table | dataset | train / test (ours) | Table 1 |",
             "|---|---|---|---|"]
    for (table, dataset), (sizes, paper_train, paper_test) in seen.items():
        ours = ", ".join(f"{a:,} / {b:,}" for a, b in sorted(sizes)) or "not recorded"
        small = paper_train and any(a < paper_train or b < paper_test for a, b in sizes)
        paper = f"{paper_train:,} / {paper_test:,}" if paper_train else "-"
        lines.append(f"| {table} | {DATASET_TITLES.get(dataset, dataset)} | {ours}{' ‡' if small else ''} | {paper} |")
    return "\n".join(lines)


def level_panels(rows: list[dict], table: str, dataset: str) -> list[tuple]:
    """viz.level_figure's panels of one table and dataset: per model, every finished seed per number of layers
    corrupted and side, the paper's values for a paper model, and the majority-class baseline."""
    panels = []
    for model in model_order({r["model"] for r in rows if (r["table"], r["dataset"]) == (table, dataset)}):
        at = {(r["level"], r["side"]): r for r in rows
              if (r["table"], r["model"], r["dataset"]) == (table, model, dataset) and r["by_seed"]}
        x = {k: r["level"] if r["n_layers"] is None else r["n_layers"] for k, r in at.items()}
        ours, paper = {}, {}
        for side in SIDES:
            keys = sorted((lv, s) for lv, s in at if s in ("", side))
            if len(keys) > 1:
                ours[side] = [(x[k], list(at[k]["by_seed"].values())) for k in keys]
                marks = [(x[k], at[k]["paper"]) for k in keys if at[k]["paper"] is not None]
                if marks:
                    paper[side] = marks
        majorities = [r["majority"] for r in at.values() if r["majority"] is not None]
        if ours:
            panels.append((model, ours, paper, statistics.fmean(majorities) if majorities else None))
    return panels


def figure_range(rows: list[dict]) -> tuple[float, float]:
    """One y-range (F1 %) for every figure of a report: from 5 points under the lowest seed or baseline, down to a
    multiple of 10, up to 100."""
    values = [v for r in rows for v in r["by_seed"].values()] + [r["majority"] for r in rows if r["majority"]]
    return (10 * math.floor((min(values, default=5) - 5) / 10), 100.0)


def render_figures(out: Path, rows: list[dict]) -> str:
    """One PNG per table and dataset in <out>/figures/ (F1 against layers corrupted), and with a data-budget axis
    one of F1 against training examples; linked; a note without matplotlib."""
    pairs = [(t, d) for t in TABLES for d in table_datasets(t, {r["dataset"] for r in rows if r["table"] == t})]
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
        if any(r["limit"] is not None for r in rows):
            lines += ["", BUDGET_CAPTION, "", f"![data budget]({render_budget_figure(out, rows, ylim)})"]
    except ImportError as e:
        return "\n".join(lines + ["", f"(no figures: {e})"])
    return "\n".join(lines)


def render_errata() -> str:
    return "## Paper errata\n\n" + "\n".join(f"- {name}: {e.text}" for name, e in ERRATA.items())


def report(out: Path, healing_n: int = 2000, device: str = "cpu", healing_on: bool = True,
           figures_on: bool = True, probes_on: bool = True) -> tuple[str, list[dict]]:
    """The report of a grid folder as markdown, and its rows (for the CSV); figures go to <out>/figures/.
    A components grid's section (report_components.py) is also written alone to <out>/components.md."""
    from .report_components import components_section  # imported here: it builds on this module

    grid, checkpoints = load_manifest(out)
    tables, rows = [], []
    for table in TABLES:
        group = [c for c in grid.values() if c.table == table]
        if group:
            table_rows_ = table_rows(out, table, group, checkpoints)
            rows += table_rows_
            counts = {s: sum(status(out / c.name) == s for c in group) for s in ("done", "partial", "pending")}
            tables.append(render_markdown(table, table_rows_) + "\n\n" +
                          f"{len(group)} cells: {counts['done']} done, {counts['partial']} partial, {counts['pending']} pending; "
                          f"{sum(r['diverged'] for r in table_rows_)} diverged runs. "
                          f"{sum(r['collapsed'] for r in table_rows_)} collapsed runs.")
    comps = comparisons(rows)
    claim_columns(rows, comps)
    parts = [f"# Grid report: {out}", *filter(None, [convergence_warning(rows)]), render_header(rows),
             render_findings(comps, DATASET_TITLES, {t: TABLES[t].title for t in TABLES}),
             *([render_figures(out, rows)] if figures_on else []), *filter(None, [budget_section(rows)]),
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


# ---- Figure 1 ---------------------------------------------------------------------------------

def figure1(out: Path, table: str = "table2", model: str | None = None, dataset: str = "ag_news",
            level: int | None = None, seed: int = 0, n: int = 1000, device: str = "cpu", png: Path | None = None) -> Path:
    """The paper's Figure 1: t-SNE of the pooled [CLS] features (what the classifier sees) of the fine-tuned
    0%, top, bottom and 100% cells on the test set, as one 4-panel PNG. Needs cells run with --save-models."""
    from .tokenizer import load_tokenizer
    from .evaluation import extract

    grid, _ = load_manifest(out)
    mine = [c for c in grid.values() if (c.table, c.dataset, c.seed) == (table, dataset, seed)]
    model = model or next(iter(model_order({c.model for c in mine})), None)
    mine = [c for c in mine if c.model == model]
    partial = sorted({c.level for c in mine if c.level not in (0, 100)})
    level = level if level is not None else (partial[0] if partial else None)
    wanted = [(0, None, "0% corruption"), (level, "top", f"{level}% top corruption"),
              (level, "bottom", f"{level}% bottom corruption"), (100, None, "100% corruption")]
    panels, label_names = [], None
    for letter, (lv, side, title) in zip("abcd", wanted):
        # on a data-budget grid, the largest size whose model was saved (else the largest, and the error below)
        cell = max((c for c in mine if (c.level, c.side, c.component) == (lv, side, "all")),
                   key=lambda c: (saved_model(out / c.name, read_result(out / c.name)) is not None, c.limit or 0),
                   default=None) if lv is not None else None
        if cell is None:
            raise ValueError(f"{out} has no {table} cell for {model} {dataset} {title} seed {seed} "
                             f"(partial levels there: {partial or 'none'})")
        result = read_result(out / cell.name)
        model_dir = saved_model(out / cell.name, result) if result else None
        if model_dir is None:
            raise FileNotFoundError(f"{out / cell.name}: not finished or no saved model; run the grid with --save-models")
        args, _ = read_run(out / cell.name)
        data = load_dataset(args["dataset"], args["data_dir"], args["split"], args["seed"], args["limit"])
        test = data.test.take(range(min(n, len(data.test))))
        clf = load_classifier(model_dir, device)
        tokenizer = load_tokenizer(model_dir if (model_dir / "tokenizer.json").is_file() else args["checkpoint"])
        feats, labels = extract(clf, encode(test, tokenizer, args["max_length"]), 64, torch.device(device),
                                "fp32", tokenizer.pad_id)
        panels.append((f"({letter}) {title}: F1 {100 * result['best']['weighted_f1']:.1f}", feats.numpy(), labels.numpy()))
        label_names = data.label_names
    png = png or out / f"figure1-{table}-{model}-{dataset}-s{seed}.png"
    return tsne_figure(panels, label_names, png, seed=seed,
                       title=f"t-SNE of fine-tuned {model} features on {DATASET_TITLES.get(dataset, dataset)} (n={len(test)})")


def run_command(args) -> int:
    """`python -m minibert.grid report|tsne` (grid.py parses the command line and calls this)."""
    if args.command == "report":
        out = Path(args.dir)
        text, rows = report(out, args.healing_n, args.device, not args.no_healing, probes_on=not args.no_probes)
        (out / "report.md").write_text(text)
        write_csv(rows, out / "report.csv")
        print(text if args.format == "md" else (out / "report.csv").read_text(), end="")
        return 0
    png = figure1(Path(args.dir), args.table, args.model, args.dataset, args.level, args.seed, args.n,
                  args.device, Path(args.png) if args.png else None)
    print(f"wrote {png}")
    return 0
