"""Evaluate a saved run or fine-tuned checkpoint on a dataset split: metrics and a confusion matrix.

    python eval.py runs/sst2-base-top_0.5-finetune-cls-lrsweep-s0      # a run trained with --save-model

A shim for readers of the repository: the command is `minibert eval` (minibert/tools/eval.py), which an
installed package has too; `python eval.py --help` lists its flags.
"""
import sys

from minibert.tools.eval import main

if __name__ == "__main__":
    sys.exit(main())
