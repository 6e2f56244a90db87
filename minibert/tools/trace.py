"""A guided trace: watch one sentence (or a sentence pair) flow through BERT, stage by stage.

    python -m minibert trace MODEL --text "The cat sat on the mat." [--pair "..."] [--corrupt bottom:2 --seed 0]
    python -m minibert trace MODEL --corrupt bottom:2 --figures DIR     # pictures (needs the `plot` extra)

Prints the tokens and their ids, how the three embeddings sum, and for every layer the tensor shapes
at each step of attention and feed-forward, the hidden-state norms, the attention entropy of each head
and the tokens [CLS] attends to most. With --corrupt the corrupted model runs beside the clean one and
each layer reports how similar the two representations still are, so one sees where it breaks.

With --figures DIR (or --png FILE, all of them stacked in one image) the same trace is drawn: every
head's attention as a token x token heatmap per layer, clean and corrupted, and the hidden-state norms
and cos(clean, corrupted) per token and layer (trace_figures.py draws them).

Everything is observed with forward hooks; model.py is not touched. The attention weights are
recomputed from the attention module's input with model.py's own attention_probs().
"""
import copy
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoint import load_pretrained, resolve
from ..cli import Parser, main_wrapper
from ..model import attention_probs
from ..tokenizer import pad_batch, tokenizer_from_dir
from ..training.rundir import check_writable

DEFAULT_TEXT = "The cat sat on the mat because it was warm."


def attention_weights(attn, x, bias=None) -> torch.Tensor:
    """softmax(QK^T / sqrt(hs)) of a SelfAttention module for its input x (B, T, H) -> (B, nh, T, T).

    The queries and keys are split into heads by the module itself (SelfAttention.heads)."""
    q, k, _ = attn.heads(x)  # (B, nh, T, hs) each
    return attention_probs(q, k, bias)


@torch.no_grad()
def trace(model, batch) -> dict:
    """Run model on a one-sentence batch and record what each stage did.

    Returns {"embeddings": {word, position, type, sum, normed: (T, H)}, "layers": [one dict per layer:
    shapes ({step: shape}), hidden (T, H), attention (nh, T, T)], "activation": name}.
    """
    ids = batch["input_ids"]
    emb = model.embeddings
    parts = {"word": emb.word_embeddings(ids)[0],
             "position": emb.position_embeddings(torch.arange(ids.shape[1]))}
    if emb.token_type_embeddings is not None:
        parts["type"] = emb.token_type_embeddings(batch["token_type_ids"])[0]
    parts["sum"] = sum(parts.values())

    layers = [{"shapes": {}} for _ in model.layers]
    handles = []

    def record(i, step):
        def hook(module, args, out):
            layers[i]["shapes"][step] = tuple(out.shape)
        return hook

    def on_attention(i):
        def hook(module, args, out):
            x, bias = args[:2]  # Layer calls attention(x, bias)
            B, T, H = x.shape
            w = attention_weights(module, x, bias)
            layers[i]["shapes"].update({"x": (B, T, H), "q,k,v": (B, w.shape[1], T, H // w.shape[1]),
                                        "weights": tuple(w.shape), "attention out": tuple(out.shape)})
            layers[i]["attention"] = w[0]
        return hook

    for i, layer in enumerate(model.layers):
        handles += [layer.attention.qkv.register_forward_hook(record(i, "qkv")),
                    layer.attention.register_forward_hook(on_attention(i)),
                    layer.ffn.up.register_forward_hook(record(i, "ffn up")),
                    layer.ffn.down.register_forward_hook(record(i, "ffn down"))]
    try:
        out = model(**batch, output_hidden_states=True)
    finally:
        for h in handles:
            h.remove()
    parts["normed"] = out.hidden_states[0][0]
    for i, layer in enumerate(layers):
        layer["hidden"] = out.hidden_states[i + 1][0]
    return {"embeddings": parts, "layers": layers, "activation": model.config.hidden_act}


def entropy(weights: torch.Tensor) -> torch.Tensor:
    """Mean over queries of each head's attention entropy in nats: (nh, T, T) -> (nh,)."""
    return -(weights * weights.clamp_min(1e-12).log()).sum(-1).mean(-1)


def _shapes(s: dict, activation: str) -> list[str]:
    def fmt(shape):
        return "(" + ", ".join(map(str, shape)) + ")"
    return [f"  attention     x {fmt(s['x'])} -> qkv {fmt(s['qkv'])} -> q,k,v {fmt(s['q,k,v'])} -> "
            f"softmax(QK^T/sqrt(d)) {fmt(s['weights'])} -> out {fmt(s['attention out'])} -> +x, LayerNorm",
            f"  feed-forward  {fmt(s['attention out'])} -> up {fmt(s['ffn up'])} -> {activation} "
            f"-> down {fmt(s['ffn down'])}"
            " -> +x, LayerNorm"]


def _norms(hidden, tokens) -> str:
    n = hidden.norm(dim=-1)
    lo, hi = int(n.argmin()), int(n.argmax())
    return f"mean {n.mean():6.2f} (min {n[lo]:.2f} {tokens[lo]}, max {n[hi]:.2f} {tokens[hi]})"


def _cls_top(weights, tokens, k: int = 3) -> str:
    w = weights[:, 0].mean(0)  # [CLS]'s row, averaged over heads: (T,)
    top = w.topk(min(k, len(tokens)))
    return "  ".join(f"{tokens[j]} {v:.2f}" for v, j in zip(top.values.tolist(), top.indices.tolist()))


def format_trace(tokens, ids, clean: dict, corrupted: dict | None = None, corrupted_layers=()) -> str:
    """The trace as text; with `corrupted`, each layer shows both runs and their cosine similarity."""
    lines = [f"tokens ({len(tokens)}): " + " ".join(f"{t}:{i}" for t, i in zip(tokens, ids)), "",
             "embeddings: word + position" + (" + type" if "type" in clean["embeddings"] else "")
             + " -> sum -> LayerNorm  (L2 norm of each token's vector)"]
    parts = [p for p in ("word", "position", "type", "sum", "normed") if p in clean["embeddings"]]
    lines.append(f"  {'token':<12}" + "".join(f"{p:>10}" for p in parts))
    norms = {p: clean["embeddings"][p].norm(dim=-1) for p in parts}
    for j, t in enumerate(tokens):
        lines.append(f"  {t:<12}" + "".join(f"{norms[p][j]:>10.2f}" for p in parts))
    T = len(tokens)
    for i, layer in enumerate(clean["layers"]):
        mark = "  <- corrupted" if (i + 1) in corrupted_layers else ""
        lines += ["", f"layer {i + 1}/{len(clean['layers'])}{mark}", *_shapes(layer["shapes"], clean["activation"])]
        runs = [("clean", layer)] + ([("corrupted", corrupted["layers"][i])] if corrupted else [])
        def label(name):
            return f"{name:<10}" if corrupted else ""
        for name, run in runs:
            lines.append(f"  |h|           {label(name)}{_norms(run['hidden'], tokens)}")
        for name, run in runs:
            lines.append(f"  entropy/head  {label(name)}" + " ".join(f"{e:.2f}" for e in entropy(run["attention"]).tolist()))
        for name, run in runs:
            lines.append(f"  [CLS] attends {label(name)}{_cls_top(run['attention'], tokens)}")
        if corrupted:
            cos = F.cosine_similarity(layer["hidden"], corrupted["layers"][i]["hidden"], dim=-1)
            lines.append(f"  cos(clean, corrupted) per token: mean {cos.mean():.3f}, [CLS] {cos[0]:.3f}")
    lines.append(f"\n(entropy in nats, mean over queries; uniform attention over {T} tokens = {math.log(T):.2f})")
    return "\n".join(lines)


def figure_data(tokens, type_ids, attention_mask, clean: dict, corrupted: dict | None = None,
                corrupted_layers=(), name: str = "corrupted") -> dict:
    """The arrays the figures plot, from one or two trace() results of a one-example batch.

    attention: {run: (L, nh, T, T)}, row = query, column = key; a real query's row sums to 1 over the real
    tokens, and padding is 0 both as key (the mask) and as query (nobody reads a padding position's row).
    norm: {run: (L+1, T)} L2 norm of each token's hidden state, embeddings first; cos: (L+1, T) cosine
    similarity of the clean and corrupted hidden states, or None without a corrupted run. `name` labels
    the second run (the tour shows a corrupted model after fine-tuning this way).
    """
    real = np.asarray(attention_mask, dtype=bool)  # (T,)
    runs = {"clean": clean} if corrupted is None else {"clean": clean, name: corrupted}
    hidden = {name: torch.stack([r["embeddings"]["normed"]] + [layer["hidden"] for layer in r["layers"]])
              for name, r in runs.items()}  # (L+1, T, H)
    attention = {}
    for name, r in runs.items():
        a = torch.stack([layer["attention"] for layer in r["layers"]]).numpy().copy()  # (L, nh, T, T)
        a[:, :, ~real, :] = 0.0  # a padding query's row is computed but never read
        attention[name] = a
    cos = None if corrupted is None else F.cosine_similarity(*hidden.values(), dim=-1).numpy()
    return {"tokens": list(tokens), "types": list(type_ids), "real": real, "attention": attention,
            "norm": {name: h.norm(dim=-1).numpy() for name, h in hidden.items()}, "cos": cos,
            "corrupted_layers": list(corrupted_layers)}


def run_trace(directory, text: str, pair: str | None = None, spec: str | None = None, seed: int = 0,
              pad_to: int | None = None):
    """Load the model in `directory`, trace one example (clean, and corrupted by `spec`) and return
    (tokens, ids, clean, corrupted, report, data) where data is figure_data()'s dict."""
    model, tok = load_pretrained(directory), tokenizer_from_dir(directory)
    positions = model.config.max_position_embeddings
    if pad_to is not None and pad_to > positions:
        raise ValueError(f"--pad-to {pad_to} is longer than the model's {positions} positions; use at most {positions}")
    ids, type_ids = tok.encode([text], None if pair is None else [pair], max_length=positions)
    if pad_to is not None and pad_to < len(ids[0]):
        raise ValueError(f"--pad-to {pad_to} is shorter than the input ({len(ids[0])} tokens); "
                         f"use at least {len(ids[0])}")
    batch = pad_batch(ids, type_ids, tok.pad_id, length=pad_to)
    if model.config.flavour == "distilbert":
        batch.pop("token_type_ids")  # DistilBERT has no token types; the tokenizer's are still plotted
    ids = batch["input_ids"][0].tolist()
    tokens = tok.convert_ids_to_tokens(ids)
    corrupted, report = None, None
    if spec:
        from ..corrupt import corrupt
        broken = copy.deepcopy(model)
        report = corrupt(broken, spec, seed=seed)
        corrupted = trace(broken, batch)
    clean = trace(model, batch)
    types = type_ids[0] + [0] * (len(ids) - len(type_ids[0]))  # padding counts as segment A
    data = figure_data(tokens, types, batch["attention_mask"][0], clean, corrupted, report.layers if report else ())
    return tokens, ids, clean, corrupted, report, data


@main_wrapper
def main(argv=None) -> int:
    parser = Parser(prog="python -m minibert trace",
                    description="Walk one sentence (or pair) through BERT; print every stage, or draw it.")
    parser.add_argument("model", help="preset (base|large|distil), checkpoint directory or hub id")
    parser.add_argument("--text", default=DEFAULT_TEXT, help="the sentence to trace")
    parser.add_argument("--pair", default=None, help="a second sentence: trace the pair (token type 1)")
    parser.add_argument("--corrupt", default=None, metavar="SPEC",
                        help="also run a corrupted copy (e.g. bottom:2, top:0.5) and compare layer by layer")
    parser.add_argument("--seed", type=int, default=0, help="seed of the corruption")
    parser.add_argument("--pad-to", type=int, default=None, metavar="N",
                        help="right-pad the input to N tokens, to see that padding gets no attention")
    parser.add_argument("--figures", type=Path, default=None, metavar="DIR",
                        help="write one PNG per question into DIR: attention_layer<i>.png for every layer, "
                             "hidden.png (needs matplotlib: pip install 'minibert[plot]')")
    parser.add_argument("--png", type=Path, default=None, metavar="FILE",
                        help="write all those figures stacked into one PNG (needs matplotlib)")
    args = parser.parse_args(argv)
    if args.figures:
        check_writable(args.figures, "--figures")
    if args.png and args.png.is_dir():
        raise ValueError(f"--png {args.png} is a folder; give a file name such as {args.png / 'trace.png'}")
    if args.png:
        check_writable(args.png.parent, "--png")
    if args.figures or args.png:
        from . import trace_figures  # fails here, in one line, when matplotlib is missing
        trace_figures.pyplot()
    tokens, ids, clean, corrupted, report, data = run_trace(resolve(args.model), args.text, args.pair,
                                                            args.corrupt, args.seed, args.pad_to)
    if report is not None:
        print(f"{report}\n")
    print(format_trace(tokens, ids, clean, corrupted, report.layers if report else ()))
    title = f"{args.model}" + (f", corrupted {args.corrupt} (seed {args.seed})" if args.corrupt else "")
    if args.figures:
        for path in trace_figures.write_figures(data, args.figures, title):
            print(f"wrote {path}")
    if args.png:
        print(f"wrote {trace_figures.write_png(data, args.png, title)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
