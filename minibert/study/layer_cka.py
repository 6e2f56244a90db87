"""Which layers of a corrupted model grow back: layer-wise CKA of a corrupted run against the clean run of its cell.

    python -m minibert cka CLEAN_RUN CORRUPTED_RUN       # a table: per layer, CKA before and after fine-tuning
    healing(clean_run, corrupted_run)                    # the same as a dict

The analysis compares two runs of the same cell (same model, data, seed) that differ only in their
corruption: a clean run and a corrupted one. Per hidden state (0 = embeddings, then each layer), the
representation of each test example is its hidden states mean-pooled over real tokens ([CLS] excluded, as
heads.mean_pool does: [CLS] carries little before fine-tuning, and at layer 0 it is the same vector for
every example). "before" is the corrupted pre-trained encoder (the run's spec and seed applied to the loaded
checkpoint, exactly as the run did) against the clean pre-trained encoder; "after" is the corrupted run's
fine-tuned encoder against the clean run's fine-tuned encoder, which needs both runs saved with --save-model.
Every result also carries a floor: the CKA of the clean features against the corrupted ones with their rows
shuffled (no example matched to itself), what "unrelated" scores here. The paper measures healing by F1 only;
this asks where in the network it happens. The CKA formula is minibert/training/cka.py; a grid report's
healing section (healing.py) runs this over every pair of its cells.
"""
import json
import statistics
import sys
from pathlib import Path

from ..checkpoint import load_classifier, load_pretrained, resolve
from ..cli import Parser, main_wrapper
from ..config import BertConfig
from ..corrupt import corrupt, parse_spec
from ..data.datasets import load_dataset
from ..data.encoding import encode
from ..tokenizer import load_tokenizer
from ..training import rundir
from ..training.cka import layer_features, linear_cka, shuffled_floor

# Run arguments that must agree for two runs to be the same cell up to corruption.
SAME_CELL = ("model", "dataset", "data_dir", "split", "seed", "limit", "test_limit", "max_length", "pooling", "mode")


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
    bad, results = _same_cell(clean_dir, corrupted_dir)
    cache = {} if cache is None else cache
    enc, pad_id, data_key = _test_set(bad, n, cache)

    def feats(key, make_encoder):  # every encoder's features once per test set
        if (key, data_key) not in cache:
            cache[key, data_key] = layer_features(make_encoder(), enc, pad_id, batch_size, device)
        return cache[key, data_key]

    def corrupted():
        encoder = load_pretrained(bad["checkpoint"])
        corrupt(encoder, bad["corrupt"], seed=bad["seed"])
        return encoder

    clean_pre = feats("clean pre-trained", lambda: load_pretrained(bad["checkpoint"]))
    before, floor = _compare(clean_pre, feats(("pre-trained", bad["corrupt"]), corrupted), bad["seed"], debiased)
    after = floor_after = None
    clean_model, bad_model = (rundir.saved_model(d, r) for d, r in zip((clean_dir, corrupted_dir), results))
    if clean_model is not None and bad_model is not None:
        clean_ft = feats(str(clean_model), lambda: load_classifier(clean_model).encoder)
        bad_ft = feats(str(bad_model), lambda: load_classifier(bad_model).encoder)
        after, floor_after = _compare(clean_ft, bad_ft, bad["seed"], debiased)
    layers = parse_spec(bad["corrupt"], len(before) - 1).layers
    return {"layers": list(range(len(before))), "before": before, "after": after, "floor": floor,
            "floor_after": floor_after, "estimator": "debiased" if debiased else "biased", "n": len(enc),
            "corrupt": bad["corrupt"], "corrupted_layers": layers}


def _same_cell(clean_dir, corrupted_dir) -> tuple[dict, tuple[dict, dict]]:
    """The corrupted run's arguments and both runs' results; refuses two runs that are not one cell up to corruption."""
    clean, clean_result = read_run(clean_dir)
    bad, bad_result = read_run(corrupted_dir)
    differ = [k for k in SAME_CELL if clean.get(k) != bad.get(k)]
    if differ:
        raise ValueError(f"{clean_dir} and {corrupted_dir} are not the same cell: they differ in {', '.join(differ)}")
    for run_dir, result in ((clean_dir, clean_result), (corrupted_dir, bad_result)):
        if (model_dir := rundir.saved_model(run_dir, result)) is not None:  # before any forward pass
            check_claim(run_dir, model_dir, bad["checkpoint"])
    return bad, (clean_result, bad_result)


# what makes two encoders the same network, layer for layer
SHAPE = ("flavour", "num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads", "vocab_size")


def check_claim(run_dir, model_dir, checkpoint) -> None:
    """Refuse a run whose saved model is not shaped like the checkpoint its config.json names (a hand-edited
    config.json): the before and after columns would compare different networks, layer by layer."""
    saved = BertConfig.from_json(Path(model_dir) / "config.json")
    claimed = BertConfig.from_json(resolve(checkpoint) / "config.json")
    differ = [f"{k} {getattr(saved, k)} vs {getattr(claimed, k)}" for k in SHAPE if getattr(saved, k) != getattr(claimed, k)]
    if differ:
        raise ValueError(f"{model_dir} is not shaped like {checkpoint}, the model {Path(run_dir) / rundir.CONFIG} "
                         f"names ({'; '.join(differ)}): that config.json does not describe this run (edited?); restore "
                         "it, or train the run again")


def _test_set(args: dict, n: int, cache: dict):
    """(the first n examples of the run's test set tokenised, the pad id, the key they are cached under in `cache`)."""
    data_key = tuple(args.get(k) for k in SAME_CELL) + (n,)
    if ("data", data_key) not in cache:
        # the run's own test set: --test-limit, when given, sets it instead of --limit (the data-budget axis)
        data = load_dataset(args["dataset"], args["data_dir"], args["split"], args["seed"], args["limit"],
                            args.get("test_limit"))
        tokenizer = load_tokenizer(args["checkpoint"])
        test = data.test.take(range(min(n, len(data.test))))
        cache["data", data_key] = (encode(test, tokenizer, args["max_length"]), tokenizer.pad_id)
    return (*cache["data", data_key], data_key)


def _compare(clean_feats, bad_feats, seed: int, debiased: bool) -> tuple[list[float], list[float]]:
    """Per hidden state: the CKA of the clean features with the corrupted ones, and its shuffled-rows floor."""
    pairs = list(zip(clean_feats, bad_feats))
    return ([linear_cka(a, b, debiased) for a, b in pairs], [shuffled_floor(a, b, seed, debiased) for a, b in pairs])


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
