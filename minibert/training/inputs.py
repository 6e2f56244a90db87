"""What a run reads before it trains: device, model files, data and tokens (rundir.py records them in config.json).

Every error a user can cause with a file (a missing model, bad data, a precision the device lacks)
surfaces here, before any training; a sweep prepares once for its three runs.
"""
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from ..checkpoint import resolve
from ..config import BertConfig
from ..corrupt import parse_spec
from ..data.datasets import load_dataset
from ..data.encoding import encode
from ..tokenizer import load_tokenizer
from .config import micro_batch
from .device import allow_tf32, length_multiple, resolve_precision, setup_device
from .memory import check_fits_on_gpu

VAL_FRACTION = 0.1  # select_on="val": the share of train held out to choose the epoch and lr


@dataclass
class Prepared:
    """What every run of one configuration shares (a sweep prepares once): device, checkpoint, data, tokens."""
    device: torch.device
    rank: int
    world: int
    precision: str
    checkpoint: Path
    config: BertConfig
    dataset: object
    tokenizer: object
    max_length: int
    train: object  # Encoded
    test: object
    val: object = None  # Encoded, with select_on="val"

    @property
    def main(self) -> bool:
        """torchrun's rank 0 (or the only process): the one that writes and prints."""
        return self.rank == 0


def hold_out(split, seed: int):
    """(train, val): a seeded, stratified VAL_FRACTION of `split` held out for choosing the epoch and lr."""
    index = np.arange(len(split))
    try:
        keep, held = train_test_split(index, test_size=VAL_FRACTION, random_state=seed, stratify=split.labels)
    except ValueError as e:
        raise ValueError(f"--select-on val cannot hold out {VAL_FRACTION:.0%} of {len(split)} training examples "
                         f"with every class in both parts ({e}); use more data or --select-on test") from None
    return split.take(sorted(keep)), split.take(sorted(held))


def prepare(cfg) -> Prepared:
    """Device, model files, corruption spec, data and tokens: every input error lands here, before training."""
    device, rank, world = setup_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    allow_tf32(device, precision)
    checkpoint = resolve(cfg.model)
    config = BertConfig.from_json(checkpoint / "config.json")
    parse_spec(cfg.corrupt, config.num_hidden_layers, has_pooler=config.flavour == "bert")
    ds = load_dataset(cfg.dataset, cfg.data_dir, cfg.split, cfg.seed, cfg.limit, cfg.test_limit)
    train_split, val_split = hold_out(ds.train, cfg.seed) if cfg.select_on == "val" else (ds.train, None)
    tokenizer = load_tokenizer(checkpoint)
    max_length = clamp_max_length(cfg.max_length, ds.spec.max_length, config, rank == 0)
    enc = [encode(s, tokenizer, max_length, cfg.cache_dir) if s is not None else None
           for s in (train_split, ds.test, val_split)]
    if cfg.mode == "finetune" and len(enc[0]) <= micro_batch(cfg, world) * (world - 1):
        raise ValueError(f"{len(enc[0])} training examples leave some of the {world} processes without a batch; "
                         "use fewer processes or a smaller --batch-size")
    if device.type == "cuda":  # the longest batch's peak against what the GPU has free, before the first step
        multiple = length_multiple(device, cfg.compile)
        longest = -(-int(enc[0].lengths.max()) // multiple) * multiple  # as the trainer pads its batches
        check_fits_on_gpu(config, cfg.batch_size // world, cfg.grad_accum, min(longest, max_length), precision, cfg.mode,
                          torch.cuda.mem_get_info(device)[0], f"--device {device} ({torch.cuda.get_device_name(device)})",
                          len(ds.label_names))
    return Prepared(device, rank, world, precision, checkpoint, config, ds, tokenizer, max_length, *enc)


def clamp_max_length(asked: int | None, default: int, config: BertConfig, say: bool = True) -> int:
    """--max-length (or the dataset's default), at most the model's positions; a note when that cuts what was asked."""
    positions = config.max_position_embeddings
    if say and asked is not None and asked > positions:
        print(f"note: --max-length {asked} is more than the model's {positions} positions; using {positions}",
              file=sys.stderr)
    return min(asked or default, positions)


def device_kind(data: Prepared) -> str:
    """What a run computes on, as config.json records it: the GPU's name, or "cpu"."""
    return torch.cuda.get_device_name(data.device) if data.device.type == "cuda" else "cpu"


def check_resume_compute(config: dict, data: Prepared, out) -> None:
    """A run resumed on another kind of device: refused when its precision would change half-way (the epochs
    before and after would not be one run), said aloud when only the device differs (numbers round differently)."""
    before, kind = config.get("precision"), config.get("gpu") or "cpu"
    if before is not None and before != data.precision:
        raise ValueError(f"--resume: {out} trained its first epochs in {before} on {kind}; here its --precision "
                         f"{config['args'].get('precision')} resolves to {data.precision} on {device_kind(data)}. "
                         f"Resume it with --precision {before}, on the kind of device it started on, or use a new --out")
    if kind != device_kind(data) and data.main:
        print(f"note: {out} started on {kind} and resumes on {device_kind(data)} in {data.precision}: the epochs "
              "after this one round differently from an uninterrupted run", file=sys.stderr)
