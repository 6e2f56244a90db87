"""Parity report: does minibert compute what Hugging Face `transformers` computes, on your checkpoint?

    python -m minibert parity MODEL [--text "..." --pair "..."] [--tol 1e-5] [--dtype fp32|bf16] [--json]

Both sides read the same files. The comparison runs a built-in set of real sentences and sentence
pairs (plus your text) as padded batches, feeds the *same* token ids to both models, and reports the
max |diff| of the tokenizer output, of every hidden state (embeddings, then each layer), of the pooler
and of the logits of a classification head. The first row above tolerance names where the two
implementations part ways. Exit status: 0 pass, 1 fail, 2 error.

Which head: a classifier saved by `train.py --save-model` (or any *ForSequenceClassification checkpoint)
is compared with its own trained head, whatever its number of labels. A [CLS] head is read from the
same model.safetensors by both sides. transformers has no mean-pooling head, so for one saved with
--pooling mean the reference logits are the trained head (minibert_head.safetensors) applied to the
mean of transformers' last hidden states over the real tokens but [CLS]. A plain encoder has no head:
a random 3-label [CLS] head is copied into the reference. The report says which it compared. A run
folder (`parity RUN`) is compared through the model it saved, RUN/model.

`transformers` is the reference, not a dependency: it is imported only inside these functions.
"""
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..checkpoint import HEAD_FILE, load_classifier, load_pretrained, resolve
from ..cli import Parser, main_wrapper
from ..config import read_json_object
from ..heads import SequenceClassifier
from ..tokenizer import tokenizer_from_dir
from ..training import rundir

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "I didn't like this film at all; the plot was thin and the acting wooden.",
    "Stocks rallied on Tuesday after the central bank held interest rates steady.",
    "Hello!",
    "BERT reads the whole sentence at once, in both directions, unlike a left-to-right language model.",
]
PAIRS = [
    ("A man is playing a guitar.", "Someone is making music."),
    ("The company reported record profits.", "Revenue fell sharply for the third quarter in a row."),
    ("Where is the train station?", "It is two blocks north of the museum, next to the old post office."),
]
DEFAULT_TOL = {"fp32": 1e-5, "bf16": 1e-1}  # bf16 keeps 8 bits of mantissa: near 10, one rounding step is 0.06
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
NUM_LABELS = 3  # the random head of a plain encoder: any number works; 3 makes sure it is not a single logit


def import_transformers():
    """The reference implementation. minibert imports it here only, when a comparison runs (parity, bench):
    it is a test-only dependency, never needed to load, train or evaluate."""
    try:
        import transformers
    except ImportError:
        raise ImportError("this tool compares against Hugging Face transformers, which is not installed; "
                          "install the test extra: pip install -e '.[test]'") from None
    transformers.logging.set_verbosity_error()  # "newly initialized classifier" is expected: we copy ours in
    transformers.logging.disable_progress_bar()
    return transformers


def reference_classifier(model_dir, num_labels: int):
    """The HF *ForSequenceClassification model (eval mode) for the checkpoint in model_dir."""
    transformers = import_transformers()
    config = transformers.AutoConfig.from_pretrained(model_dir)
    classes = {"bert": transformers.BertForSequenceClassification,
               "distilbert": transformers.DistilBertForSequenceClassification}
    if config.model_type not in classes:
        raise ValueError(f"{model_dir}: model_type {config.model_type!r} is neither bert nor distilbert")
    return classes[config.model_type].from_pretrained(model_dir, num_labels=num_labels).eval()


def reference_encoder(model_dir):
    """The HF BertModel / DistilBertModel (eval mode) for the checkpoint in model_dir: the encoder of a mean-pooled
    classifier, which transformers has no head class for."""
    return import_transformers().AutoModel.from_pretrained(model_dir).eval()


def reference_mean_pool(hidden, attention_mask):
    """The paper's mean pooling, written out here for the reference side: the average of the last hidden states
    (B, T, H) over the real tokens but [CLS] -> (B, H)."""
    weights = attention_mask.to(hidden.dtype).clone()
    weights[:, 0] = 0
    return (hidden * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp(min=1)


def trained_classifier(model_dir: Path) -> SequenceClassifier | None:
    """The classifier a checkpoint folder holds (saved by train.py --save-model, or a *ForSequenceClassification
    from the hub) with its trained head, or None for a plain encoder."""
    hf = read_json_object(model_dir / "config.json")
    architectures = hf.get("architectures") or []
    if "minibert_pooling" in hf or (model_dir / HEAD_FILE).is_file() or \
            any(str(a).endswith("ForSequenceClassification") for a in architectures):
        return load_classifier(model_dir)
    return None


def head_text(clf: SequenceClassifier, trained: bool) -> str:
    """What the logits row compares, in words."""
    if not trained:
        return (f"none in the checkpoint: a random {clf.num_labels}-label [CLS] head, copied into transformers' "
                "*ForSequenceClassification")
    if clf.pooling == "mean":
        return (f"the checkpoint's trained {clf.num_labels}-label mean-pooling head ({HEAD_FILE}); transformers has "
                "no such head, so its logits are that head on the mean of its last hidden states over the real "
                "tokens but [CLS]")
    path = "pre_classifier -> classifier" if clf.pre_classifier is not None else "pooler -> classifier"
    return (f"the checkpoint's trained {clf.num_labels}-label [CLS] head ({path}), read by transformers from the "
            "same model.safetensors")


def copy_head(ours: SequenceClassifier, theirs) -> None:
    """Give the reference our classifier weights (DistilBERT's head has a pre_classifier too)."""
    with torch.no_grad():
        theirs.classifier.weight.copy_(ours.classifier.weight)
        theirs.classifier.bias.copy_(ours.classifier.bias)
        if ours.pre_classifier is not None:
            theirs.pre_classifier.weight.copy_(ours.pre_classifier.weight)
            theirs.pre_classifier.bias.copy_(ours.pre_classifier.bias)


def compare_tokenizers(model_dir, texts, pairs) -> dict:
    """Token ids, attention masks and token types of minibert's tokenizer vs HF's, on the same inputs."""
    transformers = import_transformers()
    ours, theirs = tokenizer_from_dir(model_dir), transformers.AutoTokenizer.from_pretrained(model_dir)
    mismatches = []
    for a, b in [(texts, None), ([p[0] for p in pairs], [p[1] for p in pairs])]:
        if not a:
            continue
        mine = ours(a, text_pairs=b)
        ref = theirs(a, b, padding=True, truncation=True, return_tensors="pt")
        for key in ("input_ids", "attention_mask", "token_type_ids"):
            if key in ref and not torch.equal(mine[key], ref[key]):
                row = int((mine[key] != ref[key]).any(-1).nonzero()[0]) if mine[key].shape == ref[key].shape else 0
                mismatches.append(f"{key} of {a[row]!r}" + (f" / {b[row]!r}" if b else ""))
    return {"match": not mismatches, "mismatches": mismatches}


def _batches(tok, texts, pairs):
    if texts:
        yield tok(texts)
    if pairs:
        yield tok([p[0] for p in pairs], text_pairs=[p[1] for p in pairs])


def our_classifier(model_dir: Path, model=None) -> tuple[SequenceClassifier, bool]:
    """(minibert's classifier, whether its head is the checkpoint's trained one): a saved classifier as it is, a
    plain encoder with a seeded random head. `model` replaces the encoder (compare()'s argument)."""
    ours = trained_classifier(model_dir)
    if ours is not None:
        if model is not None:
            ours.encoder = model
        return ours.eval(), True
    model = load_pretrained(model_dir) if model is None else model
    torch.manual_seed(0)  # the head's random init, so that reports are reproducible
    return SequenceClassifier(model, NUM_LABELS).eval(), False


def reference_side(model_dir: Path, ours: SequenceClassifier, trained: bool, dtype: torch.dtype):
    """(transformers' encoder, a function (batch, its output) -> its logits) for minibert's classifier `ours`.

    [CLS] pooling: the *ForSequenceClassification, which reads a trained head from the checkpoint itself (a random
    one is copied from ours). Mean pooling, which transformers has no head for: its encoder, and the trained head
    read from minibert_head.safetensors applied to reference_mean_pool of its last hidden states."""
    if ours.pooling == "cls":
        theirs = reference_classifier(model_dir, ours.num_labels)
        if not trained:
            copy_head(ours, theirs)
        theirs.to(dtype)
        return theirs.base_model, lambda batch, out: theirs(**batch).logits  # base_model: BertModel / DistilBertModel
    head = load_file(str(model_dir / HEAD_FILE))
    weight, bias = (head[f"classifier.{k}"].to(dtype) for k in ("weight", "bias"))
    return (reference_encoder(model_dir).to(dtype),
            lambda batch, out: reference_mean_pool(out.last_hidden_state, batch["attention_mask"]) @ weight.T + bias)


@torch.no_grad()
def compare(model_dir, texts=None, pairs=None, dtype: str = "fp32", tol: float | None = None,
            model=None) -> dict:
    """Run minibert and the HF reference on the same inputs; returns the parity report as a dict.

    model_dir: a preset, checkpoint directory or hub id; both sides read the same files.
    model: an already loaded minibert encoder for model_dir (default: load it; cast in place for bf16).
    Tests pass a deliberately perturbed one to check that the report catches it.
    rows: one per compared tensor (embeddings, layer 1..L, pooler, logits) with its max |diff|; "head" says which
    head the logits come from (see the module docstring).
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    tol = DEFAULT_TOL[dtype] if tol is None else tol
    model_dir = resolve(model_dir)
    texts = SENTENCES + list(texts or [])
    pairs = PAIRS + list(pairs or [])
    ours, trained = our_classifier(model_dir, model)
    ours.to(DTYPES[dtype])
    model = ours.encoder
    reference, reference_logits = reference_side(model_dir, ours, trained, DTYPES[dtype])

    tok = tokenizer_from_dir(model_dir)
    n_layers = model.config.num_hidden_layers
    names = ["embeddings", *[f"layer {i}" for i in range(1, n_layers + 1)]]
    names += ["pooler"] if model.pooler is not None else []
    names += ["logits"]
    diffs = dict.fromkeys(names, 0.0)
    for batch in _batches(tok, texts, pairs):
        if model.config.type_vocab_size == 0:
            batch.pop("token_type_ids")  # DistilBERT takes none
        mine = model(**batch, output_hidden_states=True)
        ref = reference(**batch, output_hidden_states=True)
        pairs_of_tensors = list(zip(mine.hidden_states, ref.hidden_states))
        if model.pooler is not None:
            pairs_of_tensors.append((mine.pooler_output, ref.pooler_output))
        pairs_of_tensors.append((ours(**batch), reference_logits(batch, ref)))
        for name, (a, b) in zip(names, pairs_of_tensors):
            diffs[name] = max(diffs[name], (a.float() - b.float()).abs().max().item())
    rows = [{"name": n, "max_abs_diff": d, "ok": d <= tol} for n, d in diffs.items()]
    tokenizer = compare_tokenizers(model_dir, texts, pairs)
    failed = [r["name"] for r in rows if not r["ok"]] + ([] if tokenizer["match"] else ["tokenizer"])
    head = {"trained": trained, "pooling": ours.pooling, "num_labels": ours.num_labels,
            "text": head_text(ours, trained)}
    return {"model": str(model_dir), "flavour": model.config.flavour, "dtype": dtype, "tol": tol,
            "n_texts": len(texts), "n_pairs": len(pairs), "tokenizer": tokenizer, "head": head, "rows": rows,
            "passed": not failed, "failed": failed}


def format_report(report: dict) -> str:
    """The report as a small table a person can paste into an issue or a paper."""
    lines = [f"minibert vs transformers on {report['model']} ({report['flavour']}, {report['dtype']}, "
             f"{report['n_texts']} sentences + {report['n_pairs']} pairs, tol {report['tol']:g})"]
    if report["dtype"] == "bf16":
        lines.append("bf16: both models cast to bfloat16; the tolerance is loose since the two round in different op orders")
    tok = report["tokenizer"]
    lines.append(f"tokenizer: {'identical' if tok['match'] else 'DIFFERENT: ' + '; '.join(tok['mismatches'])}")
    lines.append(f"head (the logits row): {report['head']['text']}")
    lines.append(f"{'tensor':<12} {'max |diff|':>12}  ")
    for r in report["rows"]:
        lines.append(f"{r['name']:<12} {r['max_abs_diff']:>12.3e}  {'ok' if r['ok'] else 'FAIL'}")
    if report["passed"]:
        lines.append(f"PASS: every tensor within {report['tol']:g}")
    else:
        lines.append(f"FAIL: {', '.join(report['failed'])} above {report['tol']:g}; "
                     f"first divergence at {report['failed'][0]}")
    return "\n".join(lines)


def saved_model_of(model: str) -> str:
    """The checkpoint to compare for the MODEL argument: a run folder's saved model (RUN/model, a sweep's in its best
    sub-run), with a note; anything else as given."""
    path = Path(model)
    if not path.is_dir() or rundir.read_config(path) is None:
        return model
    saved = rundir.saved_model(path)
    if saved is None:
        raise FileNotFoundError(f"{path} is a run folder with no saved model; parity compares a saved model: train "
                                f"the run with --save-model, then run python -m minibert parity {path / rundir.MODEL}")
    print(f"note: {path} is a run folder: comparing the model it saved, {saved}", file=sys.stderr)
    return str(saved)


@main_wrapper
def main(argv=None) -> int:
    parser = Parser(prog="python -m minibert parity",
                    description="Compare minibert with Hugging Face transformers on a checkpoint.")
    parser.add_argument("model", help="preset (base|large|distil), checkpoint directory or hub id")
    parser.add_argument("--text", action="append", default=[], help="an extra sentence to compare (repeatable)")
    parser.add_argument("--pair", action="append", default=[],
                        help="second sentence paired with the --text of the same position (repeatable)")
    parser.add_argument("--tol", type=float, default=None,
                        help=f"max |diff| allowed (default {DEFAULT_TOL['fp32']:g} for fp32, "
                             f"{DEFAULT_TOL['bf16']:g} for bf16)")
    parser.add_argument("--dtype", default="fp32", choices=list(DTYPES), help="precision of both models")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # a bad flag (Parser printed its one line) or --help: main() returns the status
        return e.code
    if len(args.pair) > len(args.text):
        raise ValueError(f"got {len(args.pair)} --pair but only {len(args.text)} --text; each pair needs a text")
    pairs = list(zip(args.text, args.pair))
    texts = args.text[len(pairs):]  # texts without a partner are single sentences
    report = compare(saved_model_of(args.model), texts, pairs, args.dtype, args.tol)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
