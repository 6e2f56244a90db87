"""Pictures of a trace: what each attention head reads, and where corruption changes the hidden states.

    data = trace.run_trace(directory, text, pair, "bottom:2")[-1]     # trace.figure_data()'s arrays
    write_figures(data, "figs", title)   # attention_layer1.png .. attention_layerL.png, hidden.png
    write_png(data, "trace.png", title)  # the same figures stacked into one image

One figure per question. attention_layer<i>.png: in layer i, which tokens does each head read? One
heatmap per head (row = the query token, column = the key token it reads, darker = more weight), the
clean model above and the corrupted one below. hidden.png: how large is each token's vector after each
layer, and how much of its direction survives corruption (cosine 1 = unchanged, 0 = unrelated)?
Tokens of a pair's second sentence (token type 1) are drawn in orange.
matplotlib comes from the `plot` extra and is imported only when a figure is drawn.
"""
from pathlib import Path

from ..study.figures import _pyplot as pyplot
from ..study.figures import _save

SEGMENT_COLOURS = ("black", "tab:orange")  # token type 0, 1


def _ticks(ax, data, x: bool, y: bool):
    """Tokens as tick labels (second segment in orange), or no ticks."""
    T = len(data["tokens"])
    for on, set_ticks, labels in ((x, ax.set_xticks, lambda: ax.get_xticklabels()),
                                  (y, ax.set_yticks, lambda: ax.get_yticklabels())):
        if not on:
            set_ticks([])
            continue
        set_ticks(range(T), data["tokens"], fontsize=6, rotation=90 if set_ticks == ax.set_xticks else 0)
        for label, t in zip(labels(), data["types"]):
            label.set_color(SEGMENT_COLOURS[min(t, 1)])


def _run_label(name: str, layer: int, data) -> str:
    return f"{name}\n(corrupted layer)" if name != "clean" and layer + 1 in data["corrupted_layers"] else name


def draw_attention(fig, data, layer: int, title: str = ""):
    """Every head of `layer` (0-based) as a token x token heatmap: one row per run, one column per head."""
    runs = list(data["attention"])
    nh = data["attention"]["clean"].shape[1]
    axes = fig.subplots(len(runs), nh, squeeze=False)
    for r, name in enumerate(runs):
        for h in range(nh):
            ax = axes[r, h]
            image = ax.imshow(data["attention"][name][layer, h], cmap="Blues", vmin=0.0, vmax=1.0)
            _ticks(ax, data, x=r == len(runs) - 1, y=h == 0)
            if r == 0:
                ax.set_title(f"head {h + 1}", fontsize=7)
        axes[r, 0].set_ylabel(_run_label(name, layer, data), fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.6, label="attention weight")
    what = (f"clean above, {runs[1]} below: a head that spreads its weight evenly has lost its pattern"
            if len(runs) > 1 else "sharp spots = a head reading one token; the diagonal = each token reading itself")
    fig.suptitle(f"Layer {layer + 1}: which token does each head read? (row = query token, column = key token)\n"
                 f"{what}" + (f"\n{title}" if title else ""), fontsize=9)


def _layer_map(ax, values, data, label: str, cmap: str, vmin=None, vmax=None):
    """A (L+1, T) heatmap: one row per hidden state (embeddings, then each layer), one column per token."""
    image = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    _ticks(ax, data, x=True, y=False)
    ax.set_yticks(range(len(values)), ["emb"] + [str(i) for i in range(1, len(values))], fontsize=7)
    ax.set_ylabel("layer", fontsize=8)
    ax.set_title(label, fontsize=8)
    return image


def draw_hidden(fig, data, title: str = ""):
    """Hidden-state norm per token and layer (each run) and, with a corrupted run, cos(clean, corrupted)."""
    panels = [(f"|h| {name}", data["norm"][name], "viridis", None, None) for name in data["norm"]]
    if data["cos"] is not None:
        panels.append((f"cos({', '.join(data['norm'])})", data["cos"], "RdYlGn", -1.0, 1.0))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    hi = max(float(v.max()) for v in data["norm"].values())  # one colour scale for both norm panels
    for ax, (label, values, cmap, vmin, vmax) in zip(axes, panels):
        if vmin is None:
            vmin, vmax = 0.0, hi
        fig.colorbar(_layer_map(ax, values, data, label, cmap, vmin, vmax), ax=ax, shrink=0.8)
    question = (f"where does the {list(data['norm'])[1]} model's representation differ from the clean one's, "
                "and does it carry to the layers above? (cosine 1 = same direction as clean)" if data["cos"] is not None
                else "how large is each token's vector after each layer?")
    fig.suptitle(f"Hidden states per token and layer: {question}" + (f"\n{title}" if title else ""), fontsize=9)


def _attention_size(data) -> tuple[float, float]:
    nh = data["attention"]["clean"].shape[1]
    side = max(1.0, 0.09 * len(data["tokens"]))  # inches per heatmap: room for the token labels
    return 1.2 + nh * side, 1.3 + 0.85 * len(data["attention"]) * side + 0.06 * max(map(len, data["tokens"]))


def _hidden_size(data) -> tuple[float, float]:
    return 3.2 + 0.28 * len(data["tokens"]) * (len(data["norm"]) + (data["cos"] is not None)), 3.6


def write_figures(data, directory, title: str = "", dpi: int = 90, layers=None) -> list[Path]:
    """attention_layer<i>.png for every layer (or the 1-based `layers`) and hidden.png into `directory`;
    returns their paths."""
    plt = pyplot()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for layer in (range(len(data["attention"]["clean"])) if layers is None else [i - 1 for i in layers]):
        fig = plt.figure(figsize=_attention_size(data), layout="constrained")
        draw_attention(fig, data, layer, title)
        paths.append(_save(fig, plt, directory / f"attention_layer{layer + 1}.png", dpi))
    fig = plt.figure(figsize=_hidden_size(data), layout="constrained")
    draw_hidden(fig, data, title)
    paths.append(_save(fig, plt, directory / "hidden.png", dpi))
    return paths


def write_png(data, out, title: str = "", dpi: int = 80) -> Path:
    """Every layer's attention figure and the hidden-state figure, stacked into one PNG."""
    plt = pyplot()
    L = len(data["attention"]["clean"])
    (w, h), (_, h_hidden) = _attention_size(data), _hidden_size(data)
    fig = plt.figure(figsize=(w, L * h + h_hidden), layout="constrained")
    subfigs = fig.subfigures(L + 1, 1, height_ratios=[h] * L + [h_hidden])
    for layer in range(L):
        draw_attention(subfigs[layer], data, layer, title if layer == 0 else "")
    draw_hidden(subfigs[L], data)
    return _save(fig, plt, Path(out), dpi)
