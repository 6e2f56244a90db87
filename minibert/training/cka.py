"""Linear CKA and the layer-wise healing analysis: which layers of a corrupted model grow back.

    linear_cka(x, y)                          # similarity of two (n, d) representations; debiased by default
    healing(clean_run, corrupted_run)         # per layer: CKA with the clean model, before and after fine-tuning

Linear CKA (Kornblith et al. 2019, "Similarity of Neural Network Representations Revisited") compares
representations through their (n, n) Gram matrices K = XX^T and L = YY^T of the same n examples:

    CKA(X, Y) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))

It is 1 for representations that differ by an orthogonal transform and an isotropic scale, and it
compares layers of different widths. With the plain (biased) HSIC estimator, tr(KHLH)/(n-1)^2, the
value for unrelated representations is far from 0 when n is not much larger than the width: two
independent Gaussian feature sets of n=256, d=768 score about 0.75. The default is therefore the
debiased estimator (Nguyen, Raghu & Kornblith 2021, "Do Wide and Deep Networks Learn the Same Things?",
using the unbiased HSIC of Song et al. 2012), whose expectation for independent features is 0; it can be
slightly negative. Every healing result also carries a floor: the CKA of the clean features against the
corrupted ones with their rows shuffled (no example matched to itself), what "unrelated" scores here.
The paper measures healing by F1 only; this asks where in the network it happens.

The healing analysis compares two runs of the same cell (same model, data, seed) that differ only in
their corruption: a clean run and a corrupted one. Per hidden state (0 = embeddings, then each layer),
the representation of each test example is its hidden states mean-pooled over real tokens ([CLS]
excluded, as heads.mean_pool does: [CLS] carries little before fine-tuning, and at layer 0 it is the
same vector for every example). "before" is the corrupted pre-trained encoder (the run's spec and seed
applied to the loaded checkpoint, exactly as the run did) against the clean pre-trained encoder;
"after" is the corrupted run's fine-tuned encoder against the clean run's fine-tuned encoder, which
needs both runs saved with --save-model.
"""
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import load_classifier, load_pretrained
from ..cli import Parser, main_wrapper
from ..corrupt import corrupt, parse_spec
from ..data.datasets import load_dataset
from ..data.encoding import batch_indices, batches, encode
from ..heads import mean_pool
from ..tokenizer import load_tokenizer
from . import rundir

# Run arguments that must agree for two runs to be the same cell up to corruption.
SAME_CELL = ("model", "dataset", "data_dir", "split", "seed", "limit", "test_limit", "max_length", "pooling", "mode")


def _hsic_unbiased(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """Song et al. (2012)'s unbiased HSIC estimator of two (n, n) Gram matrices, up to the common factor
    1/(n(n-3)), which cancels in CKA: tr(K~L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1,
    where K~, L~ are K, L with their diagonals set to 0."""
    n = k.shape[0]
    k, l = k - torch.diag(torch.diag(k)), l - torch.diag(torch.diag(l))
    k_sum, l_sum = k.sum(0), l.sum(0)  # (n,): 1'K~ and 1'L~ (the matrices are symmetric)
    return ((k * l).sum() + k_sum.sum() * l_sum.sum() / ((n - 1) * (n - 2)) - 2 / (n - 2) * (k_sum @ l_sum))


def linear_cka(x, y, debiased: bool = True) -> float:
    """Linear CKA of two representations of the same n examples: x (n, d1), y (n, d2).

    debiased=True (default): the unbiased-HSIC estimator, 0 in expectation for unrelated features at any n
    (needs n >= 4; can be slightly below 0). debiased=False: Kornblith et al.'s original, in [0, 1], which
    for unrelated features stays well above 0 unless n is much larger than the width. Computed in float64.
    """
    x, y = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"linear_cka needs (n, d1) and (n, d2) with the same n, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] < (4 if debiased else 2):
        raise ValueError(f"linear_cka needs at least {4 if debiased else 2} examples")
    x, y = x - x.mean(0), y - y.mean(0)
    if not debiased:  # with centred columns: ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F), cheap (d, d) products
        cross = (y.T @ x).square().sum()
        norm = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    else:
        k, l = x @ x.T, y @ y.T  # (n, n) Gram matrices
        cross = _hsic_unbiased(k, l)
        norm = (_hsic_unbiased(k, k) * _hsic_unbiased(l, l)).clamp(min=0).sqrt()
    if norm == 0:
        raise ValueError("linear_cka: a representation is constant over the examples")
    return float(cross / norm)


def shuffled_floor(x, y, seed: int = 0, debiased: bool = True) -> float:
    """CKA of x against y with y's rows shuffled (seeded): the score of the same features with no example
    matched to itself, i.e. what 'unrelated' reads as for this estimator, n and these feature distributions."""
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    return linear_cka(x, torch.as_tensor(y)[perm], debiased)


@torch.no_grad()
def layer_features(encoder, enc, pad_id: int, batch_size: int = 32, device="cpu",
                   pooling: str = "mean") -> list[torch.Tensor]:
    """Pooled hidden states of every example of `enc` (an Encoded), one (n, H) float64 tensor per hidden
    state (L+1: embeddings, then each layer), row i for example i. pooling="mean": the mean over real tokens,
    [CLS] excluded (heads.mean_pool); "cls": the hidden state at [CLS] (no pooler: that exists for the last layer only)."""
    if pooling not in ("mean", "cls"):
        raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
    encoder.eval().to(device)
    per_layer = []
    for batch in batches(enc, batch_size, shuffle=False, pad_id=pad_id):
        b = {k: v.to(device) for k, v in batch.items() if k != "labels"}
        out = encoder(b["input_ids"], b["attention_mask"], b["token_type_ids"], output_hidden_states=True)
        pool = (lambda h: mean_pool(h.float(), b["attention_mask"])) if pooling == "mean" else (lambda h: h[:, 0].float())
        per_layer.append([pool(h).double().cpu() for h in out.hidden_states])
    # batches() runs longest first; put the rows back in the examples' order
    order = torch.from_numpy(np.concatenate(batch_indices(enc.lengths, batch_size, shuffle=False)))
    unsorted = []
    for rows in map(torch.cat, zip(*per_layer)):
        layer = torch.empty_like(rows)
        layer[order] = rows
        unsorted.append(layer)
    return unsorted


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


def healing(clean_dir, corrupted_dir, n: int = 2000, batch_size: int = 32, device="cpu", cache: dict | None = None,
            debiased: bool = True) -> dict:
    """Per-layer linear CKA between a corrupted run and the clean run of the same cell, on the first n test
    examples (all of them when the test set is smaller).

    Returns {"layers": [0..L], "before": [...], "after": [...] or None when a fine-tuned model was not
    saved, "floor": [...] (clean vs row-shuffled corrupted features, before fine-tuning, shuffled with the
    run's seed), "floor_after": [...] or None (the same after fine-tuning), "estimator": "debiased" or
    "biased", "n": examples used, "corrupt": the spec, "corrupted_layers": 1-based layers it touched}.
    Pass the same `cache` dict to several calls that share a clean run: its features are computed once.
    """
    clean, clean_result = read_run(clean_dir)
    bad, bad_result = read_run(corrupted_dir)
    differ = [k for k in SAME_CELL if clean.get(k) != bad.get(k)]
    if differ:
        raise ValueError(f"{clean_dir} and {corrupted_dir} are not the same cell: they differ in {', '.join(differ)}")
    cache = {} if cache is None else cache
    data_key = tuple(bad.get(k) for k in SAME_CELL) + (n,)
    if ("data", data_key) not in cache:
        # the run's own test set: --test-limit, when given, sets it instead of --limit (the data-budget axis)
        data = load_dataset(bad["dataset"], bad["data_dir"], bad["split"], bad["seed"], bad["limit"],
                            bad.get("test_limit"))
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

    def compare(clean_feats, bad_feats):
        pairs = list(zip(clean_feats, bad_feats))
        return ([linear_cka(a, b, debiased) for a, b in pairs],
                [shuffled_floor(a, b, bad["seed"], debiased) for a, b in pairs])

    clean_pre = feats("clean pre-trained", lambda: load_pretrained(bad["checkpoint"]))
    before, floor = compare(clean_pre, feats(("pre-trained", bad["corrupt"]), corrupted))
    after = floor_after = None
    clean_model, bad_model = saved_model(clean_dir, clean_result), saved_model(corrupted_dir, bad_result)
    if clean_model is not None and bad_model is not None:
        clean_ft = feats(str(clean_model), lambda: load_classifier(clean_model).encoder)
        bad_ft = feats(str(bad_model), lambda: load_classifier(bad_model).encoder)
        after, floor_after = compare(clean_ft, bad_ft)
    layers = parse_spec(bad["corrupt"], len(before) - 1).layers
    return {"layers": list(range(len(before))), "before": before, "after": after, "floor": floor,
            "floor_after": floor_after, "estimator": "debiased" if debiased else "biased", "n": len(enc),
            "corrupt": bad["corrupt"], "corrupted_layers": layers}


def layer_name(i: int) -> str:
    """A hidden state's name in tables: emb (the embeddings), then 1..L."""
    return "emb" if i == 0 else str(i)


def _mean(values) -> float:
    return statistics.fmean(values) if values else float("nan")


def healed(result: dict, reference: dict | None = None) -> str:
    """What healed, in one line: the mean CKA before -> after fine-tuning over the corrupted layers, over the
    others, and at the last layer; with `reference` (the model with every layer re-initialised, fine-tuned the
    same way), its after value over the same layers. Needs the after column."""
    before, after, hit = result["before"], result["after"], result["corrupted_layers"]
    rest = [i for i in result["layers"][1:] if i not in hit]

    def ref(layers):
        return "" if reference is None else f" (all re-initialised: {_mean([reference['after'][i] for i in layers]):.2f})"
    parts = [f"re-initialised layers {hit[0]}-{hit[-1]}: CKA {_mean([before[i] for i in hit]):.2f} -> "
             f"{_mean([after[i] for i in hit]):.2f}{ref(hit)}"] if hit else []
    if rest:
        parts.append(f"the other layers: {_mean([before[i] for i in rest]):.2f} -> {_mean([after[i] for i in rest]):.2f}"
                     f"{ref(rest)}")
    return "; ".join(parts + [f"last layer {before[-1]:.2f} -> {after[-1]:.2f}"])


def format_healing(result: dict) -> str:
    """A markdown table: layer, corrupted?, CKA before, CKA after, change, and the shuffled-rows floors; under it,
    with the after column, what healed (healed(): the line the grid report gives each setting)."""
    estimator = f"{result['estimator']} " if "estimator" in result else ""
    lines = [f"{estimator}linear CKA with the clean model ({result['corrupt']}, n={result['n']}, mean-pooled "
             "hidden states); floor = the same against the corrupted features with their rows shuffled "
             "(what unrelated examples score)",
             "", "| layer | corrupted | before | after | change | floor before | floor after |",
             "|---|---|---|---|---|---|---|"]
    none = [None] * len(result["layers"])
    for i in result["layers"]:
        before, after = result["before"][i], (result["after"] or none)[i]
        floors = [(result.get(key) or none)[i] for key in ("floor", "floor_after")]
        mark = "yes" if i in result["corrupted_layers"] else ""
        # + 0.0: no "-0.000"
        tail = "| - | - |" if after is None else f"| {after:.3f} | {round(after - before, 3) + 0.0:+.3f} |"
        tail += "".join(" - |" if f is None else f" {f:.3f} |" for f in floors)
        lines.append(f"| {layer_name(i)} | {mark} | {before:.3f} {tail}")
    if result["after"] is not None:
        lines += ["", f"Healed: {healed(result)}"]
    return "\n".join(lines)


@main_wrapper
def main(argv=None) -> int:
    p = Parser(prog="python -m minibert cka",
               description="Layer-wise linear CKA of a corrupted run against the clean run of the same cell")
    p.add_argument("clean", help="run directory of the clean (corrupt none) run")
    p.add_argument("corrupted", help="run directory of the corrupted run of the same cell")
    p.add_argument("--n", type=int, default=2000, help="test examples to compare on (default 2000; fewer if the "
                                                       "test set is smaller)")
    p.add_argument("--biased", action="store_true", help="use Kornblith et al.'s original (biased) estimator "
                                                         "instead of the debiased one")
    p.add_argument("--batch-size", type=int, default=32, help="examples per forward pass")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    args = p.parse_args(argv)
    if args.n < 4:
        p.error(f"--n must be at least 4, got {args.n}")
    result = healing(args.clean, args.corrupted, args.n, args.batch_size, args.device, debiased=not args.biased)
    print(json.dumps(result, indent=2) if args.json else format_healing(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
