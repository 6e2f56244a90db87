"""Fine-tune or linear-probe one (possibly corrupted) BERT on one dataset: the paper's experiment.

    python train.py --model large --corrupt top:0.5                  # SST-2, lr sweep, 10 epochs
    python train.py --model base --corrupt bottom:3 --lr 2e-5 --data-dir ../shared/data/sst2
    torchrun --nproc_per_node=4 train.py --model large --dataset imdb

Writes a run directory (--out): config.json, corruption.json, metrics.jsonl (one line per epoch) and
result.json (best epoch, its weighted F1 / macro F1 / accuracy / loss, the majority baseline, diverged).
A finished run is reported, not rerun; an interrupted one continues with --resume.
The loop itself is minibert/trainer.py.
"""
import argparse
import json
import os
import sys

import torch.distributed as dist

from minibert.corrupt import GRAMMAR
from minibert.datasets import DATASETS
from minibert.trainer import PAPER_LRS, TrainConfig, train

D = TrainConfig()  # the defaults, shown in --help


class Help(argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action):  # append real defaults only, and not where the text gives one
        if action.default in (None, False) or "default:" in action.help:
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, like every other error of the CLI
        print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


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
    g.add_argument("--split", default=D.split, choices=["paper", "official"],
                   help="paper: pool the labelled data and take Table 1's train/test sizes (seeded); "
                        "official: the dataset's own train and test (GLUE: validation)")
    g.add_argument("--limit", type=int, default=D.limit, metavar="N",
                   help="use at most N train and N test examples, for a quick look")
    g.add_argument("--max-length", type=int, default=D.max_length, metavar="T",
                   help="truncate to T tokens; default: the dataset's (128 for SST-2, 512 for IMDB)")
    g.add_argument("--corrupt", default=D.corrupt, metavar="SPEC",
                   help=f"corrupt the encoder before training: {GRAMMAR.replace('%', '%%')}. The paper: "
                        "bottom:0.25|0.5|0.75, top:0.25|0.5|0.75, all")
    g.add_argument("--pooling", default=D.pooling, choices=["cls", "mean"],
                   help="cls: [CLS] through BERT's pooler (the paper's Table 2); mean: average of the tokens (Table 3)")
    g.add_argument("--mode", default=D.mode, choices=["finetune", "probe"],
                   help="finetune: train every parameter (Tables 2, 3); probe: freeze the encoder and train the "
                        "linear head on cached features (Table 4)")
    g.add_argument("--seed", type=int, default=D.seed, help="seeds the split, the corruption, the head and the batch order")
    g = p.add_argument_group("how to train (defaults: the paper's protocol)")
    g.add_argument("--lr", default=D.lr, metavar="LR|sweep",
                   help=f"learning rate, or 'sweep': one sub-run per lr in {', '.join(f'{x:g}' for x in PAPER_LRS)} "
                        "and keep the best (the paper's protocol; three runs)")
    g.add_argument("--epochs", type=int, default=D.epochs, help="epochs; every one is evaluated and the best is reported")
    g.add_argument("--batch-size", type=int, default=D.batch_size, metavar="B", help="examples per optimiser step (all GPUs together)")
    g.add_argument("--grad-accum", type=int, default=D.grad_accum, metavar="K",
                   help="split each batch into K micro-batches (same result, less memory)")
    g.add_argument("--weight-decay", type=float, default=D.weight_decay, help="AdamW weight decay, on matrices only")
    g.add_argument("--warmup", type=float, default=D.warmup, help="fraction of the steps for the linear lr warmup")
    g.add_argument("--grad-clip", type=float, default=D.grad_clip, help="clip the gradient norm at this value")
    g.add_argument("--metric", default=D.metric, choices=["weighted_f1", "macro_f1", "accuracy"],
                   help="picks the best epoch and, with --lr sweep, the best lr (the paper: weighted F1)")
    g.add_argument("--precision", default=D.precision, choices=["auto", "bf16", "fp16", "fp32"],
                   help="auto: bf16 autocast on GPUs that support it, else fp16 with loss scaling; fp32 on a CPU")
    g.add_argument("--compile", action="store_true", help="torch.compile the model (faster on a GPU after a warm-up)")
    g.add_argument("--device", default=D.device, help="auto (a GPU when there is one), cpu, cuda, cuda:1, ...")
    g = p.add_argument_group("output")
    g.add_argument("--out", default=D.out, metavar="DIR",
                   help="run directory; default runs/<dataset>-<model>-<corrupt>-<mode>-<pooling>-lr<lr>-s<seed>")
    g.add_argument("--save-model", action="store_true",
                   help="save the best epoch's classifier to <out>/model (safetensors that transformers loads)")
    g.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in --out from its last completed epoch")
    g.add_argument("--keep-checkpoint", action="store_true",
                   help="keep <out>/checkpoint.pt (model + optimiser, large) after the run finishes")
    g.add_argument("--cache-dir", default=D.cache_dir, metavar="DIR",
                   help="cache tokenised splits here, reused by later runs")
    args = p.parse_args(argv)
    return TrainConfig(**{k: v for k, v in vars(args).items()})


def main(argv=None) -> int:
    cfg = parse_args(argv)
    try:
        result = train(cfg)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if result["status"] == "done" and os.environ.get("RANK", "0") == "0":
        summary = {k: result[k] for k in ("best_epoch", "best", "majority_f1", "diverged", "lr")}
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
