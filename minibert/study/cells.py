"""What a grid is: its cells (one `minibert train` run each), their axes, and the manifest that records which cells a
grid folder expects (<out>/grid.json). grid.py runs them; report.py reads them.

    cfg = GridConfig("table2", Path("runs/grid"), {"base": "base"}, ("sst2",), (0, 25, 100), (0, 1, 2), None)
    for cell in cells(cfg): print(cell.name, cell.corrupt)   # table2-base-sst2-0-s0 none, ...
"""
import json
from dataclasses import MISSING, asdict, dataclass, field
from pathlib import Path

from ..corrupt import COMPONENTS as PARTS
from ..files import write_text
from ..locks import locked
from ..training.config import TrainConfig
from .paper import LEVELS, SIDES, SIX, TABLES, PaperTable

# Not a paper table: what in the chosen layers is corrupted, at the levels given (default 0 and 50%): the whole
# layers, or one of corrupt.py's components.
COMPONENTS = ("all", *PARTS)


COMPONENTS_TABLE = PaperTable("components", "Components: fine-tuned, mean pooling, a part of each corrupted layer",
                              "mean", "finetune", SIX, {})


GRID_TABLES = {**TABLES, "components": COMPONENTS_TABLE}


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
    limit: int | None = None  # training examples, on a grid run at several sizes (--limits); else the grid's --limit

    @property
    def corrupt(self) -> str:
        """The train --corrupt spec: none, all, or e.g. bottom:0.25 (rounded half up to whole layers), with
        /attn etc. for a component."""
        spec = corrupt_spec(self.level, self.side)
        return spec if self.component == "all" or self.level == 0 else f"{spec}/{self.component}"

    @property
    def setting(self) -> str:
        """Short corruption label: 0, bottom25, top25, ..., 100; bottom50-attn for a component."""
        label = setting(self.level, self.side, percent=False)
        return label if self.component == "all" or self.level == 0 else f"{label}-{self.component}"

    @property
    def name(self) -> str:
        size = "" if self.limit is None else f"-n{self.limit}"
        return f"{self.table}-{self.model}-{self.dataset}{size}-{self.setting}-s{self.seed}"


# The names of a (level, side) position, side None or "" at 0% and 100% (one run serves both sides)

def corrupt_spec(level: int, side: str | None) -> str:
    """The train --corrupt spec of the whole layers: none, all, or e.g. bottom:0.25."""
    return "none" if level == 0 else "all" if level == 100 else f"{side}:{level / 100:g}"


def setting(level: int, side: str | None, percent: bool = True) -> str:
    """The short label: bottom25, top50; 0% and 100% (in cell names, without the %: 0, 100)."""
    return f"{side}{level}" if side else f"{level}%" if percent else str(level)


def setting_label(level: int, side: str, n_layers: int | None, total: int | None, short: bool = False) -> str:
    """The label by layers: 'clean', 'bottom 2 of 6 layers', 'all 6 layers'; `short` drops the word "layers" after
    a part ('bottom 2 of 6': a column head under a caption that says what is counted)."""
    if level == 0:
        return "clean"
    if level == 100:
        return f"all {total} layers" if total else "all layers"
    if n_layers is None or total is None:
        return f"{side} {level}%"
    return f"{side} {n_layers} of {total}" + ("" if short else " layers")


def model_label(model: str, limit: int | None) -> str:
    """A model's label in a report: its name, with the training-set size on a data-budget grid ('minilm n=1000')."""
    return model if limit is None else f"{model} n={limit}"


def label_parts(label: str) -> tuple[str, int]:
    """model_label() read back: ('minilm', 1000); ('base', 0) without a size."""
    name, _, size = label.partition(" n=")
    return name, int(size or 0)


@dataclass
class GridConfig:
    """What a grid runs: the cells' axes, and in `train` the train arguments every cell shares (each cell sets its own
    model, dataset, corruption, seed, pooling, mode, epochs, data folder and run folder)."""
    table: str
    out: Path
    models: dict  # label -> preset name or checkpoint directory
    datasets: tuple
    levels: tuple  # percentages
    seeds: tuple
    data_root: Path | None
    epochs: tuple = (10,)  # one for every run, or one per size of `limits`
    limits: tuple = ()  # the data-budget axis: run every cell at each of these training-set sizes
    train: TrainConfig = field(default_factory=TrainConfig)


def cells(cfg: GridConfig) -> list[Cell]:
    """Every cell of the grid, in a fixed order: model, dataset, size (with --limits), seed, then 0%, bottom/top
    25-75%, 100% (the components table: each corrupted level and side once per component)."""
    out = []
    parts = COMPONENTS if cfg.table == "components" else ("all",)
    for model in cfg.models:
        levels = [lv for lv in LEVELS.get(model, (0, 25, 50, 75, 100)) if lv in cfg.levels]
        for dataset in cfg.datasets:
            for limit in cfg.limits or (None,):
                for seed in cfg.seeds:
                    for level in levels:
                        for side in ((None,) if level in (0, 100) else SIDES):
                            out += [Cell(cfg.table, model, dataset, level, side, seed, part, limit)
                                    for part in (("all",) if level == 0 else parts)]
    return out


def cell_epochs(cfg: GridConfig, cell: Cell) -> int:
    """The cell's epochs: the grid's, or the one given for the cell's size (--limits 500,2000 --epochs 20,10)."""
    return cfg.epochs[cfg.limits.index(cell.limit)] if len(cfg.epochs) > 1 else cfg.epochs[0]


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


def read_manifest(path: Path) -> tuple[dict | None, str | None]:
    """(grid.json's cells, None), or (None, why) when it is damaged; ({}, None) when there is none."""
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
    damaged grid.json is rebuilt from this command line's cells: returns a one-line note saying so.
    """
    path = cfg.out / "grid.json"
    with locked(cfg.out / "grid.lock"):
        manifest, why = read_manifest(path)
        note = None if why is None else (f"{path} is damaged ({why}); rebuilt from this command line's cells "
                                         "(rerun the other commands of this folder to add theirs)")
        manifest = manifest or {}
        for cell in grid:  # beside the Cell's fields: what the report states about how the cell was run
            entry = {**asdict(cell), "checkpoint": str(cfg.models[cell.model]), "recipe": cfg.train.recipe,
                     "select_on": cfg.train.select_on}
            old = manifest.get(cell.name, {})
            for key in ("recipe", "select_on"):
                if old.get(key, entry[key]) != entry[key]:
                    raise ValueError(f"{path}: {cell.name} was run with --{key.replace('_', '-')} {old[key]}, this "
                                     f"command asks for {entry[key]}; use a new --out, or the folder's setting")
            manifest[cell.name] = entry
        write_text(path, json.dumps({"cells": manifest}, indent=1, sort_keys=True) + "\n")
    return note


def unlisted_runs(out: Path, grid: dict) -> list[str]:
    """The run folders in a grid folder that its grid.json does not list (a grid.json copied from another grid)."""
    return sorted(d.name for d in out.iterdir() if d.is_dir() and d.name not in grid and
                  any((d / name).is_file() for name in ("config.json", "result.json")))


def load_manifest(out: Path) -> tuple[dict[str, Cell], dict[str, str]]:
    """The cells a grid folder expects (name -> Cell) and each model's checkpoint."""
    path = out / "grid.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {out} a grid folder (made by python -m minibert grid)?")
    raw, why = read_manifest(path)
    if raw is None:
        raise ValueError(f"{path} is damaged ({why}); rerun the grid command that made {out}: it rebuilds the file "
                         "and reruns nothing that is done")
    grid = {name: Cell(**{k: c[k] for k in Cell.__dataclass_fields__ if k in c}) for name, c in raw.items()}
    return grid, {c["model"]: c["checkpoint"] for c in raw.values()}
