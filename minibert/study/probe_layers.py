"""Layer-wise probes: where in the network is the task solved, clean, corrupted, and after fine-tuning?

    python -m minibert probe-layers RUN_DIR [--png probes.png]     # a table, RUN_DIR/probe_layers.json
    probe_layers("runs/x")                                         # the same as a dict

For a finished run saved with --save-model, a logistic regression (scikit-learn, on standardised features)
is trained on each hidden state's pooled features of the run's train examples and scored (accuracy) on its
test examples, for three encoders:

    clean       the pre-trained encoder as loaded
    corrupted   the pre-trained encoder with the run's corruption (its spec and seed, as the run applied it)
    finetuned   the run's fine-tuned encoder (the best epoch's saved model)

Pooling matches the run's: mean over real tokens with [CLS] excluded (--pooling mean), or the hidden state
at [CLS] (--pooling cls; the raw state, since BERT's pooler exists only on top of the last layer).
Hidden state 0 is the embedding block, then one per layer. The paper reports only the last layer's F1;
this shows the layer from which the task is linearly decodable and how corruption and fine-tuning move it.
"""
import json
import sys
from pathlib import Path

import numpy as np

from ..checkpoint import load_classifier, load_pretrained
from ..cli import Parser, main_wrapper
from ..corrupt import corrupt, parse_spec
from ..data.datasets import load_dataset
from ..data.encoding import encode
from ..tokenizer import load_tokenizer
from ..training.cka import layer_features
from ..training.metrics import majority_baseline
from ..training.rundir import read_result, saved_model
from .cells import Cell
from .figures import _pyplot, _save
from .layer_cka import layer_name, read_run

ENCODERS = ("clean", "corrupted", "finetuned")


def probe_accuracy(train_x, train_y, test_x, test_y, seed: int = 0) -> float:
    """Test accuracy of a logistic regression fitted on (train_x, train_y): standardised features, L2, lbfgs."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(set(np.asarray(train_y).tolist())) < 2:
        raise ValueError("a probe needs at least two classes among the training examples")
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    probe.fit(np.asarray(train_x), np.asarray(train_y))
    return float(probe.score(np.asarray(test_x), np.asarray(test_y)))


def layer_probes(encoder, train, test, pad_id: int, pooling: str = "mean", batch_size: int = 32,
                 device="cpu", seed: int = 0) -> list[float]:
    """Probe test accuracy of each hidden state (embeddings, then every layer) of `encoder`, given the
    Encoded train and test examples."""
    train_feats = layer_features(encoder, train, pad_id, batch_size, device, pooling)
    test_feats = layer_features(encoder, test, pad_id, batch_size, device, pooling)
    return [probe_accuracy(a.numpy(), train.labels, b.numpy(), test.labels, seed)
            for a, b in zip(train_feats, test_feats)]


def probe_layers(run_dir, max_train: int = 5000, max_test: int = 2000, batch_size: int = 32, device="cpu") -> dict:
    """Layer-wise probe accuracy of a saved run's clean, corrupted and fine-tuned encoders (see the module doc).

    Uses the run's first max_train train and max_test test examples (its split is already shuffled).
    Returns {"layers": [0..L], "clean": [...], "corrupted": [...], "finetuned": [...], "majority": the test
    accuracy of always predicting the most common training label, "pooling", "corrupt", "corrupted_layers",
    "n_train", "n_test", "model": the saved model's directory}.
    """
    args, result = read_run(run_dir)
    model_dir = saved_model(run_dir, result)
    if model_dir is None:
        raise ValueError(f"{run_dir} has no saved model: rerun it with --save-model to probe its fine-tuned encoder")
    data = load_dataset(args["dataset"], args["data_dir"], args["split"], args["seed"], args["limit"])
    tokenizer = load_tokenizer(args["checkpoint"])
    train = encode(data.train.take(range(min(max_train, len(data.train)))), tokenizer, args["max_length"])
    test = encode(data.test.take(range(min(max_test, len(data.test)))), tokenizer, args["max_length"])
    pooling = args["pooling"]

    def probes(encoder):
        return layer_probes(encoder, train, test, tokenizer.pad_id, pooling, batch_size, device, args["seed"])

    accuracy = {"clean": probes(load_pretrained(args["checkpoint"]))}
    broken = load_pretrained(args["checkpoint"])
    touched = corrupt(broken, args["corrupt"], seed=args["seed"]).params
    accuracy["corrupted"] = probes(broken) if touched else accuracy["clean"]  # spec none: the same encoder
    accuracy["finetuned"] = probes(load_classifier(model_dir).encoder)
    L = len(accuracy["clean"]) - 1
    return {"layers": list(range(L + 1)), **accuracy,
            "majority": majority_baseline(train.labels, test.labels)["accuracy"],
            "pooling": pooling, "corrupt": args["corrupt"],
            "corrupted_layers": parse_spec(args["corrupt"], L).layers,
            "n_train": len(train), "n_test": len(test), "model": str(model_dir)}


def probe_results(out: Path, cells: list[Cell], checkpoint: str, device: str = "cpu") -> dict:
    """{setting: probe accuracy per hidden state of the fine-tuned encoder}, "pre-trained": the clean
    pre-trained encoder's, "majority": the majority-class accuracy; cached per cell in <out>/probes/. Cells
    without a saved model are left out ({} when none has one)."""
    saved = {c: saved_model(out / c.name) for c in cells if read_result(out / c.name)}
    saved = {c: m for c, m in saved.items() if m is not None}
    if not saved:
        return {}
    cache = out / "probes"
    cache.mkdir(exist_ok=True)
    first = next(iter(saved))
    args, _ = read_run(out / first.name)
    data = load_dataset(args["dataset"], args["data_dir"], args["split"], args["seed"], args["limit"])
    tokenizer = load_tokenizer(args["checkpoint"])
    train, test = (encode(split, tokenizer, args["max_length"]) for split in (data.train, data.test))

    def probes(name, make_encoder):
        path = cache / f"{name}.json"
        if not path.is_file():
            accuracy = layer_probes(make_encoder(), train, test, tokenizer.pad_id, args["pooling"], device=device,
                                    seed=args["seed"])
            path.write_text(json.dumps(accuracy) + "\n")
        return json.loads(path.read_text())

    results = {"pre-trained": probes(f"{first.model}-{first.dataset}-pretrained-s{first.seed}",
                                     lambda: load_pretrained(checkpoint))}
    for cell, model_dir in saved.items():
        results[cell.setting if cell.level else "clean"] = probes(cell.name, lambda m=model_dir: load_classifier(m).encoder)
    results["majority"] = majority_baseline(train.labels, test.labels)["accuracy"]
    return results


def format_probes(result: dict) -> str:
    """A markdown table: hidden state, corrupted?, probe accuracy clean / corrupted / fine-tuned."""
    lines = [f"layer-wise probe test accuracy ({result['pooling']} pooling, corruption {result['corrupt']}, "
             f"{result['n_train']} train / {result['n_test']} test examples; majority class {result['majority']:.3f})",
             "", "| layer | corrupted | clean | corrupted | fine-tuned |", "|---|---|---|---|---|"]
    for i in result["layers"]:
        mark = "yes" if i in result["corrupted_layers"] else ""
        cells = " | ".join(f"{result[k][i]:.3f}" for k in ENCODERS)
        lines.append(f"| {layer_name(i)} | {mark} | {cells} |")
    return "\n".join(lines)


def probe_figure(result: dict, out) -> Path:
    """Probe accuracy per layer, one line per encoder, corrupted layers shaded. Returns the PNG path."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i in result["corrupted_layers"]:
        ax.axvspan(i - 0.5, i + 0.5, color="0.9")
    for name, style in zip(ENCODERS, ("-o", "--s", "-^")):
        ax.plot(result["layers"], result[name], style, markersize=4, label=name.replace("finetuned", "fine-tuned"))
    ax.axhline(result["majority"], color="0.5", lw=0.8, ls=":", label="majority class")
    ax.set_xticks(result["layers"], ["emb" if i == 0 else str(i) for i in result["layers"]])
    ax.set_xlabel("hidden state (embeddings, then layer; shaded = corrupted)")
    ax.set_ylabel("probe test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"layer-wise probes, corruption {result['corrupt']}", fontsize=9)
    fig.tight_layout()
    return _save(fig, plt, out)


@main_wrapper
def main(argv=None) -> int:
    p = Parser(prog="python -m minibert probe-layers",
               description="Logistic-regression probes on every layer of a saved run: clean, corrupted, fine-tuned")
    p.add_argument("run_dir", help="a finished run directory saved with --save-model")
    p.add_argument("--max-train", type=int, default=5000, help="train examples to fit each probe on (default 5000)")
    p.add_argument("--max-test", type=int, default=2000, help="test examples to score each probe on (default 2000)")
    p.add_argument("--batch-size", type=int, default=32, help="examples per forward pass")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--out", help="where to write the JSON (default RUN_DIR/probe_layers.json)")
    p.add_argument("--png", help="also draw probe accuracy per layer into this PNG (needs matplotlib)")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    args = p.parse_args(argv)
    if args.max_train < 2 or args.max_test < 1:
        p.error("--max-train must be at least 2 and --max-test at least 1")
    result = probe_layers(args.run_dir, args.max_train, args.max_test, args.batch_size, args.device)
    out = Path(args.out or Path(args.run_dir) / "probe_layers.json")
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=2) if args.json else format_probes(result))
    if args.png:
        print(f"wrote {probe_figure(result, args.png)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
