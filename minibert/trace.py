"""A guided trace: watch one sentence flow through BERT, stage by stage.

    python -m minibert.trace MODEL --text "The cat sat on the mat." [--corrupt bottom:2 --seed 0]

Prints the tokens and their ids, how the three embeddings sum, and for every layer the tensor shapes
at each step of attention and feed-forward, the hidden-state norms, the attention entropy of each head
and the tokens [CLS] attends to most. With --corrupt the corrupted model runs beside the clean one and
each layer reports how similar the two representations still are, so one sees where it breaks.

Everything is observed with forward hooks; model.py is not touched. The attention weights are
recomputed from the attention module's input and its qkv weights, exactly as the explicit path does.
"""
import argparse
import copy
import math
import sys

import torch
import torch.nn.functional as F

from .checkpoint import load_pretrained, resolve
from .tokenizer import tokenizer_from_dir

DEFAULT_TEXT = "The cat sat on the mat because it was warm."


def attention_weights(attn, x, mask=None) -> torch.Tensor:
    """softmax(QK^T / sqrt(d)) of a SelfAttention module for its input x (B, T, H) -> (B, nh, T, T)."""
    B, T, H = x.shape
    q, k, _ = attn.qkv(x).split(H, dim=-1)
    q = q.view(B, T, attn.n_head, attn.head_dim).transpose(1, 2)  # (B, nh, T, hs)
    k = k.view(B, T, attn.n_head, attn.head_dim).transpose(1, 2)  # (B, nh, T, hs)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(attn.head_dim)  # (B, nh, T, T)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1)


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
            x, mask = args[:2]  # Layer calls attention(x, mask, ...); further arguments are off by default
            B, T, H = x.shape
            w = attention_weights(module, x, mask)
            layers[i]["shapes"].update({"x": (B, T, H), "q,k,v": (B, module.n_head, T, module.head_dim),
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
    fmt = lambda shape: "(" + ", ".join(map(str, shape)) + ")"
    return [f"  attention     x {fmt(s['x'])} -> qkv {fmt(s['qkv'])} -> q,k,v {fmt(s['q,k,v'])} -> "
            f"softmax(QK^T/sqrt(d)) {fmt(s['weights'])} -> out {fmt(s['attention out'])} -> +x, LayerNorm",
            f"  feed-forward  {fmt(s['attention out'])} -> up {fmt(s['ffn up'])} -> {activation} -> down {fmt(s['ffn down'])}"
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
        label = lambda name: f"{name:<10}" if corrupted else ""
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minibert.trace", exit_on_error=False,
                                     description="Walk one sentence through BERT and print every stage.")
    parser.add_argument("model", help="preset (base|large|distil), checkpoint directory or hub id")
    parser.add_argument("--text", default=DEFAULT_TEXT, help="the sentence to trace")
    parser.add_argument("--corrupt", default=None, metavar="SPEC",
                        help="also run a corrupted copy (e.g. bottom:2, top:0.5) and compare layer by layer")
    parser.add_argument("--seed", type=int, default=0, help="seed of the corruption")
    try:
        args = parser.parse_args(argv)
        directory = resolve(args.model)
        model, tok = load_pretrained(directory), tokenizer_from_dir(directory)
        batch = tok([args.text])
        ids = batch["input_ids"][0].tolist()
        tokens = tok.convert_ids_to_tokens(ids)
        corrupted, report = None, None
        if args.corrupt:
            from .corrupt import corrupt
            broken = copy.deepcopy(model)
            report = corrupt(broken, args.corrupt, seed=args.seed)
            corrupted = trace(broken, batch)
        clean = trace(model, batch)
    except (ValueError, FileNotFoundError, argparse.ArgumentError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if report is not None:
        print(f"{report}\n")
    print(format_trace(tokens, ids, clean, corrupted, report.layers if report else ()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
