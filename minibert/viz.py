"""Figures: t-SNE panels of pooled features (the paper's Figure 1) and layer-wise CKA curves (healing).

    tsne_figure([("0%", feats, labels), ...], label_names, "fig1.png")   # one panel per model, one PNG
    cka_figure({"bottom50": result, ...}, "healing.png", title)           # CKA with the clean model per layer

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
    solid after. `results` maps a setting name to a minibert.cka.healing() result. Returns the PNG path."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    cmap = plt.get_cmap("tab10")
    for k, (name, r) in enumerate(results.items()):
        color = cmap(k % cmap.N)
        ax.plot(r["layers"], r["before"], "--o", color=color, markersize=3, label=f"{name} before")
        if r["after"] is not None:
            ax.plot(r["layers"], r["after"], "-o", color=color, markersize=3, label=f"{name} after")
    layers = next(iter(results.values()))["layers"]
    ax.set_xticks(layers, ["emb" if i == 0 else str(i) for i in layers])
    ax.set_xlabel("hidden state (embeddings, then layer)")
    ax.set_ylabel("linear CKA with the clean model")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, plt, out)


def _save(fig, plt, out) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
