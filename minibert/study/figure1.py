"""The paper's Figure 1 from a grid: t-SNE of the fine-tuned features of the 0%, top, bottom and 100% cells.

    python -m minibert grid tsne runs/grid --model base     # runs/grid/figure1-table2-base-ag_news-s0.png
    png = figure1(Path("runs/grid"))                         # the same from Python

Each panel is one cell's saved classifier (the grid run with --save-models) on the first n examples of the cell's
own test set: its pooled [CLS] features, what the classifier sees. figures.tsne_figure draws the panels.
"""
from pathlib import Path

import torch

from ..checkpoint import load_classifier
from ..data.datasets import DATASET_TITLES, load_dataset
from ..data.encoding import encode
from ..tokenizer import load_tokenizer
from ..training.evaluation import extract
from ..training.rundir import check_writable, read_result, saved_model
from .cells import Cell, load_manifest
from .figures import tsne_figure
from .layer_cka import read_run
from .summary import model_order


def figure1(out: Path, table: str = "table2", model: str | None = None, dataset: str = "ag_news",
            level: int | None = None, seed: int = 0, n: int = 1000, device: str = "cpu", png: Path | None = None) -> Path:
    """The paper's Figure 1: t-SNE of the pooled [CLS] features (what the classifier sees) of the fine-tuned
    0%, top, bottom and 100% cells on the test set, as one 4-panel PNG. Needs cells run with --save-models."""
    model, chosen = figure1_cells(out, table, model, dataset, level, seed)
    panels = []
    for letter, (title, cell) in zip("abcd", chosen):
        result = read_result(out / cell.name)
        feats, labels, label_names = cell_features(out / cell.name, n, device)
        panels.append((f"({letter}) {title}: F1 {100 * result['best']['weighted_f1']:.1f}", feats.numpy(), labels.numpy()))
    png = png or out / f"figure1-{table}-{model}-{dataset}-s{seed}.png"
    return tsne_figure(panels, label_names, png, seed=seed,
                       title=f"t-SNE of fine-tuned {model} features on {DATASET_TITLES.get(dataset, dataset)} "
                             f"(n={len(labels)})")


def figure1_cells(out: Path, table: str, model: str | None, dataset: str, level: int | None,
                  seed: int) -> tuple[str, list[tuple[str, Cell]]]:
    """(the model, [(panel title, cell)] for 0%, `level`% top and bottom, 100%): finished cells with a saved model;
    `model` and `level` default to the grid's first model and lowest partial level. A missing one is refused."""
    grid, _ = load_manifest(out)
    mine = [c for c in grid.values() if (c.table, c.dataset, c.seed) == (table, dataset, seed)]
    if not mine:
        have = ", ".join(sorted({f"{c.table} {c.dataset} seed {c.seed}" for c in grid.values()}))
        raise ValueError(f"{out} has no {table} cells on {dataset} with seed {seed} (it has: {have}); "
                         "pick one with --table, --dataset and --seed")
    models = model_order({c.model for c in mine})
    model = model or models[0]
    if model not in models:
        raise ValueError(f"{out} has no model {model!r} in its {table} {dataset} cells (it has: "
                         f"{', '.join(models)}); pick one with --model")
    mine = [c for c in mine if c.model == model]
    partial = sorted({c.level for c in mine if c.level not in (0, 100)})
    level = level if level is not None else (partial[0] if partial else None)
    wanted = [(0, None, "0% corruption"), (level, "top", f"{level}% top corruption"),
              (level, "bottom", f"{level}% bottom corruption"), (100, None, "100% corruption")]
    chosen = []
    for lv, side, title in wanted:
        # on a data-budget grid, the largest size whose model was saved (else the largest, and the error below)
        cell = max((c for c in mine if (c.level, c.side, c.component) == (lv, side, "all")),
                   key=lambda c: (saved_model(out / c.name, read_result(out / c.name)) is not None, c.limit or 0),
                   default=None) if lv is not None else None
        if cell is None:
            raise ValueError(f"{out} has no {table} cell for {model} {dataset} {title} seed {seed} "
                             f"(partial levels there: {partial or 'none'})")
        result = read_result(out / cell.name)
        if (saved_model(out / cell.name, result) if result else None) is None:
            raise FileNotFoundError(f"{out / cell.name}: not finished or no saved model; run the grid with --save-models")
        chosen.append((title, cell))
    return model, chosen


def cell_features(run_dir: Path, n: int, device: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The pooled features and labels of the first n examples of a finished run's test set, through its saved
    classifier in fp32, and the dataset's label names."""
    args, result = read_run(run_dir)
    model_dir = saved_model(run_dir, result)
    data = load_dataset(args["dataset"], args["data_dir"], args["split"], args["seed"], args["limit"])
    test = data.test.take(range(min(n, len(data.test))))
    clf = load_classifier(model_dir, device)
    tokenizer = load_tokenizer(model_dir if (model_dir / "tokenizer.json").is_file() else args["checkpoint"])
    feats, labels = extract(clf, encode(test, tokenizer, args["max_length"]), 64, torch.device(device),
                            "fp32", tokenizer.pad_id)
    return feats, labels, data.label_names


def run_command(args) -> int:
    """`python -m minibert grid tsne` (grid.py parses the command line and calls this)."""
    if args.n < 2:
        raise ValueError(f"--n must be at least 2 (t-SNE needs 2 test examples), got {args.n}")
    if args.png is not None:
        check_writable(args.png, "--png", file="figure1.png")
    png = figure1(Path(args.dir), args.table, args.model, args.dataset, args.level, args.seed, args.n,
                  args.device, Path(args.png) if args.png else None)
    print(f"wrote {png}")
    return 0
