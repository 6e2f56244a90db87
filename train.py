"""Fine-tune or linear-probe one (possibly corrupted) BERT on one dataset: the paper's experiment.

    python train.py --model large --corrupt top:0.5                  # SST-2, lr sweep, 10 epochs
    python train.py --model base --corrupt bottom:3 --lr 2e-5 --data-dir ../shared/data/sst2

A shim for readers of the repository: the command is `minibert train` (minibert/tools/train.py), which an
installed package has too; `python train.py --help` lists its flags.
"""
import sys

from minibert.tools.train import main

if __name__ == "__main__":
    sys.exit(main())
