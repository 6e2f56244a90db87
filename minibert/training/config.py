"""What one training run is: TrainConfig (every train.py flag is one of its fields), its checks, and its flags.

    from minibert.training.config import TrainConfig, validate, train_flags
    cfg = validate(TrainConfig(model="large", corrupt="top:0.5"))   # a ValueError names a bad argument
    train_flags(cfg)                                                # ['--model', 'large', '--corrupt', 'top:0.5']

train.py builds its argparse flags from TrainConfig's fields and the choices below, grid.py turns a cell into
train.py flags with train_flags(), and minibert/training/trainer.py runs a config. A run's identity is every field but
NOT_IDENTITY: a resumed run must match the interrupted one in all the others.
"""
import math
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path

from ..config import PRESETS
from ..corrupt import parse_spec
from ..data.datasets import DATASETS, SPLITS
from .evaluation import PRECISIONS, world_size
from .optim import RECIPES, settings

PAPER_LRS = (1e-5, 2e-5, 5e-5)
METRICS = ("weighted_f1", "macro_f1", "accuracy")
MODES, POOLINGS, SELECT_ON = ("finetune", "probe"), ("cls", "mean"), ("test", "val")
# The least each count may be; a max length of 2 holds [CLS] and [SEP] and nothing else
LOWEST = {"epochs": 1, "batch_size": 1, "grad_accum": 1, "limit": 1, "test_limit": 1, "max_length": 2}
MAX_SEED = 2**32 - 1  # scikit-learn's and numpy's legacy seeds are 32-bit unsigned


@dataclass
class TrainConfig:
    # what
    model: str = "base"            # preset base|large|distil, a checkpoint directory, or a hub id
    dataset: str = "sst2"
    data_dir: str | None = None    # local folder with the dataset's files; None = the Hugging Face Hub
    split: str = "paper"           # paper (Table 1 sizes) | official
    limit: int | None = None       # cap train and test at this many examples each
    test_limit: int | None = None  # cap test at this many instead (the same test set for every --limit)
    max_length: int | None = None  # None = the dataset's default (128 for SST-2)
    corrupt: str = "none"          # corruption spec, see minibert/corrupt.py
    pooling: str = "cls"           # cls | mean
    mode: str = "finetune"         # finetune | probe
    seed: int = 0
    # how
    lr: float | str = "sweep"      # a learning rate, or "sweep" over PAPER_LRS
    epochs: int = 10
    batch_size: int = 32           # examples per optimiser step, over all ranks and accumulation steps
    grad_accum: int = 1
    recipe: str = "hf-trainer"     # a key of RECIPES; the three fields below override its values
    weight_decay: float | None = None
    warmup: float | None = None    # fraction of all steps
    grad_clip: float | None = None  # 0: no clipping
    metric: str = "weighted_f1"    # picks the best epoch and the best lr
    select_on: str = "test"        # test (the paper's way) | val (a held-out 10% of train)
    precision: str = "auto"        # auto | bf16 | fp16 | fp32
    compile: bool = False
    device: str = "auto"
    # where
    out: str | None = None         # None = runs/<dataset>-<model>-<corrupt>-<mode>-<pooling>-lr<lr>-s<seed>
    save_model: bool = False
    resume: bool = False
    keep_checkpoint: bool = False
    cache_dir: str | None = None   # token cache folder (tokenise each split once across runs)
    stop_after_epoch: int | None = None
    track_cka: bool = False        # log per epoch each layer's CKA with the clean pre-trained encoder (dynamics.py)


# Fields that do not change what a run computes: a resume may differ in them.
NOT_IDENTITY = {"out", "resume", "keep_checkpoint", "stop_after_epoch", "device", "compile", "cache_dir",
                "save_model", "track_cka"}
NO_FLAG = {"stop_after_epoch"}  # set by MINIBERT_STOP_AFTER_EPOCH, not by a train.py flag


def train_flags(cfg: TrainConfig) -> list[str]:
    """The train.py flags that give `cfg`: one per field that differs from its default."""
    flags = []
    for f in fields(TrainConfig):
        value = getattr(cfg, f.name)
        if f.name in NO_FLAG or value == f.default:
            continue
        flag = "--" + f.name.replace("_", "-")
        flags += [flag] if value is True else [flag, str(value)]
    return flags


def validate(cfg: TrainConfig) -> TrainConfig:
    """Check every argument that needs no files; returns cfg with lr as a float (or "sweep")."""
    for name, options in (("dataset", DATASETS), ("split", SPLITS), ("mode", MODES), ("pooling", POOLINGS),
                          ("precision", PRECISIONS), ("metric", METRICS), ("recipe", RECIPES),
                          ("select_on", SELECT_ON)):
        if getattr(cfg, name) not in options:
            raise ValueError(f"--{name.replace('_', '-')} must be one of {', '.join(options)}, "
                             f"got {getattr(cfg, name)!r}")
    lr = cfg.lr
    if lr != "sweep":
        try:
            lr = float(lr)
        except ValueError:
            raise ValueError(f"--lr must be a number such as 2e-5, or 'sweep', got {cfg.lr!r}") from None
        if not (lr > 0 and math.isfinite(lr)):
            raise ValueError(f"--lr must be positive, got {cfg.lr!r}")
    check_numbers(seed=cfg.seed, **{name: getattr(cfg, name) for name in LOWEST})
    if cfg.batch_size % (cfg.grad_accum * world_size()):
        raise ValueError(f"--batch-size {cfg.batch_size} must be divisible by --grad-accum {cfg.grad_accum} "
                         f"x {world_size()} processes")
    r = settings(cfg)
    if not 0 <= r.warmup < 1 or r.weight_decay < 0 or (r.grad_clip is not None and r.grad_clip < 0):
        raise ValueError("need 0 <= --warmup < 1, --weight-decay >= 0 and --grad-clip >= 0")
    if cfg.model in PRESETS:  # a bad spec is caught before any download; other models once config.json is read
        preset = PRESETS[cfg.model][1]
        parse_spec(cfg.corrupt, preset.num_hidden_layers, has_pooler=preset.flavour == "bert")
    paths = {k: str(getattr(cfg, k)) for k in ("model", "data_dir", "out", "cache_dir") if getattr(cfg, k) is not None}
    return replace(cfg, lr=lr, **paths)  # Path arguments become strings, as the command line gives them


def check_numbers(**values) -> None:
    """Refuse a count below its LOWEST or a seed outside 0..MAX_SEED, naming the flag; None is "not given"."""
    for name, value in values.items():
        flag = f"--{name.replace('_', '-')}"
        if name == "seed" and value is not None and not 0 <= value <= MAX_SEED:
            raise ValueError(f"{flag} must be from 0 to {MAX_SEED}, got {value}")
        if name != "seed" and value is not None and value < LOWEST[name]:
            raise ValueError(f"{flag} must be at least {LOWEST[name]}, got {value}")


def default_out(cfg: TrainConfig) -> Path:
    lr = cfg.lr if cfg.lr == "sweep" else f"{cfg.lr:g}"
    name = f"{cfg.dataset}-{Path(cfg.model).name}-{cfg.corrupt}-{cfg.mode}-{cfg.pooling}-lr{lr}-s{cfg.seed}"
    return Path("runs") / re.sub(r"[^\w.%+@=-]+", "_", name)
