"""The paper's experiment grid: Tables 2-5 as one resumable, shardable set of train.py runs, and their report.

    python -m minibert.grid table2 --out runs/grid               # run every cell of Table 2 (finished ones skipped)
    python -m minibert.grid table2 --out runs/grid --shard 3/8   # only the 4th of 8 disjoint parts (a job array)
    python -m minibert.grid table2 --out runs/grid --list        # one line per cell: name, status, command
    python -m minibert.grid report runs/grid                     # our tables beside the paper's, + healing (CKA)
    python -m minibert.grid tsne runs/grid --model base          # Figure 1: t-SNE of [CLS] features on AG News
    python -m minibert.grid table2 --quick DIR --out /tmp/q      # a small checkpoint (MiniLM) on small data: a CPU
    python -m minibert.grid components --out runs/c --checkpoint minilm=DIR   # which parts of a layer heal

A cell is one `train.py` run (one model, dataset, corruption and seed) in its own directory
<out>/<table>-<model>-<dataset>-<level>-s<seed>. A cell is done when its result.json says so, partial
when its directory exists without that, pending otherwise. Running a grid skips done cells and resumes
partial ones (train.py --resume continues from the last finished epoch), so a grid can be stopped and
started again at any time. Cells are listed in a fixed order and shard i/n takes those whose index is
i modulo n: shards started with the same arguments split the grid without overlap, which is how a job
array or several machines on a shared filesystem share one grid. A process runs a cell only while it holds
the cell's lock (<out>/logs/<cell>.lock, minibert/jobs.py): grids or shards started twice on one folder
never run a cell twice, each skips the cells another one is running and says who. <out>/grid.json records
every cell the grid was asked for, so `report` can show what is still missing; logs go to <out>/logs/<cell>.log.
A corrupt result.json is moved aside and its cell rerun; a corrupt grid.json is rebuilt; both with a note.

Corruption levels are the paper's: base and large 0/25/50/75/100%, DistilBERT 0/50/100%, where 25-75%
come in a bottom and a top variant and 0% and 100% are one run each.

`components` is not a table of the paper (issue 15): fine-tuned with mean pooling like Table 3, it corrupts
only a part of the chosen layers (corrupt.py's /attn, /ffn, /norm, /qk) beside the whole layers (all):
by default clean + bottom/top 50% x {all, attn, ffn, norm, qk}, 11 cells per model, dataset and seed.
"""
import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import MISSING, asdict, dataclass
from pathlib import Path


from .cli import Parser, fail, main_wrapper
from .datasets import DATASETS, SPLITS, default_data_root
from .jobs import Lock, claim, holder, locked, run_child
from .paper import LEVELS, MODELS, SIDES, SIX, TABLES, PaperTable
from .rundir import check_writable, corrupt_results, read_result, set_aside_corrupt, status, write_text
from .optim import RECIPES
from .train_config import SELECT_ON, TrainConfig, train_flags, validate

REPO = Path(__file__).resolve().parent.parent
TRAIN = REPO / "train.py"
QUICK_DATASETS = {"table2": ("ag_news", "emotion"), "table3": ("ag_news", "emotion"),
                  "table4": ("ag_news", "dbpedia"), "table5": ("mrpc", "rte"), "components": ("ag_news", "emotion")}
# Not a paper table: what in the chosen layers is corrupted, at the levels given (default 0 and 50%).
COMPONENTS = ("all", "attn", "ffn", "norm", "qk")
COMPONENTS_TABLE = PaperTable("components", "Components: fine-tuned, mean pooling, a part of each corrupted layer",
                              "mean", "finetune", SIX, {})
GRID_TABLES = {**TABLES, "components": COMPONENTS_TABLE}
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
    component: str = "all"  # what in the corrupted layers: all, or a corrupt.py component (the components table)

    @property
    def corrupt(self) -> str:
        """The train.py --corrupt spec: none, all, or e.g. bottom:0.25 (rounded half up to whole layers), with
        /attn etc. for a component."""
        if self.level == 0:
            return "none"
        spec = "all" if self.level == 100 else f"{self.side}:{self.level / 100:g}"
        return spec if self.component == "all" else f"{spec}/{self.component}"

    @property
    def setting(self) -> str:
        """Short corruption label: 0, bottom25, top25, ..., 100; bottom50-attn for a component."""
        label = str(self.level) if self.side is None else f"{self.side}{self.level}"
        return label if self.component == "all" or self.level == 0 else f"{label}-{self.component}"

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
    recipe: str = "hf-trainer"  # train.py --recipe: the optimiser, schedule and clipping around the paper's settings
    select_on: str = "test"  # train.py --select-on: where the best epoch and lr are chosen (test: the paper's way)


def cells(cfg: GridConfig) -> list[Cell]:
    """Every cell of the grid, in a fixed order: model, dataset, seed, then 0%, bottom/top 25-75%, 100%
    (the components table: each corrupted level and side once per component)."""
    out = []
    parts = COMPONENTS if cfg.table == "components" else ("all",)
    for model in cfg.models:
        levels = [lv for lv in LEVELS.get(model, (0, 25, 50, 75, 100)) if lv in cfg.levels]
        for dataset in cfg.datasets:
            for seed in cfg.seeds:
                for level in levels:
                    for side in ((None,) if level in (0, 100) else SIDES):
                        out += [Cell(cfg.table, model, dataset, level, side, seed, part)
                                for part in (("all",) if level == 0 else parts)]
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


def lock_path(cfg: GridConfig, cell: Cell) -> Path:
    """The lock file a process holds while it runs `cell` (see minibert/jobs.py), beside the cell's log."""
    return cfg.out / "logs" / f"{cell.name}.lock"


def status_line(cfg: GridConfig, cell: Cell) -> str:
    """status() and, in brackets, whether another process runs the cell or a result file is corrupt."""
    where, notes = cell_dir(cfg, cell), []
    who = holder(lock_path(cfg, cell))
    if who is not None:
        notes.append(f"running: {who}")
    notes += [f"{path} is corrupt ({why}), will rerun" for path, why in corrupt_results(where)]
    return status(where) + (f" ({'; '.join(notes)})" if notes else "")


def train_config(cfg: GridConfig, cell: Cell) -> TrainConfig:
    """What one cell's train.py runs. Always resume: a partial cell continues where it stopped."""
    table = GRID_TABLES[cell.table]
    return TrainConfig(model=str(cfg.models[cell.model]), dataset=cell.dataset, split=cfg.split, corrupt=cell.corrupt,
                       seed=cell.seed, pooling=table.pooling, mode=table.mode, lr=cfg.lr, epochs=cfg.epochs,
                       batch_size=cfg.batch_size, device=cfg.device, precision=cfg.precision,
                       out=str(cell_dir(cfg, cell)), cache_dir=str(cfg.out / "token_cache"), resume=True,
                       data_dir=str(cfg.data_root / cell.dataset) if cfg.data_root is not None else None,
                       max_length=cfg.max_length, limit=cfg.limit, save_model=cfg.save_models,
                       recipe=cfg.recipe, select_on=cfg.select_on)


def command(cfg: GridConfig, cell: Cell) -> list[str]:
    """The train.py command line of one cell."""
    return [sys.executable, str(TRAIN), *train_flags(train_config(cfg, cell))]


# ---- running ----------------------------------------------------------------------------------

def read_manifest(path: Path) -> tuple[dict | None, str | None]:
    """(grid.json's cells, None), or (None, why) when it is corrupt; ({}, None) when there is none."""
    try:
        cells_ = json.loads(path.read_text())["cells"]
    except FileNotFoundError:
        return {}, None
    except (OSError, ValueError, TypeError, KeyError) as e:
        return None, f"{type(e).__name__}: {e}"
    fields = {k for k, f in Cell.__dataclass_fields__.items() if f.default is MISSING}  # older grids lack component
    if not isinstance(cells_, dict) or not all(isinstance(c, dict) and fields | {"checkpoint"} <= set(c)
                                               for c in cells_.values()):
        return None, "not a grid manifest (need {'cells': {name: {table, model, dataset, ...}}})"
    return cells_, None


def write_manifest(cfg: GridConfig, grid: list[Cell]) -> str | None:
    """Add the grid's cells to <out>/grid.json, which `report` reads to know which cells to expect.

    Merged with what is there, so grids run into one folder with different filters add up; the merge holds
    <out>/grid.lock, so grids and shards that start together never lose each other's cells. A
    corrupt grid.json is rebuilt from this command line's cells: returns a one-line note saying so.
    """
    path = cfg.out / "grid.json"
    with locked(cfg.out / "grid.lock"):
        manifest, why = read_manifest(path)
        note = None if why is None else (f"{path} is corrupt ({why}); rebuilt from this command line's cells "
                                         "(rerun the other commands of this folder to add theirs)")
        manifest = manifest or {}
        for cell in grid:  # beside the Cell's fields: what the report states about how the cell was run
            entry = {**asdict(cell), "checkpoint": str(cfg.models[cell.model]), "recipe": cfg.recipe,
                     "select_on": cfg.select_on}
            old = manifest.get(cell.name, {})
            for key in ("recipe", "select_on"):
                if old.get(key, entry[key]) != entry[key]:
                    raise ValueError(f"{path}: {cell.name} was run with --{key.replace('_', '-')} {old[key]}, this "
                                     f"command asks for {entry[key]}; use a new --out, or the folder's setting")
            manifest[cell.name] = entry
        write_text(path, json.dumps({"cells": manifest}, indent=1, sort_keys=True) + "\n")
    return note


def describe(result: dict) -> str:
    best = result["best"]
    text = (f"weighted F1 {100 * best['weighted_f1']:.2f} (epoch {result['best_epoch']}, lr {result['lr']:g}, "
            f"{result['seconds']:.0f}s)")
    return text + (" DIVERGED" if result["diverged"] else "")


def run_cell(cfg: GridConfig, cell: Cell, lock: Lock, head: str) -> bool:
    """Run one claimed cell as a train.py child, appending to its log, and print how it went. True if it finished."""
    where = cell_dir(cfg, cell)
    for note in set_aside_corrupt(where):
        print(f"{head} {note}", flush=True)
    was = status(where)
    if where.is_dir() and not (where / "config.json").is_file():
        # killed before train.py wrote its first file: only temporary files can be there, and train.py
        # refuses a non-empty folder that holds no run
        for tmp in where.glob("*.tmp"):
            tmp.unlink()
    cmd, log, t0 = command(cfg, cell), cfg.out / "logs" / f"{cell.name}.log", time.time()
    with open(log, "a") as f:  # appended: a resumed cell keeps the story of its earlier attempts
        f.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} {'resuming' if was == 'partial' else 'starting'}: "
                f"{shlex.join(cmd)}\n")
        f.flush()
        rc = run_child(cmd, f, lock, REPO)
    result = read_result(where)
    if rc != 0 or result is None:
        print(f"{head} FAILED (exit {rc}) after {time.time() - t0:.0f}s; see {log}", flush=True)
        return False
    print(f"{head} {'resumed, ' if was == 'partial' else ''}{describe(result)}", flush=True)
    return True


def run_cells(cfg: GridConfig, todo: list[Cell]) -> tuple[int, list[str]]:
    """Run the cells that are not done and not held by another process, one after another.

    Returns the number that failed and one line per cell left to another process (who holds it)."""
    (cfg.out / "logs").mkdir(parents=True, exist_ok=True)
    failed, elsewhere = 0, []
    for i, cell in enumerate(todo, 1):
        head = f"[{i}/{len(todo)}] {cell.name}:"
        result = read_result(cell_dir(cfg, cell))
        if result is None:
            lock = claim(lock_path(cfg, cell))
            if lock is None:
                who = holder(lock_path(cfg, cell)) or "another process"
                elsewhere.append(f"{cell.name} ({who})")
                print(f"{head} running in {who}, skipped", flush=True)
                continue
            with lock:
                result = read_result(cell_dir(cfg, cell))  # under the lock: another grid may just have finished it
                if result is None:
                    failed += not run_cell(cfg, cell, lock, head)
                    continue
        print(f"{head} done, skipped ({describe(result)})", flush=True)
    return failed, elsewhere


# ---- the command line -------------------------------------------------------------------------

def _csv_list(text: str | None, cast=str) -> tuple | None:
    if text is None:
        return None
    try:
        return tuple(cast(x.strip()) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"expected a comma-separated list of numbers such as 0,1,2, got {text!r}") from None


def _checkpoint_arg(text: str) -> tuple[str, str]:
    """NAME=DIR or DIR (named after the folder)."""
    name, eq, path = text.partition("=")
    name, path = (name, path) if eq else (Path(text).name, text)
    if not Path(path).is_dir():
        raise FileNotFoundError(f"--checkpoint {path}: no such directory")
    return name, str(Path(path).resolve())


def grid_config(table: str, args) -> GridConfig:
    """Resolve the command line (and the --quick preset under it) into a GridConfig; checks every input."""
    quick = QUICK if args.quick else {}
    pick = lambda name, default: getattr(args, name) if getattr(args, name) is not None else quick.get(name, default)  # noqa: E731
    if args.checkpoint or isinstance(args.quick, str):
        given = [*(args.checkpoint or []), *([args.quick] if isinstance(args.quick, str) else [])]
        models = dict(_checkpoint_arg(c) for c in given)
    elif args.quick:
        raise ValueError("--quick needs a small local BERT checkpoint: pass its folder, --quick [NAME=]DIR "
                         "(e.g. all-MiniLM-L6-v2's: config.json, model.safetensors, vocab), or --checkpoint NAME=DIR")
    else:
        models = {m: m for m in MODELS}
    if args.models:
        unknown = set(_csv_list(args.models)) - set(models)
        if unknown:
            raise ValueError(f"--models {args.models}: unknown {', '.join(sorted(unknown))}; this grid has {', '.join(models)}")
        models = {m: models[m] for m in _csv_list(args.models)}
    datasets = _csv_list(args.datasets) or (QUICK_DATASETS[table] if args.quick else GRID_TABLES[table].datasets)
    for d in datasets:
        if d not in DATASETS:
            raise ValueError(f"unknown dataset {d!r}; known: {', '.join(DATASETS)}")
    levels = _csv_list(args.levels, int) or pick("levels", (0, 50) if table == "components" else (0, 25, 50, 75, 100))
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
                      pick("device", "auto"), args.precision, args.save_models or bool(args.quick), args.recipe,
                      args.select_on)


def add_grid_args(p: argparse.ArgumentParser):
    p.add_argument("--out", required=True, help="grid folder: one sub-folder per cell, logs/, grid.json")
    p.add_argument("--shard", metavar="i/n", help="run only the i-th (0-based) of n disjoint parts of the cells")
    p.add_argument("--list", action="store_true", help="print one line per cell: name, status, command (tab-separated)")
    p.add_argument("--quick", nargs="?", const=True, default=False, metavar="[NAME=]DIR",
                   help=f"a CPU-sized grid of the small local checkpoint DIR (e.g. all-MiniLM-L6-v2; or give it with "
                        f"--checkpoint): two datasets, levels 0/50/100, "
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
    p.add_argument("--split", default="paper", choices=SPLITS, help="train.py --split")
    p.add_argument("--lr", help="a learning rate, or 'sweep' over 1e-5, 2e-5, 5e-5 (default: sweep, the paper's)")
    p.add_argument("--epochs", type=int, help="epochs per run (default 10, the paper's)")
    p.add_argument("--batch-size", type=int, help="examples per optimiser step (default 32)")
    p.add_argument("--max-length", type=int, help="truncate to this many tokens (default: the dataset's)")
    p.add_argument("--limit", type=int, help="at most this many train and test examples per run")
    p.add_argument("--device", help="train.py --device (default auto: a GPU when there is one)")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"], help="train.py --precision")
    p.add_argument("--recipe", default="hf-trainer", choices=RECIPES,
                   help="train.py --recipe: paper (plain Adam, constant lr: only what the paper states), hf-trainer "
                        "(the HF Trainer's defaults), bert (AdamW wd 0.01, 10%% warmup, linear decay, clip 1.0); "
                        "default hf-trainer, recorded in grid.json")
    p.add_argument("--select-on", default="test", choices=SELECT_ON,
                   help="train.py --select-on: choose the best epoch and lr on the test set (the paper's way, the "
                        "default) or on a seeded 10%% of train; recorded in grid.json")
    p.add_argument("--save-models", action="store_true",
                   help="save every cell's best classifier (needed by the healing analysis' after column and by tsne)")


@main_wrapper
def main(argv=None) -> int:
    p = Parser(prog="python -m minibert.grid", description=__doc__.split("\n")[0],
               formatter_class=argparse.RawDescriptionHelpFormatter, epilog="\n".join(__doc__.split("\n")[2:9]))
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, table in GRID_TABLES.items():
        add_grid_args(sub.add_parser(name, help=f"run the cells of {table.title}" + (
            " (clean + bottom/top 50%% x all, attn, ffn, norm, qk by default; not in the paper)"
            if name == "components" else "")))
    r = sub.add_parser("report", help="render the grid's tables beside the paper's, and the healing analysis")
    r.add_argument("dir", help="grid folder")
    r.add_argument("--format", default="md", choices=["md", "csv"], help="what to print (both are written to the folder)")
    r.add_argument("--no-healing", action="store_true", help="skip the layer-wise CKA analysis")
    r.add_argument("--no-probes", action="store_true",
                   help="skip the components table's layer-wise probes on the saved fine-tuned encoders")
    r.add_argument("--healing-n", type=int, default=2000,
                   help="test examples for CKA: the whole test set up to this many (default 2000)")
    r.add_argument("--device", default="cpu", help="device for the CKA and probe forward passes")
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
    if args.command in ("report", "tsne"):
        from . import report  # imported here: report.py builds on this module
        return report.run_command(args)
    return run_grid(args)


def run_grid(args) -> int:
    """`python -m minibert.grid tableN ...`: list the cells, or run those of this shard that are left."""
    cfg = grid_config(args.command, args)
    everything = cells(cfg)
    todo = shard(everything, args.shard)
    check_writable(cfg.out)
    for cell in todo:  # train.py's own checks, before any cell starts: a bad flag fails once, not once per cell
        validate(train_config(cfg, cell))
    if args.list:
        try:
            for cell in todo:
                print(f"{cell.name}\t{status_line(cfg, cell)}\t{shlex.join(command(cfg, cell))}")
        except BrokenPipeError:  # `--list | head`: the reader has all it wants; silence the exit-time flush
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    cfg.out.mkdir(parents=True, exist_ok=True)
    note = write_manifest(cfg, everything)
    if note:
        print(f"note: {note}", flush=True)
    counts = {s: sum(status(cell_dir(cfg, c)) == s for c in todo) for s in ("done", "partial", "pending")}
    print(f"{args.command}: {len(todo)} cells{f' (shard {args.shard} of {len(everything)})' if args.shard else ''}: "
          f"{counts['done']} done, {counts['partial']} partial, {counts['pending']} pending -> {cfg.out}", flush=True)
    try:
        failed, elsewhere = run_cells(cfg, todo)
    except KeyboardInterrupt:  # Ctrl-C between two cells (during one, jobs.run_child stops the cell first)
        print("interrupted; rerun the same command to continue", file=sys.stderr)
        return 130
    if elsewhere:
        print(f"note: {len(elsewhere)} cell(s) left to the process running them, not waited for: "
              f"{', '.join(elsewhere)}; `--list` shows when they are done", flush=True)
    if failed:
        fail(f"{failed} cell(s) failed; see {cfg.out / 'logs'}; rerun the same command to retry them")
        return 1  # not the user's mistake (exit 2): a run failed
    return 0


if __name__ == "__main__":
    sys.exit(main())
