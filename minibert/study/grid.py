"""The paper's experiment grid: Tables 2-5 as one resumable, shardable set of `train` runs, and their report.

    python -m minibert grid table2 --out runs/grid               # run every cell of Table 2 (finished ones skipped)
    python -m minibert grid table2 --out runs/grid --shard 3/8   # only the 4th of 8 disjoint parts (a job array)
    python -m minibert grid table2 --out runs/grid --devices 0,1,2,3   # four cells at once, one per GPU
    python -m minibert grid table2 --out runs/grid --list        # one line per cell: name, status, command
    python -m minibert grid report runs/grid                     # our tables beside the paper's, + healing (CKA)
    python -m minibert grid tsne runs/grid --model base          # Figure 1: t-SNE of [CLS] features on AG News
    python -m minibert grid compare runs/t2 runs/t4              # what corruption costs in t4 against t2, by seed
    python -m minibert grid table2 --quick DIR --out /tmp/q      # a small checkpoint (MiniLM) on small data: a CPU
    python -m minibert grid components --out runs/c --checkpoint minilm=DIR   # which parts of a layer heal

A cell is one `minibert train` run (one model, dataset, corruption and seed) in its own directory
<out>/<table>-<model>-<dataset>-<level>-s<seed>, started as `python -m minibert train ...` in the folder the grid
was started in, so that the relative paths of its command mean what they meant to the user, and an installed package
runs grids from any folder. A cell is done when its result.json says so, partial when its directory exists without
that, pending otherwise. Running a grid skips done cells and resumes partial ones (`train --resume` continues from
the last finished epoch), so a grid can be stopped and started again at any time. Cells are listed in a fixed order
and shard i/n takes those whose index is i modulo n: shards started with the same arguments split the grid without
overlap, which is how a job array or several machines on a shared filesystem share one grid. A process runs a cell
only while it holds the cell's lock (<out>/logs/<cell>.lock, minibert/study/jobs.py): grids or shards started twice
on one folder never run a cell twice, each skips the cells another one is running and says who. <out>/grid.json
records every cell the grid was asked for, so `report` can show what is still missing; logs go to
<out>/logs/<cell>.log. A damaged result.json is moved aside and its cell rerun; a damaged grid.json is rebuilt; both
with a note.
By default a grid runs one cell after another; --devices 0,1,2,3 runs four at once, one per GPU, each child seeing
only its own (CUDA_VISIBLE_DEVICES), and --workers N runs N at once on the CPU with the cores split between them
(jobs.slots()). Inside an allocation that set CUDA_VISIBLE_DEVICES, its GPUs are the default and --devices indexes
them. Each run's config.json records what it saw (CUDA_VISIBLE_DEVICES, the device's name, the threads).

Corruption levels are the paper's: base and large 0/25/50/75/100%, DistilBERT 0/50/100%, where 25-75%
come in a bottom and a top variant and 0% and 100% are one run each.

`components` is not a table of the paper: fine-tuned with mean pooling like Table 3, it corrupts
only a part of the chosen layers (corrupt.py's /attn, /ffn, /norm, /qk) beside the whole layers (all):
by default clean + bottom/top 50% x {all, attn, ffn, norm, qk}, 11 cells per model, dataset and seed.
"""
import argparse
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

from ..checkpoint import _looks_like_path
from ..cli import Parser, fail, main_wrapper
from ..data.datasets import DATA_ENV, DATASETS, default_data_root
from ..files import write_text
from ..locks import Lock, claim, holder
from ..training.config import TrainConfig, add_flag, field_help, train_flags, validate
from ..training.rundir import check_writable, damaged_results, portable, read_result, set_aside_damaged, status
from . import figure1, report
from .cells import GRID_TABLES, Cell, GridConfig, cell_dir, cell_epochs, cells, shard, write_manifest
from .compare import compare
from .jobs import Children, Slot, slots
from .paper import MODELS, TABLES

QUICK_DATASETS = {"table2": ("ag_news", "emotion"), "table3": ("ag_news", "emotion"),
                  "table4": ("ag_news", "dbpedia"), "table5": ("mrpc", "rte"), "components": ("ag_news", "emotion")}
# --quick: small enough that a grid of a few cells runs on a laptop CPU in minutes
QUICK = {"levels": (0, 50, 100), "limit": 64, "epochs": 1, "max_length": 32, "lr": "1e-4", "batch_size": 8,
         "device": "cpu"}
# The train flags the grid gives every cell, each with what train's default None means for it
SHARED = {"split": None, "lr": None, "batch_size": None, "max_length": "the dataset's", "limit": "every example",
          "test_limit": "--limit's", "device": None, "precision": None, "recipe": None, "select_on": None,
          "until_converged": None}



def lock_path(cfg: GridConfig, cell: Cell) -> Path:
    """The lock file a process holds while it runs `cell` (see minibert/study/jobs.py), beside the cell's log."""
    return cfg.out / "logs" / f"{cell.name}.lock"


def status_line(cfg: GridConfig, cell: Cell) -> str:
    """status() and, in brackets, whether another process runs the cell or a result file is damaged."""
    where, notes = cell_dir(cfg, cell), []
    who = holder(lock_path(cfg, cell))
    if who is not None:
        notes.append(f"running: {who}")
    notes += [f"{path} is damaged ({why}), will rerun" for path, why in damaged_results(where)]
    return status(where) + (f" ({'; '.join(notes)})" if notes else "")


def command(cfg: GridConfig, cell: Cell) -> list[str]:
    """The `minibert train` command line of one cell, run in the grid's own folder (an installed package has it, a
    wheel has no train.py). Always --resume: a partial cell continues where it stopped."""
    return [sys.executable, "-m", "minibert", "train", *train_flags(cell_config(cfg, cell))]


def cell_config(cfg: GridConfig, cell: Cell) -> TrainConfig:
    """The `train` run of one cell: the grid's shared train arguments and the cell's own, its paths portable (see
    rundir.portable()): run from the repository, the folder of a committed cell names the same model, data and places on
    any machine."""
    table, model = GRID_TABLES[cell.table], cfg.models[cell.model]
    return replace(cfg.train, model=portable(model) if Path(model).is_dir() else model, dataset=cell.dataset,
                   corrupt=cell.corrupt, seed=cell.seed, pooling=table.pooling, mode=table.mode,
                   epochs=cell_epochs(cfg, cell), limit=cell.limit or cfg.train.limit, resume=True,
                   data_dir=portable(cfg.data_root / cell.dataset) if cfg.data_root is not None else None,
                   out=portable(cell_dir(cfg, cell)), cache_dir=portable(cfg.out / "token_cache"))


# ---- running ----------------------------------------------------------------------------------


def result_line(result: dict) -> str:
    """A finished cell in a few words: its weighted F1, best epoch and lr, time, and DIVERGED when it did."""
    best = result["best"]
    text = (f"weighted F1 {100 * best['weighted_f1']:.2f} (epoch {result['best_epoch']}, lr {result['lr']:g}, "
            f"{result['seconds']:.0f}s)")
    return text + (" DIVERGED" if result["diverged"] else "")


@dataclass
class Job:
    """A claimed cell whose `train` child runs in `slot`."""
    cell: Cell
    head: str  # "[i/n] <cell>:", the start of every line printed about it
    lock: Lock
    slot: Slot
    child: subprocess.Popen
    log: TextIO
    was: str  # the cell's status when it started: pending or partial
    t0: float


def claim_cell(cfg: GridConfig, cell: Cell, head: str, elsewhere: list[str]) -> Lock | None:
    """The cell's lock when it is left to run; None (and a line saying why) when it is done or another process runs it."""
    result = read_result(cell_dir(cfg, cell))
    if result is None:
        lock = claim(lock_path(cfg, cell))
        if lock is None:
            who = holder(lock_path(cfg, cell)) or "another process"
            elsewhere.append(f"{cell.name} ({who})")
            print(f"{head} running in {who}, skipped", flush=True)
            return None
        result = read_result(cell_dir(cfg, cell))  # under the lock: another grid may just have finished it
        if result is None:
            return lock
        lock.release()
    print(f"{head} done, skipped ({result_line(result)})", flush=True)
    return None


def start_cell(cfg: GridConfig, cell: Cell, head: str, lock: Lock, slot: Slot, children: Children, say: bool) -> Job:
    """Start one claimed cell as a `train` child in `slot`, appending to its log; `say`: print that it started."""
    where = cell_dir(cfg, cell)
    for note in set_aside_damaged(where):
        print(f"{head} {note}", flush=True)
    was = status(where)
    if where.is_dir() and not (where / "config.json").is_file():
        # killed before `train` wrote its first file: only temporary files can be there, and `train`
        # refuses a non-empty folder that holds no run
        for tmp in where.glob("*.tmp"):
            tmp.unlink()
    cmd, log = command(cfg, cell), open(cfg.out / "logs" / f"{cell.name}.log", "a")  # a resumed cell keeps its story
    env = " ".join(f"{k}={v}" for k, v in slot.env.items())
    log.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} {'resuming' if was == 'partial' else 'starting'}: "
              f"{env + ' ' if env else ''}{shlex.join(cmd)}\n")
    log.flush()
    child = children.start(cmd, log, lock, slot.env)
    if say:
        print(f"{head} {'resuming' if was == 'partial' else 'started'} ({slot.name})", flush=True)
    return Job(cell, head, lock, slot, child, log, was, time.time())


def finish_cell(cfg: GridConfig, job: Job, rc: int, stopped: bool = False) -> bool:
    """Release a cell whose child has ended and print how it went; `stopped`: the grid got SIGTERM or Ctrl-C, which
    stopped the child (then the line says where it can go on from, as train's own does). True if it finished."""
    job.log.close()
    job.lock.release()
    result = read_result(cell_dir(cfg, job.cell))
    if stopped and result is None:
        print(f"{job.head} {interrupted(Path(job.log.name), cell_dir(cfg, job.cell))}", file=sys.stderr, flush=True)
        return False
    if rc != 0 or result is None:
        print(f"{job.head} FAILED (exit {rc}) after {time.time() - job.t0:.0f}s; see {job.log.name}", flush=True)
        return False
    print(f"{job.head} {'resumed, ' if job.was == 'partial' else ''}{result_line(result)}", flush=True)
    return True


def interrupted(log: Path, where: Path) -> str:
    """What the grid says of a cell that a signal stopped: the epoch its checkpoint holds, as its `train` said it."""
    said = re.findall(r"^interrupted after epoch (\d+) of ", log.read_text(errors="replace").rsplit("\n# ", 1)[-1],
                      re.MULTILINE)
    return f"interrupted {f'after epoch {said[-1]} of' if said else 'in'} {where}; rerun the same command to continue"


def run_cells(cfg: GridConfig, todo: list[Cell], where: list[Slot] | None = None) -> tuple[int, list[str]]:
    """Run the cells that are not done and not held by another process, in order, one in each of the slots at
    once (jobs.slots(): a GPU each, or a share of the CPU; by default one slot: one cell after another).

    Returns the number that failed and one line per cell left to another process (who holds it)."""
    (cfg.out / "logs").mkdir(parents=True, exist_ok=True)
    where = where or slots()
    free, queue = list(where), list(enumerate(todo, 1))
    failed, elsewhere, running = 0, [], {}  # running: child -> Job
    with Children() as children:
        try:
            while (queue and not children.stopping) or running:
                while queue and free and not children.stopping:
                    i, cell = queue.pop(0)
                    head = f"[{i}/{len(todo)}] {cell.name}:"
                    if (lock := claim_cell(cfg, cell, head, elsewhere)) is not None:
                        job = start_cell(cfg, cell, head, lock, free.pop(0), children, say=len(where) > 1)
                        running[job.child] = job
                if running:
                    child = children.wait_any()
                    job = running.pop(child)
                    failed += not finish_cell(cfg, job, child.returncode, stopped=bool(children.stopping))
                    free.append(job.slot)
        finally:
            for job in running.values():  # the grid failed or was interrupted: its claims go with it
                job.log.close()
                job.lock.release()
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
    """NAME=DIR or DIR (named after the folder), or NAME=HUB_ID (found under weights/ or downloaded by `train`)."""
    name, eq, path = text.partition("=")
    name, path = (name, path) if eq else (Path(text).name, text)
    if Path(path).is_dir():
        return name, str(Path(path).resolve())
    if not eq or _looks_like_path(path):
        raise FileNotFoundError(f"--checkpoint {path}: no such directory (or give NAME=HUB_ID, e.g. "
                                "minilm=sentence-transformers/all-MiniLM-L6-v2)")
    return name, path


def grid_config(table: str, args) -> GridConfig:
    """Resolve the command line (and the --quick preset under it) into a GridConfig; checks every input."""
    quick = QUICK if args.quick else {}
    pick = lambda name, default: getattr(args, name) if getattr(args, name) is not None else quick.get(name, default)  # noqa: E731
    models = grid_models(args)
    datasets = _csv_list(args.datasets) or (QUICK_DATASETS[table] if args.quick else GRID_TABLES[table].datasets)
    for d in datasets:
        if d not in DATASETS:
            raise ValueError(f"unknown dataset {d!r}; known: {', '.join(DATASETS)}")
    limits = _csv_list(args.limits, int) or ()
    epochs = _csv_list(args.epochs, int) or (pick("epochs", TrainConfig.epochs),)
    for flag, values in (("--limits", limits), ("--epochs", epochs)):
        if any(v < 1 for v in values):
            raise ValueError(f"{flag} must be at least 1, got {min(values)}")
    if len(epochs) > 1 and len(epochs) != len(limits):
        raise ValueError(f"--epochs {args.epochs}: give one number, or one per size of --limits ({len(limits)})")
    if limits and args.limit is not None:
        raise ValueError("--limit and --limits: give one (--limits runs every cell at each size)")
    levels = _csv_list(args.levels, int) or pick("levels", (0, 50) if table == "components" else (0, 25, 50, 75, 100))
    if not set(levels) <= {0, 25, 50, 75, 100}:
        raise ValueError(f"--levels must be among 0,25,50,75,100 (percent of layers), got {args.levels}")
    train = TrainConfig(**{name: pick(name, getattr(TrainConfig, name)) for name in SHARED},
                        save_model=args.save_models or bool(args.quick))
    return GridConfig(table, Path(args.out).resolve(), models, tuple(datasets), tuple(levels),
                      _csv_list(args.seeds, int), grid_data_root(args, datasets), epochs, limits, train)


def grid_models(args) -> dict[str, str]:
    """label -> preset or checkpoint: the paper's models, or --checkpoint's and --quick's; --models picks among them."""
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
            raise ValueError(f"--models {args.models}: unknown {', '.join(sorted(unknown))}; "
                             f"this grid has {', '.join(models)}")
        models = {m: models[m] for m in _csv_list(args.models)}
    return models


def grid_data_root(args, datasets) -> Path | None:
    """The folder with one sub-folder per dataset (--data-root, else $MINIBERT_DATA), or None: the hub."""
    data_root = None if args.data_root == "hub" else (Path(os.path.abspath(args.data_root)) if args.data_root
                                                       else default_data_root())
    if data_root is not None:
        missing = [d for d in datasets if not (data_root / d).is_dir()]
        if missing:
            named_by = "--data-root" if args.data_root else f"${DATA_ENV}"
            raise FileNotFoundError(f"{named_by} {data_root} has no folder for {', '.join(missing)}; point it at a "
                                    "folder with one sub-folder per dataset (or pass --data-root hub)")
    return data_root


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
    p.add_argument("--epochs", help="epochs per run (default 10, the paper's), or one per size of --limits")
    p.add_argument("--limits", metavar="N,N,...",
                   help="the data-budget axis: run every cell at each of these training-set sizes (cells named "
                        "...-n<size>-...; test capped at the same size); pair with --epochs E,E,... per size")
    add_shared_args(p)
    p.add_argument("--save-models", action="store_true",
                   help="save every cell's best classifier (needed by the healing analysis' after column and by tsne)")
    p.add_argument("--devices", metavar="0,1,...",
                   help="run one cell per GPU at once, each child seeing only its GPU (CUDA_VISIBLE_DEVICES); indices "
                        "into the GPUs visible to the grid (default: all of CUDA_VISIBLE_DEVICES when it is set, as "
                        "in a Slurm allocation; else one cell at a time)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="run N cells at once on the CPU, the cores split between them (OMP_NUM_THREADS, unless it "
                        "is set: then each child gets that many threads)")


def add_shared_args(p: argparse.ArgumentParser):
    """The train flags every cell is given (SHARED), built from TrainConfig's fields; those --quick sets default to
    None, "not given", so that its value applies."""
    for name, unset in SHARED.items():
        default = getattr(TrainConfig, name)
        said = unset if default is None else default
        quick = f", --quick's {QUICK[name]}" if name in QUICK else ""
        recorded = "; recorded in grid.json" if name in ("recipe", "select_on") else ""
        add_flag(p, name, default=None if name in QUICK else default,
                 help=f"train --{name.replace('_', '-')}: {field_help(name)} (default {said}{quick}){recorded}")


def parser() -> Parser:
    """`python -m minibert grid`'s command line: one sub-command per table, then report, compare and tsne."""
    p = Parser(prog="python -m minibert grid", description=__doc__.split("\n")[0],
               formatter_class=argparse.RawDescriptionHelpFormatter, epilog="\n".join(__doc__.split("\n")[2:10]))
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
    r.add_argument("--margin", type=float, default=2.0, metavar="M",
                   help="F1 points: a comparison whose 90%% interval lies inside [-M, +M] is 'equivalent within ±M' "
                        "(default 2)")
    add_compare_args(sub.add_parser("compare", help="what corruption costs in grid B against grid A, paired by seed "
                                                    "(e.g. a probe against fine-tuning)"))
    add_tsne_args(sub.add_parser("tsne", help="Figure 1: t-SNE of fine-tuned features, 0%% / top / bottom / 100%%"))
    return p


def add_compare_args(c: argparse.ArgumentParser):
    c.add_argument("a", help="grid folder A (the reference, e.g. a fine-tuning table)")
    c.add_argument("b", help="grid folder B (e.g. a probe or a mean-pooling table)")
    c.add_argument("--datasets", help="comma-separated datasets (default: every one both grids ran)")
    c.add_argument("--model-a", help="model label in A, when it has several (e.g. 'minilm n=1000' on a budget grid)")
    c.add_argument("--model-b", help="model label in B, when it has several")
    c.add_argument("--md", help="also write the markdown to this file")


def add_tsne_args(t: argparse.ArgumentParser):
    t.add_argument("dir", help="grid folder (cells run with --save-models)")
    t.add_argument("--table", default="table2", choices=list(TABLES), help="which table's cells")
    t.add_argument("--model", help="model label (default: the first of the grid's, base if present)")
    t.add_argument("--dataset", default="ag_news", help="dataset (default ag_news, the paper's)")
    t.add_argument("--level", type=int, help="the top/bottom level of panels b and c (default: the lowest in the grid, 25)")
    t.add_argument("--seed", type=int, default=0, help="which seed's cells")
    t.add_argument("--n", type=int, default=1000, help="test examples to plot")
    t.add_argument("--device", default="cpu", help="device for the forward passes")
    t.add_argument("--png", help="output file (default <dir>/figure1-<table>-<model>-<dataset>-s<seed>.png)")


@main_wrapper
def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.command == "compare":
        if args.md is not None:  # the path given is what a refusal names, before the grids are read
            check_writable(args.md, "--md", file="compare.md")
        text = compare(Path(args.a), Path(args.b), args.datasets.split(",") if args.datasets else None,
                       args.model_a, args.model_b)
        if args.md:
            write_text(Path(args.md), text)
        print(text, end="")
        return 0
    if args.command == "report":
        return report.run_command(args)
    if args.command == "tsne":
        return figure1.run_command(args)
    return run_grid(args)


def run_grid(args) -> int:
    """`python -m minibert grid tableN ...`: list the cells, or run those of this shard that are left."""
    cfg = grid_config(args.command, args)
    everything = cells(cfg)
    todo = shard(everything, args.shard)
    check_writable(cfg.out)
    where = slots(args.devices, args.workers)
    for cell in todo:  # `train`'s own checks, before any cell starts: a bad flag fails once, not once per cell
        validate(cell_config(cfg, cell))
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
    if len(where) > 1:
        threads = where[0].env["OMP_NUM_THREADS"]
        print(f"{len(where)} cells at once: {', '.join(s.name for s in where)}; {threads} thread(s) each", flush=True)
    try:
        failed, elsewhere = run_cells(cfg, todo, where)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM while no cell runs (during one, jobs.Children stops the cells first)
        raise KeyboardInterrupt("interrupted; rerun the same command to continue") from None
    if elsewhere:
        print(f"note: {len(elsewhere)} cell(s) left to the process running them, not waited for: "
              f"{', '.join(elsewhere)}; `--list` shows when they are done", flush=True)
    if failed:
        fail(f"{failed} cell(s) failed; see {cfg.out / 'logs'}; rerun the same command to retry them")
        return 1  # not the user's mistake (exit 2): a run failed
    return 0


if __name__ == "__main__":
    sys.exit(main())
