"""What one training run is: TrainConfig (every train.py flag is one of its fields), its checks, and its flags.

    from minibert.training.config import TrainConfig, validate, train_flags
    cfg = validate(TrainConfig(model="large", corrupt="top:0.5"))   # a ValueError names a bad argument
    train_flags(cfg)                                                # ['--model', 'large', '--corrupt', 'top:0.5']

Each field carries its train.py flag's help text (and metavar, choices): add_flags() builds train.py's argparse
flags from them, so a new option is written once, here. grid.py turns a cell into `train` flags with
train_flags(), and minibert/training/trainer.py runs a config. A run's identity is every field but
NOT_IDENTITY: a resumed run must match the interrupted one in all the others.
"""
import math
import re
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import get_args

from ..config import PRESETS
from ..corrupt import GRAMMAR, parse_spec
from ..data.datasets import DATASETS, SPLITS
from .convergence import FULL_WINDOW
from .device import PRECISIONS, world_size
from .optim import RECIPES, settings

PAPER_LRS = (1e-5, 2e-5, 5e-5)
METRICS = ("weighted_f1", "macro_f1", "accuracy")
MODES, POOLINGS, SELECT_ON = ("finetune", "probe"), ("cls", "mean"), ("test", "val")
# The least each count may be; a max length of 2 holds [CLS] and [SEP] and nothing else
LOWEST = {"epochs": 1, "batch_size": 1, "grad_accum": 1, "limit": 1, "test_limit": 1, "max_length": 2}
MAX_SEED = 2**32 - 1  # scikit-learn's and numpy's legacy seeds are 32-bit unsigned


def option(default, help: str, **flag):
    """A TrainConfig field with its train.py flag's help text (and metavar, choices) beside the default."""
    return field(default=default, metadata={"help": help, **flag})


@dataclass
class TrainConfig:
    # what to train
    model: str = option("base", "base (bert-base-uncased), large (bert-large-uncased), distil (distilbert-base-uncased), "
                        "a local checkpoint directory (config.json + model.safetensors + vocab), or a hub id")
    dataset: str = option("sst2", f"one of {', '.join(DATASETS)}", choices=tuple(DATASETS), metavar="NAME")
    data_dir: str | None = option(None, "local folder with the dataset's train/validation/test files, e.g. "
                                  "../shared/data/sst2; default: download from the Hugging Face Hub")
    split: str = option("paper", "paper: pool the labelled data and take Table 1's train/test sizes (seeded); "
                        "official: the dataset's own train and test (GLUE: validation)", choices=SPLITS)
    limit: int | None = option(None, "use at most N train and N test examples, for a quick look", metavar="N")
    test_limit: int | None = option(None, "use at most M test examples instead of N (the same test set at every "
                                    "--limit)", metavar="M")
    max_length: int | None = option(None, "truncate to T tokens; default: the dataset's (128 for SST-2, 512 for IMDB)",
                                    metavar="T")
    corrupt: str = option("none", f"corrupt the encoder before training: {GRAMMAR}. The paper: "
                          "bottom:0.25|0.5|0.75, top:0.25|0.5|0.75, all", metavar="SPEC")
    pooling: str = option("cls", "cls: [CLS] through BERT's pooler (the paper's Table 2); mean: average of the tokens "
                          "(Table 3)", choices=POOLINGS)
    mode: str = option("finetune", "finetune: train every parameter (Tables 2, 3); probe: freeze the encoder and train "
                       "the linear head on cached features (Table 4)", choices=MODES)
    seed: int = option(0, "seeds the split, the corruption, the head and the batch order")
    # how to train
    lr: float | str = option("sweep", f"learning rate, or 'sweep': one sub-run per lr in "
                             f"{', '.join(f'{x:g}' for x in PAPER_LRS)} and keep the best (the paper's lrs; three runs)",
                             metavar="LR|sweep")
    epochs: int = option(10, "epochs; every one is evaluated and the best is reported")
    until_converged: bool = option(False, f"stop at the first epoch, from epoch {FULL_WINDOW} on, at which the "
                                   "convergence flag (minibert/training/convergence.py: validation metric and train "
                                   "loss, never the test set) no longer calls the run still improving; --epochs is "
                                   "then the most it trains, and the lr schedule still spans --epochs")
    batch_size: int = option(32, "examples per optimiser step (all GPUs together)", metavar="B")
    grad_accum: int = option(1, "split each batch into K micro-batches (same result, less memory)", metavar="K")
    recipe: str = option("hf-trainer", "what the paper leaves open. paper: plain Adam at a constant lr, nothing else "
                         "(the paper's words); hf-trainer: the HF Trainer defaults of transformers 4.41.1, the version "
                         "the paper used (AdamW with weight decay 0, no warmup, linear decay to 0, clipping at 1.0); "
                         "bert: BERT's recipe (AdamW, weight decay 0.01 on matrices, 10% warmup, linear decay, "
                         "clipping at 1.0)", choices=tuple(RECIPES))
    # the three below override the recipe's values
    weight_decay: float | None = option(None, "weight decay on matrices only (AdamW: decoupled; the paper recipe's "
                                        "Adam: L2); default: the recipe's")
    warmup: float | None = option(None, "fraction of the steps for the linear lr warmup; default: the recipe's")
    grad_clip: float | None = option(None, "clip the gradient norm at this value, 0: no clipping; default: the recipe's")
    metric: str = option("weighted_f1", "picks the best epoch and, with --lr sweep, the best lr (the paper: weighted "
                         "F1)", choices=METRICS)
    select_on: str = option("test", "where the best epoch and lr are chosen. test: on the test set, as the paper does "
                            "(optimistic on small test sets); val: on a seeded, stratified 10% of train held out for "
                            "it. Either way the test scores are reported", choices=SELECT_ON)
    precision: str = option("auto", "auto: bf16 autocast on GPUs that support it, else fp16 with loss scaling; fp32 on "
                            "a CPU (fp16 needs a GPU)", choices=PRECISIONS)
    compile: bool = option(False, "torch.compile the model (faster on a GPU after a warm-up)")
    device: str = option("auto", "auto (a GPU when there is one), cpu, cuda, cuda:1, ...")
    # output
    out: str | None = option(None, "run directory; default runs/<dataset>-<model>-<corrupt>-<mode>-<pooling>-lr<lr>-"
                             "s<seed>", metavar="DIR")
    save_model: bool = option(False, "save the best epoch's classifier to <out>/model: a [CLS] head loads in "
                              "transformers with the same logits; a mean-pooled one loads there as its encoder only "
                              "(the head is minibert's own file)")
    resume: bool = option(False, "continue an interrupted run in --out from its last completed epoch")
    keep_checkpoint: bool = option(False, "keep <out>/checkpoint.pt (model + optimiser, large) after the run finishes")
    cache_dir: str | None = option(None, "cache tokenised splits here, reused by later runs", metavar="DIR")
    stop_after_epoch: int | None = None  # MINIBERT_STOP_AFTER_EPOCH: stop as if killed after this epoch (tests)
    track_cka: bool = option(False, "also log per epoch in metrics.jsonl each layer's debiased CKA with the clean "
                             "pre-trained encoder, on a seeded sample of 256 test examples (one more forward pass "
                             "over them per epoch)")


# train.py's --help groups: each starts at the field named here and runs to the next one
GROUPS = {"model": "what to train",
          "lr": "how to train (the paper states: Adam, lr from 1e-5/2e-5/5e-5, 10 epochs, batch 32, best epoch; the "
                "rest is --recipe)",
          "out": "output"}
# Fields that do not change what a run computes: a resume may differ in them.
NOT_IDENTITY = {"out", "resume", "keep_checkpoint", "stop_after_epoch", "device", "compile", "cache_dir",
                "save_model", "track_cka"}
NO_FLAG = {"stop_after_epoch"}  # set by MINIBERT_STOP_AFTER_EPOCH, not by a train.py flag


def add_flags(parser) -> None:
    """train.py's flags: one per field (but NO_FLAG), named after it, with its default, help, metavar and choices."""
    group = parser
    for f in fields(TrainConfig):
        if f.name in NO_FLAG:
            continue
        if f.name in GROUPS:
            group = parser.add_argument_group(GROUPS[f.name])
        add_flag(group, f.name)


def add_flag(parser, name: str, default=MISSING, help: str | None = None) -> None:
    """Add field `name`'s flag: train's name, kind, metavar and choices, with the field's default and help text unless
    given. Another command whose flag means what this field means (grid's, eval's) builds it here, with its own
    default and help where they differ (field_help(): what the flag means, to build on)."""
    f = next(f for f in fields(TrainConfig) if f.name == name)
    kinds = [t for t in get_args(f.type) or (f.type,) if t is not type(None)]
    if kinds == [bool]:
        kind = {"action": "store_true"}
    elif kinds in ([int], [float]):
        kind = {"type": kinds[0]}
    else:
        kind = {}  # str, and lr's "2e-5 or sweep": kept as the text given, validate() reads it
    extra = {k: v for k, v in f.metadata.items() if k != "help"}
    help = f.metadata["help"] if help is None else help
    parser.add_argument("--" + name.replace("_", "-"), default=f.default if default is MISSING else default,
                        help=help.replace("%", "%%"), **kind, **extra)  # argparse formats help with %: % is written %%


def field_help(name: str) -> str:
    """What field `name`'s train flag means: its help text without train's default ("...; default: ..."), which
    another command states its own way."""
    return TrainConfig.__dataclass_fields__[name].metadata["help"].split("; default:")[0]


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


def micro_batch(cfg: TrainConfig, world: int) -> int:
    """Examples in one forward pass of one process: the batch split over grad_accum steps and `world` processes."""
    if cfg.batch_size % (cfg.grad_accum * world):
        raise ValueError(f"--batch-size {cfg.batch_size} must be divisible by --grad-accum {cfg.grad_accum} "
                         f"x {world} processes")
    return cfg.batch_size // (cfg.grad_accum * world)


def validate(cfg: TrainConfig) -> TrainConfig:
    """Check every argument that needs no files; returns cfg with lr as a float (or "sweep")."""
    for f in fields(TrainConfig):
        if "choices" in f.metadata and getattr(cfg, f.name) not in f.metadata["choices"]:
            raise ValueError(f"--{f.name.replace('_', '-')} must be one of {', '.join(f.metadata['choices'])}, "
                             f"got {getattr(cfg, f.name)!r}")
    lr = cfg.lr
    if lr != "sweep":
        try:
            lr = float(lr)
        except ValueError:
            raise ValueError(f"--lr must be a number such as 2e-5, or 'sweep', got {cfg.lr!r}") from None
        if not (lr > 0 and math.isfinite(lr)):
            raise ValueError(f"--lr must be positive, got {cfg.lr!r}")
    check_numbers(seed=cfg.seed, **{name: getattr(cfg, name) for name in LOWEST})
    if cfg.until_converged and cfg.epochs <= FULL_WINDOW:
        raise ValueError(f"--until-converged stops a run from epoch {FULL_WINDOW} on, before its last: with --epochs "
                         f"{cfg.epochs} it would change nothing; give --epochs {FULL_WINDOW + 1} or more, or drop it")
    micro_batch(cfg, world_size())  # refuses a batch that does not split evenly
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
