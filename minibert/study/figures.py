"""Figures: t-SNE panels of pooled features (the paper's Figure 1), layer-wise CKA curves (healing) and
weighted F1 against corruption level (bottom vs top).

    tsne_figure([("0%", feats, labels), ...], label_names, "fig1.png")   # one panel per model, one PNG
    cka_figure({"bottom50": result, ...}, "healing.png", title)           # CKA with the clean model per layer
    level_figure([("base", {"bottom": [(0, [f1, ...]), ...]}, {}, 50.0)], "f1.png")  # F1 against layers corrupted
    budget_figure([("SST-2", {"clean": [(250, [f1, ...]), ...]}, 40.0)], "budget.png")  # F1 against examples
    drift_figure([[("top50 attn", {1: [0, .003, .004], ...}, [4, 5, 6]), None], ...], "drift.png")  # per layer
    layer_probe_figure([("bottom50", {"clean": [...], "attn": [...]}, [1, 2, 3])], "probes.png")   # per layer

matplotlib is imported only here, inside the functions (the `plot` extra): the rest of minibert runs
without it. Figures are written with the Agg backend, so no display is needed.
"""
from pathlib import Path

import numpy as np


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("figures need matplotlib: pip install 'minibert[plot]' (or pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def tsne_2d(features, seed: int = 0) -> np.ndarray:
    """scikit-learn's t-SNE of (n, H) features to (n, 2); PCA init and a fixed seed make it repeatable."""
    from sklearn.manifold import TSNE

    x = np.asarray(features, dtype=np.float32)
    perplexity = min(30.0, (len(x) - 1) / 3)  # t-SNE needs perplexity < n; 30 is its usual value
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)


def tsne_figure(panels, label_names, out, seed: int = 0, title: str | None = None) -> Path:
    """A row-major grid (2 columns) of t-SNE scatter plots, one per (title, features (n, H), labels (n,)) panel,
    coloured by label. Returns the PNG path."""
    plt = _pyplot()
    cols = 2 if len(panels) > 1 else 1
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 4.6 * rows), squeeze=False)
    cmap = plt.get_cmap("tab10" if len(label_names) <= 10 else "tab20")
    for ax, (name, feats, labels) in zip(axes.flat, panels):
        xy, labels = tsne_2d(feats, seed), np.asarray(labels)
        for k, label in enumerate(label_names):
            at = labels == k
            if at.any():
                ax.scatter(xy[at, 0], xy[at, 1], s=6, color=cmap(k % cmap.N), label=label)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 7), markerscale=3, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return _save(fig, plt, out)


def cka_figure(results: dict, out, title: str = "") -> Path:
    """Per-layer CKA with the clean model, one colour per corruption setting: dashed before fine-tuning,
    solid after, dotted the shuffled-rows floor when the result has one. `results` maps a setting name to a
    minibert.study.layer_cka.healing() result. Returns the PNG path."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.6, 4.2))
    cmap = plt.get_cmap("tab10")
    for k, (name, r) in enumerate(results.items()):
        color = cmap(k % cmap.N)
        ax.plot(r["layers"], r["before"], "--o", color=color, markersize=3, label=f"{name} before")
        if r["after"] is not None:
            ax.plot(r["layers"], r["after"], "-o", color=color, markersize=3, label=f"{name} after")
        if r.get("floor") is not None:  # CKA against row-shuffled features: the value of "no similarity"
            ax.plot(r["layers"], r["floor"], ":", color=color, linewidth=1, label=f"{name} floor")
    layers = next(iter(results.values()))["layers"]
    ax.set_xticks(layers, ["emb" if i == 0 else str(i) for i in layers])
    ax.set_xlabel("hidden state (embeddings, then layer)")
    ax.set_ylabel("CKA with the clean model")
    ax.set_ylim(min(-0.02, ax.get_ylim()[0]), 1.02)  # debiased CKA can dip below 0
    ax.grid(alpha=0.3)
    # one entry per setting (its colour) and one per line style, beside the axes: never over a curve
    from matplotlib.lines import Line2D
    keys = [Line2D([], [], color=cmap(k % cmap.N), label=name) for k, name in enumerate(results)]
    keys += [Line2D([], [], color="black", linestyle=style, label=what)
             for style, what in (("--", "before"), ("-", "after"), (":", "floor"))]
    ax.legend(handles=keys, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, plt, out)


def level_figure(panels, out, title: str = "", ylim: tuple | None = None) -> Path:
    """Weighted F1 against the number of layers corrupted, one panel per model: a line per side (bottom, top)
    through the mean over seeds, a band from the lowest to the highest seed, the majority-class baseline as a
    dashed grey line, and the paper's values as faint crosses where it has them.

    panels: (panel title, ours {side: [(layers, [F1 of each seed]), ...]}, paper {side: [(layers, F1), ...]},
    majority F1 or None). The clean (0 layers) and fully corrupted points belong to both sides' lines. ylim: one
    range for a family of figures, so that they compare at a glance. The legend sits below the panels, off the
    data. Returns the PNG path.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.2), squeeze=False, sharey=True)
    colors = {"bottom": "tab:red", "top": "tab:blue"}
    for ax, (name, ours, paper, majority) in zip(axes.flat, panels):
        for side, points in ours.items():
            xs = [x for x, _ in points]
            ax.plot(xs, [float(np.mean(v)) for _, v in points], "-o", color=colors[side], markersize=4,
                    label=f"{side} (mean)")
            ax.fill_between(xs, [min(v) for _, v in points], [max(v) for _, v in points], color=colors[side],
                            alpha=0.18, linewidth=0, label=f"{side} (seed min-max)")
        for side, points in paper.items():
            ax.plot([x for x, _ in points], [v for _, v in points], "x", color=colors[side], alpha=0.45,
                    markersize=6, label=f"{side} (paper)")
        ax.set_xticks(sorted({x for points in ours.values() for x, _ in points}))
        ax.set_xlabel("layers corrupted")
        _finish_panel(ax, name, majority, ylim)
    axes.flat[0].set_ylabel("weighted F1 (%)")
    return _finish_figure(fig, axes, plt, out, title)


def budget_figure(panels, out, title: str = "", ylim: tuple | None = None, xlabel: str = "training examples") -> Path:
    """Weighted F1 against the number of training examples (log scale), one panel per dataset: a line per setting
    through the mean over seeds, a band from the lowest to the highest seed, and the majority-class baseline.

    panels: (panel title, {setting label: [(examples, [F1 of each seed]), ...]}, majority F1 or None).
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.4), squeeze=False, sharey=True)
    for ax, (name, lines, majority) in zip(axes.flat, panels):
        for i, (label, points) in enumerate(lines.items()):
            # settings that score alike would hide each other: each gets its own marker and a small sideways shift
            shift = 10 ** (0.012 * (i - (len(lines) - 1) / 2))
            xs, color = [x * shift for x, _ in points], f"C{i}"
            ax.plot(xs, [float(np.mean(v)) for _, v in points], "-", marker="osD^v<>"[i % 7], color=color,
                    markersize=4, label=label)
            ax.fill_between(xs, [min(v) for _, v in points], [max(v) for _, v in points], color=color, alpha=0.15,
                            linewidth=0)
        ax.set_xscale("log")
        sizes = sorted({x for points in lines.values() for x, _ in points})
        ax.set_xticks(sizes, [f"{x:,}" for x in sizes])
        ax.minorticks_off()
        ax.set_xlabel(xlabel, fontsize=8)
        _finish_panel(ax, name, majority, ylim)
    axes.flat[0].set_ylabel("weighted F1 (%), best epoch")
    return _finish_figure(fig, axes, plt, out, title)


def _finish_panel(ax, name: str, majority: float | None, ylim: tuple | None):
    """What every F1 panel has: the majority-class baseline, its title, a grid, the family's y-range."""
    if majority is not None:
        ax.axhline(majority, color="grey", linestyle="--", linewidth=1, label="majority class")
    ax.set_title(name, fontsize=9)
    ax.grid(alpha=0.3)
    if ylim:
        ax.set_ylim(*ylim)


def _finish_figure(fig, axes, plt, out, title: str) -> Path:
    """One legend below the panels, the title, and the PNG."""
    _legend_below(fig, axes)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.15, 1, 1))
    return _save(fig, plt, out)


def _legend_below(fig, axes):
    """One legend for the figure, under the panels: it never covers a curve."""
    handles, labels = {}, []
    for ax in axes.flat:
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in handles:
                handles[label] = h
                labels.append(label)
    columns = 3 * axes.size  # about three entries fit under a panel
    fig.legend([handles[x] for x in labels], labels, loc="lower center", ncol=min(len(labels), columns), fontsize=7,
               frameon=False)


def drift_figure(grid, out, title: str = "", ylabel: str = "relative weight change") -> Path:
    """Weight change per layer over the epochs: a row-major grid of panels (None leaves a slot empty), each
    (title, {layer: [change after epoch 0 (0), 1, 2, ...]}, corrupted layers). A colour per layer; corrupted
    layers solid and thick, the others dashed and thin. Returns the PNG path."""
    plt = _pyplot()
    rows, cols = len(grid), max(len(row) for row in grid)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.3 * rows), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for ax, panel in zip(axes.flat, [p for row in grid for p in (*row, *[None] * (cols - len(row)))]):
        if panel is None:
            ax.axis("off")
            continue
        name, series, corrupted = panel
        for k, (layer, values) in enumerate(sorted(series.items())):
            hit = layer in corrupted
            ax.plot(range(len(values)), values, "-" if hit else "--", color=cmap(k / max(len(series) - 1, 1)),
                    linewidth=2.2 if hit else 0.9, marker="o", markersize=2.5, label=f"layer {layer}{' *' if hit else ''}")
        ax.set_xticks(range(max(len(v) for v in series.values())))  # whole epochs
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel, fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("epoch", fontsize=7)
    first = next(ax for ax in axes.flat if ax.lines)
    first.legend(fontsize=5.5, ncol=2)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, plt, out)


def layer_probe_figure(panels, out, title: str = "", majority: float | None = None) -> Path:
    """Probe accuracy per hidden state, one panel per (title, {name: [accuracy per hidden state]}, corrupted
    layers); corrupted layers shaded, a line per name (the first dashed grey: the reference). Returns the PNG path."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.6), squeeze=False, sharey=True)
    cmap = plt.get_cmap("tab10")
    for ax, (name, lines, corrupted) in zip(axes.flat, panels):
        for i in corrupted:
            ax.axvspan(i - 0.5, i + 0.5, color="0.92")
        for k, (label, values) in enumerate(lines.items()):
            style = {"color": "0.5", "linestyle": "--"} if k == 0 else {"color": cmap((k - 1) % cmap.N)}
            ax.plot(range(len(values)), values, marker="o", markersize=3, label=label, **style)
        if majority is not None:
            ax.axhline(majority, color="0.5", lw=0.8, ls=":", label="majority class")
        n = len(next(iter(lines.values())))
        ax.set_xticks(range(n), ["emb" if i == 0 else str(i) for i in range(n)])
        ax.set_xlabel("hidden state (shaded = corrupted)", fontsize=8)
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
    axes.flat[0].set_ylabel("probe test accuracy")
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 5), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.13, 1, 1))
    return _save(fig, plt, out)


def _save(fig, plt, out, dpi: int = 120) -> Path:
    """Write `fig` to the PNG `out` (its folder made if needed) and close it; returns the path, with .png added when
    `out` has no suffix (as matplotlib adds it)."""
    out = Path(out)
    out = out if out.suffix else out.with_name(out.name + ".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out
