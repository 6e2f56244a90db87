"""`minibert eval`: evaluate a saved run or fine-tuned checkpoint on a dataset split: metrics and a confusion matrix.

    minibert eval runs/sst2-base-top_0.5-finetune-cls-lrsweep-s0      # a run trained with --save-model
    minibert eval path/to/checkpoint --dataset sst2 --data-dir ../shared/data/sst2
    minibert eval RUN --tsne figure.png                                # t-SNE of the pooled features

(`python -m minibert eval`, and `python eval.py` in a clone of the repository, are the same command.)
A run directory supplies its own dataset, split, seed, limit and max length (so the numbers are the
run's best epoch, to the last digit on the same device and precision); flags override them. A sweep's
directory evaluates its best sub-run. An unfinished run's best epoch so far is scored with a note, and
--json says "finished": false.
"""
import json
import os
import sys
from pathlib import Path

from ..checkpoint import load_classifier
from ..cli import Parser, main_wrapper
from ..data.datasets import load_dataset
from ..data.encoding import encode
from ..tokenizer import load_tokenizer
from ..training import rundir
from ..training.config import TrainConfig, add_flag, check_numbers, field_help
from ..training.device import resolve_precision, setup_device
from ..training.evaluation import evaluate, extract
from ..training.inputs import clamp_max_length
from ..training.metrics import confusion, format_confusion, majority_baseline


def find_model(path: Path) -> tuple[Path, dict, bool | None]:
    """(checkpoint dir, the run's train arguments or {}, whether the run finished or None) for a run directory,
    a sweep or a checkpoint."""
    if rundir.read_config(path) is None:
        return path, {}, None  # a checkpoint directory (HF config.json)
    finished = rundir.read_result(path) is not None
    model = rundir.saved_model(path)
    if model is None and finished:
        raise FileNotFoundError(f"{path} finished without a saved model; rerun its train.py command with "
                                "--save-model")
    if model is None:
        raise FileNotFoundError(f"{path} is an unfinished run with no saved model yet; finish it with train.py "
                                "--resume --save-model")
    if not finished:
        epochs = len(rundir.read_metrics(path))
        print(f"note: {path} is unfinished (stopped after epoch {epochs}): scoring its best epoch so far, not the "
              "run's result; finish it with train.py --resume", file=sys.stderr)
    config = rundir.read_config(model.parent)
    return model, {**config["args"], "max_length": config["max_length"]}, finished


# train's flags that eval takes too; not given, each is the run's value, else train's default. The help text is the
# flag's in train, where it means the same here (None), else what it means here.
RUN_FLAGS = {"dataset": None, "data_dir": None, "split": None, "seed": "seed of the paper split", "limit": None,
             "max_length": None, "batch_size": "examples per forward pass",
             "precision": "auto: bf16 on GPUs that support it, else fp16; fp32 on a CPU (fp16 needs a GPU)"}
UNSET = {"data_dir": "the hub", "limit": "all of them", "max_length": "the dataset's"}  # what train's None means


def parser() -> Parser:
    d = TrainConfig()
    p = Parser(description=__doc__.split("\n")[0])
    p.add_argument("path", help="a run directory (trained with --save-model) or a checkpoint directory")
    for name, help in RUN_FLAGS.items():
        add_flag(p, name, default=None, help=f"{help or field_help(name)}; default: the run's, else "
                                             f"{UNSET.get(name, getattr(d, name))}")
    p.add_argument("--which", default="test", choices=["test", "train"],
                   help="which part of the split to evaluate (default: test)")
    add_flag(p, "device", help=f"{field_help('device')}; default: {d.device}")
    p.add_argument("--tsne", metavar="PNG", help="also save a t-SNE figure of the pooled features here (needs matplotlib)")
    p.add_argument("--json", action="store_true",
                   help="also print the metrics as one JSON line (full precision) after the tables")
    return p


def settings(args, run: dict) -> dict:
    """Each of RUN_FLAGS: the flag, else the run's value, else train's default."""
    d = TrainConfig()
    return {name: getattr(args, name) if getattr(args, name) is not None else run.get(name, getattr(d, name))
            for name in RUN_FLAGS}



def print_scores(m: dict, base: dict, label_names: list[str], n: int, as_json: bool, finished: bool | None) -> None:
    """The metrics beside the majority baseline, and the confusion matrix; with `as_json`, one JSON line after them
    (full precision, for scripts: compare with a run's result.json) that says whether a run had finished."""
    print(f"weighted F1 {100 * m['weighted_f1']:.2f} | macro F1 {100 * m['macro_f1']:.2f} | accuracy "
          f"{100 * m['accuracy']:.2f} | loss {m['loss']:.4f} | majority baseline weighted F1 "
          f"{100 * base['weighted_f1']:.2f}")
    print(format_confusion(confusion(m["labels"], m["preds"], len(label_names)), label_names))
    if as_json:
        metrics = {k: m[k] for k in ("weighted_f1", "macro_f1", "accuracy", "loss")}
        run_state = {} if finished is None else {"finished": finished}
        print(json.dumps({**metrics, "majority_f1": base["weighted_f1"], "n": n, **run_state}))


@main_wrapper
def main(argv=None) -> int:
    args = parser().parse_args(argv)
    check_numbers(seed=args.seed, limit=args.limit, max_length=args.max_length, batch_size=args.batch_size)
    if args.tsne is not None:  # before the forward passes: a figure that cannot be written fails now
        rundir.check_writable(args.tsne, "--tsne", file="tsne.png")
    model_dir, run, finished = find_model(Path(args.path))
    if args.dataset not in (None, run.get("dataset")) and args.data_dir is None and run.get("data_dir") is not None:
        raise ValueError(f"--dataset {args.dataset}: {args.path} was trained on {run['dataset']}, and its --data-dir "
                         f"{run['data_dir']} holds {run['dataset']}'s files; give --data-dir with {args.dataset}'s files")
    s = settings(args, run)
    device, _, _ = setup_device(args.device)
    precision = resolve_precision(s["precision"], device)
    clf = load_classifier(model_dir, device)
    tok = load_tokenizer(model_dir)
    if args.data_dir is None and s["data_dir"] is not None and not Path(os.path.expandvars(s["data_dir"])).is_dir():
        raise FileNotFoundError(f"{args.path} was trained on {s['data_dir']} (its config.json), which is not a folder "
                                "here; pass --data-dir with the dataset's folder")
    ds = load_dataset(s["dataset"], s["data_dir"], s["split"], s["seed"], s["limit"])
    if clf.num_labels != len(ds.label_names):
        raise ValueError(f"{model_dir} predicts {clf.num_labels} labels but {s['dataset']} has {len(ds.label_names)}")
    split = ds.test if args.which == "test" else ds.train
    max_length = clamp_max_length(s["max_length"], ds.spec.max_length, clf.config)
    feats, labels = extract(clf, encode(split, tok, max_length), s["batch_size"], device, precision, tok.pad_id)
    m = evaluate(clf, feats, labels)
    print(f"{s['dataset']} {args.which} ({len(split)} examples), {model_dir}, {precision} on {device}")
    print_scores(m, majority_baseline(ds.train.labels, split.labels), ds.label_names, len(split), args.json, finished)
    if args.tsne:
        from ..study.figures import tsne_figure
        panel = f"{Path(args.path).name}: {s['dataset']} {args.which}, weighted F1 {100 * m['weighted_f1']:.1f}"
        png = tsne_figure([(panel, feats.cpu().numpy(), labels.cpu().numpy())], ds.label_names, args.tsne, s["seed"])
        print(f"t-SNE figure -> {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
