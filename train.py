"""Fine-tune or linear-probe one (possibly corrupted) BERT on one dataset: the paper's experiment.

    python train.py --model large --corrupt top:0.5                  # SST-2, lr sweep, 10 epochs
    python train.py --model distil --recipe paper --select-on val    # plain Adam; choose the epoch on held-out train
    python train.py --model base --corrupt bottom:3 --lr 2e-5 --data-dir ../shared/data/sst2
    torchrun --nproc_per_node=4 train.py --model large --dataset imdb

Writes a run directory (--out): config.json, corruption.json, metrics.jsonl (one line per epoch) and
result.json (best epoch, its weighted F1 / macro F1 / accuracy / loss, the majority baseline, diverged,
collapsed, the recipe and the data sizes used).
A finished run is reported, not rerun; an interrupted one continues with --resume.
The loop itself is minibert/training/trainer.py; the recipes are minibert/training/optim.py.
"""
import argparse
import json
import os
import sys

import torch.distributed as dist

from minibert.cli import Parser, main_wrapper
from minibert.corrupt import GRAMMAR
from minibert.data.datasets import DATASETS, SPLITS
from minibert.training.config import METRICS, MODES, PAPER_LRS, POOLINGS, SELECT_ON, TrainConfig
from minibert.training.evaluation import PRECISIONS
from minibert.training.optim import RECIPES
from minibert.training.trainer import train

D = TrainConfig()  # the defaults, shown in --help


class Help(argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action):  # append real defaults only, and not where the text gives one
        if action.default in (None, False) or "default:" in action.help:
            return action.help
        return super()._get_help_string(action)


def parse_args(argv=None) -> TrainConfig:
    p = Parser(description=__doc__.split("\n")[0], formatter_class=Help,
               epilog="Example: python train.py --model large --corrupt top:0.5 --data-dir ../shared/data/sst2. Tokens/s, time and the best epoch are in <out>/result.json. Set MINIBERT_STOP_AFTER_EPOCH=N to "
                      "stop after epoch N as if killed (for testing --resume).")
    g = p.add_argument_group("what to train")
    g.add_argument("--model", default=D.model,
                   help="base (bert-base-uncased), large (bert-large-uncased), distil (distilbert-base-uncased), "
                        "a local checkpoint directory (config.json + model.safetensors + vocab), or a hub id")
    g.add_argument("--dataset", default=D.dataset, choices=list(DATASETS), metavar="NAME",
                   help=f"one of {', '.join(DATASETS)}")
    g.add_argument("--data-dir", default=D.data_dir,
                   help="local folder with the dataset's train/validation/test files, e.g. ../shared/data/sst2; "
                        "default: download from the Hugging Face Hub")
    g.add_argument("--split", default=D.split, choices=SPLITS,
                   help="paper: pool the labelled data and take Table 1's train/test sizes (seeded); "
                        "official: the dataset's own train and test (GLUE: validation)")
    g.add_argument("--limit", type=int, default=D.limit, metavar="N",
                   help="use at most N train and N test examples, for a quick look")
    g.add_argument("--test-limit", type=int, default=D.test_limit, metavar="M",
                   help="use at most M test examples instead of N (the same test set at every --limit)")
    g.add_argument("--max-length", type=int, default=D.max_length, metavar="T",
                   help="truncate to T tokens; default: the dataset's (128 for SST-2, 512 for IMDB)")
    g.add_argument("--corrupt", default=D.corrupt, metavar="SPEC",
                   help=f"corrupt the encoder before training: {GRAMMAR.replace('%', '%%')}. The paper: "
                        "bottom:0.25|0.5|0.75, top:0.25|0.5|0.75, all")
    g.add_argument("--pooling", default=D.pooling, choices=POOLINGS,
                   help="cls: [CLS] through BERT's pooler (the paper's Table 2); mean: average of the tokens (Table 3)")
    g.add_argument("--mode", default=D.mode, choices=MODES,
                   help="finetune: train every parameter (Tables 2, 3); probe: freeze the encoder and train the "
                        "linear head on cached features (Table 4)")
    g.add_argument("--seed", type=int, default=D.seed, help="seeds the split, the corruption, the head and the batch order")
    g = p.add_argument_group("how to train (the paper states: Adam, lr from 1e-5/2e-5/5e-5, 10 epochs, batch 32, "
                             "best epoch; the rest is --recipe)")
    g.add_argument("--lr", default=D.lr, metavar="LR|sweep",
                   help=f"learning rate, or 'sweep': one sub-run per lr in {', '.join(f'{x:g}' for x in PAPER_LRS)} "
                        "and keep the best (the paper's lrs; three runs)")
    g.add_argument("--epochs", type=int, default=D.epochs, help="epochs; every one is evaluated and the best is reported")
    g.add_argument("--batch-size", type=int, default=D.batch_size, metavar="B", help="examples per optimiser step (all GPUs together)")
    g.add_argument("--recipe", default=D.recipe, choices=list(RECIPES),
                   help="what the paper leaves open. paper: plain Adam at a constant lr, nothing else (the paper's "
                        "words); hf-trainer: the HF Trainer defaults of transformers 4.41.1, the version the paper "
                        "used (AdamW with weight decay 0, no warmup, linear decay to 0, clipping at 1.0); bert: "
                        "BERT's recipe (AdamW, weight decay 0.01 on matrices, 10%% warmup, linear decay, clipping at 1.0)")
    g.add_argument("--grad-accum", type=int, default=D.grad_accum, metavar="K",
                   help="split each batch into K micro-batches (same result, less memory)")
    g.add_argument("--weight-decay", type=float, default=D.weight_decay,
                   help="weight decay on matrices only (AdamW: decoupled; the paper recipe's Adam: L2); "
                        "default: the recipe's")
    g.add_argument("--warmup", type=float, default=D.warmup,
                   help="fraction of the steps for the linear lr warmup; default: the recipe's")
    g.add_argument("--grad-clip", type=float, default=D.grad_clip,
                   help="clip the gradient norm at this value, 0: no clipping; default: the recipe's")
    g.add_argument("--metric", default=D.metric, choices=METRICS,
                   help="picks the best epoch and, with --lr sweep, the best lr (the paper: weighted F1)")
    g.add_argument("--select-on", default=D.select_on, choices=SELECT_ON,
                   help="where the best epoch and lr are chosen. test: on the test set, as the paper does "
                        "(optimistic on small test sets); val: on a seeded, stratified 10%% of train held out for "
                        "it. Either way the test scores are reported")
    g.add_argument("--precision", default=D.precision, choices=PRECISIONS,
                   help="auto: bf16 autocast on GPUs that support it, else fp16 with loss scaling; fp32 on a CPU "
                        "(fp16 needs a GPU)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model (faster on a GPU after a warm-up)")
    g.add_argument("--device", default=D.device, help="auto (a GPU when there is one), cpu, cuda, cuda:1, ...")
    g = p.add_argument_group("output")
    g.add_argument("--out", default=D.out, metavar="DIR",
                   help="run directory; default runs/<dataset>-<model>-<corrupt>-<mode>-<pooling>-lr<lr>-s<seed>")
    g.add_argument("--save-model", action="store_true",
                   help="save the best epoch's classifier to <out>/model: a [CLS] head loads in transformers with the same "
                        "logits; a mean-pooled one loads there as its encoder only (the head is minibert's own file)")
    g.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in --out from its last completed epoch")
    g.add_argument("--keep-checkpoint", action="store_true",
                   help="keep <out>/checkpoint.pt (model + optimiser, large) after the run finishes")
    g.add_argument("--track-cka", action="store_true",
                   help="also log per epoch in metrics.jsonl each layer's debiased CKA with the clean pre-trained "
                        "encoder, on a seeded sample of 256 test examples (one more forward pass over them per epoch)")
    g.add_argument("--cache-dir", default=D.cache_dir, metavar="DIR",
                   help="cache tokenised splits here, reused by later runs")
    args = p.parse_args(argv)
    return TrainConfig(**{k: v for k, v in vars(args).items()})


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
