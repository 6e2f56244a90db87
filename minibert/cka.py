"""Linear CKA and the layer-wise healing analysis: which layers of a corrupted model grow back.

    linear_cka(x, y)                          # similarity of two (n, d) representations, in [0, 1]
    healing(clean_run, corrupted_run)         # per layer: CKA with the clean model, before and after fine-tuning

Linear CKA (Kornblith et al. 2019, "Similarity of Neural Network Representations Revisited", eq. 5):
centre the columns of X (n, d1) and Y (n, d2) over the n examples, then

    CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)

It is 1 for representations that differ by an orthogonal transform and an isotropic scale, and near 0
for unrelated ones, and it compares layers of different widths. The paper measures healing by F1 only;
this asks where in the network it happens.

The healing analysis compares two runs of the same cell (same model, data, seed) that differ only in
their corruption: a clean run and a corrupted one. Per hidden state (0 = embeddings, then each layer),
the representation of each test example is its hidden states mean-pooled over real tokens ([CLS]
excluded, as heads.mean_pool does: [CLS] carries little before fine-tuning, and at layer 0 it is the
same vector for every example). "before" is the corrupted pre-trained encoder (the run's spec and seed
applied to the loaded checkpoint, exactly as the run did) against the clean pre-trained encoder;
"after" is the corrupted run's fine-tuned encoder against the clean run's fine-tuned encoder, which
needs both runs saved with --save-model.
"""
import argparse
import json
import sys
from pathlib import Path

import torch

from . import rundir
from .checkpoint import load_classifier, load_pretrained
from .corrupt import corrupt, parse_spec
from .data import batches, encode
from .datasets import load_dataset
from .heads import mean_pool
from .tokenizer import load_tokenizer

# Run arguments that must agree for two runs to be the same cell up to corruption.
SAME_CELL = ("model", "dataset", "data_dir", "split", "seed", "limit", "max_length", "pooling", "mode")


def linear_cka(x, y) -> float:
    """Linear CKA of two representations of the same n examples: x (n, d1), y (n, d2). In [0, 1].

    Computed in float64 with the (d, d) cross-products, which is cheap for n in the hundreds to thousands.
    """
    x, y = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"linear_cka needs (n, d1) and (n, d2) with the same n, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] < 2:
        raise ValueError("linear_cka needs at least 2 examples")
    x, y = x - x.mean(0), y - y.mean(0)
    cross = (y.T @ x).square().sum()
    norm = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    if norm == 0:
        raise ValueError("linear_cka: a representation is constant over the examples")
    return float(cross / norm)


@torch.no_grad()
def layer_features(encoder, enc, pad_id: int, batch_size: int = 32, device="cpu") -> list[torch.Tensor]:
    """Mean-pooled hidden states of every example of `enc` (an Encoded), one (n, H) float64 tensor per
    hidden state (L+1: embeddings, then each layer), rows in a fixed order shared by every encoder."""
    encoder.eval().to(device)
    per_layer = []
    for batch in batches(enc, batch_size, shuffle=False, pad_id=pad_id):
        b = {k: v.to(device) for k, v in batch.items() if k != "labels"}
        out = encoder(b["input_ids"], b["attention_mask"], b["token_type_ids"], output_hidden_states=True)
        per_layer.append([mean_pool(h.float(), b["attention_mask"]).double().cpu() for h in out.hidden_states])
    return [torch.cat(layer) for layer in zip(*per_layer)]


def read_run(run_dir) -> tuple[dict, dict]:
    """(args from config.json, result.json) of a finished run directory."""
    run_dir = Path(run_dir)
    config = rundir.read_config(run_dir)
    if config is None:
        raise FileNotFoundError(f"{run_dir / rundir.CONFIG} not found or damaged: is {run_dir} a finished run?")
    result = rundir.read_result(run_dir)
    if result is None:
        raise ValueError(f"{run_dir} is not finished (no {rundir.RESULT} with status done); rerun it with --resume")
    return {**config["args"], "checkpoint": config["checkpoint"], "max_length": config["max_length"]}, result


saved_model = rundir.saved_model  # the best epoch's saved classifier of a run, if saved


def healing(clean_dir, corrupted_dir, n: int = 256, batch_size: int = 32, device="cpu", cache: dict | None = None) -> dict:
    """Per-layer linear CKA between a corrupted run and the clean run of the same cell.

    Returns {"layers": [0..L], "before": [...], "after": [...] or None when a fine-tuned model was not
    saved, "n": examples used, "corrupt": the spec, "corrupted_layers": 1-based layers it touched}.
    Pass the same `cache` dict to several calls that share a clean run: its features are computed once.
    """
    clean, clean_result = read_run(clean_dir)
    bad, bad_result = read_run(corrupted_dir)
    differ = [k for k in SAME_CELL if clean.get(k) != bad.get(k)]
    if differ:
        raise ValueError(f"{clean_dir} and {corrupted_dir} are not the same cell: they differ in {', '.join(differ)}")
    cache = {} if cache is None else cache
    data_key = tuple(bad[k] for k in SAME_CELL) + (n,)
    if ("data", data_key) not in cache:
        data = load_dataset(bad["dataset"], bad["data_dir"], bad["split"], bad["seed"], bad["limit"])
        tokenizer = load_tokenizer(bad["checkpoint"])
        test = data.test.take(range(min(n, len(data.test))))
        cache["data", data_key] = (encode(test, tokenizer, bad["max_length"]), tokenizer.pad_id)
    enc, pad_id = cache["data", data_key]

    def feats(key, make_encoder):
        if (key, data_key) not in cache:
            cache[key, data_key] = layer_features(make_encoder(), enc, pad_id, batch_size, device)
        return cache[key, data_key]

    def corrupted():
        encoder = load_pretrained(bad["checkpoint"])
        corrupt(encoder, bad["corrupt"], seed=bad["seed"])
        return encoder

    clean_pre = feats("clean pre-trained", lambda: load_pretrained(bad["checkpoint"]))
    before = [linear_cka(a, b) for a, b in zip(clean_pre, feats(("pre-trained", bad["corrupt"]), corrupted))]
    after = None
    clean_model, bad_model = saved_model(clean_dir, clean_result), saved_model(corrupted_dir, bad_result)
    if clean_model is not None and bad_model is not None:
        clean_ft = feats(str(clean_model), lambda: load_classifier(clean_model).encoder)
        bad_ft = feats(str(bad_model), lambda: load_classifier(bad_model).encoder)
        after = [linear_cka(a, b) for a, b in zip(clean_ft, bad_ft)]
    layers = parse_spec(bad["corrupt"], len(before) - 1).layers
    return {"layers": list(range(len(before))), "before": before, "after": after, "n": len(enc),
            "corrupt": bad["corrupt"], "corrupted_layers": layers}


def format_healing(result: dict) -> str:
    """A markdown table: layer, corrupted?, CKA before, CKA after, change."""
    lines = [f"linear CKA with the clean model ({result['corrupt']}, n={result['n']}, mean-pooled hidden states)",
             "", "| layer | corrupted | before | after | change |", "|---|---|---|---|---|"]
    for i in result["layers"]:
        before, after = result["before"][i], (result["after"] or [None] * len(result["layers"]))[i]
        name = "emb" if i == 0 else str(i)
        mark = "yes" if i in result["corrupted_layers"] else ""
        tail = "| - | - |" if after is None else f"| {after:.3f} | {after - before:+.3f} |"
        lines.append(f"| {name} | {mark} | {before:.3f} {tail}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m minibert.cka",
                                description="Layer-wise linear CKA of a corrupted run against the clean run of the same cell")
    p.add_argument("clean", help="run directory of the clean (corrupt none) run")
    p.add_argument("corrupted", help="run directory of the corrupted run of the same cell")
    p.add_argument("--n", type=int, default=256, help="test examples to compare on (default 256)")
    p.add_argument("--batch-size", type=int, default=32, help="examples per forward pass")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    args = p.parse_args(argv)
    try:
        result = healing(args.clean, args.corrupted, args.n, args.batch_size, args.device)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else format_healing(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
