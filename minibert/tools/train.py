"""`minibert train`: fine-tune or linear-probe one (possibly corrupted) BERT on one dataset, the paper's experiment.

    minibert train --model large --corrupt top:0.5                  # SST-2, lr sweep, 10 epochs
    minibert train --model distil --recipe paper --select-on val    # plain Adam; choose the epoch on held-out train
    minibert train --model base --corrupt bottom:3 --lr 2e-5 --data-dir ../shared/data/sst2
    torchrun --nproc_per_node=4 -m minibert train --model large --dataset imdb

(`python -m minibert train`, and `python train.py` in a clone of the repository, are the same command.)
Writes a run directory (--out; its files are described in minibert/training/rundir.py): the arguments, what the
corruption touched, one line of metrics per epoch and the result (the best epoch's scores beside the majority
baseline, the flags, the recipe and the data sizes used).
A finished run is reported, not rerun; an interrupted one continues with --resume.
The loop itself is minibert/training/trainer.py; the recipes are minibert/training/optim.py.
"""
import argparse
import json
import os
import sys

import torch.distributed as dist

from ..cli import Parser, main_wrapper
from ..training.config import TrainConfig, add_flags
from ..training.trainer import train


class Help(argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action):  # append real defaults only, and not where the text gives one
        if action.default in (None, False) or "default:" in action.help:
            return action.help
        return super()._get_help_string(action)


def parse_args(argv=None) -> TrainConfig:
    """The flags are TrainConfig's fields: their defaults, help texts and choices live in minibert/training/config.py."""
    p = Parser(description=__doc__.split("\n")[0], formatter_class=Help,
               epilog="Example: minibert train --model large --corrupt top:0.5 --data-dir ../shared/data/sst2. "
                      "Tokens/s, time and the best epoch are in <out>/result.json. Set MINIBERT_STOP_AFTER_EPOCH=N to "
                      "stop after epoch N as if killed (for testing --resume).")
    add_flags(p)
    return TrainConfig(**vars(p.parse_args(argv)))


@main_wrapper
def main(argv=None) -> int:
    cfg = parse_args(argv)
    try:
        result = train(cfg)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if result["status"] == "done" and os.environ.get("RANK", "0") == "0":
        summary = {k: result[k] for k in ("best_epoch", "best", "majority_f1", "diverged", "collapsed", "lr", "recipe")}
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
