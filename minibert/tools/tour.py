"""Write docs/tour.md: a walk through model.py in reading order, on real weights, with pictures.

    python -m minibert tour --model DIR [--out docs] [--tiny]     # regenerate the page and its figures
    python -m minibert tour --check docs/tour.md                   # do its excerpts still match the code?

Every code excerpt on the page is pulled from the source by name (EXCERPTS, via inspect), so the page
cannot drift from the code: a name that no longer exists stops the generator with the name to fix, and
--check (run by the tests) compares each excerpt on a written page with the code as it is now. Every
number and picture is computed here on the model given by --model (all-MiniLM-L6-v2 for docs/tour.md).
The page ends with the paper's experiment in miniature: corrupt the bottom two layers, fine-tune on a
few hundred real SST-2 sentences (--data-dir, $MINIBERT_DATA/sst2, or the hub) and look again.
--tiny runs the same steps on a handful of sentences, for the tests.
"""
import copy
import importlib
import inspect
import math
import re
import textwrap
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..checkpoint import load_pretrained, resolve
from ..cli import Parser, main_wrapper
from ..corrupt import corrupt
from ..data.datasets import default_data_root, load_dataset
from ..heads import SequenceClassifier
from ..tokenizer import tokenizer_from_dir
from . import trace as tr

SENTENCE = "The cat sat on the mat because it was warm."
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
FIGURES = "tour"  # sub-folder of the page's folder that holds its PNGs
# The excerpts, in reading order: (section key, "module:qualified name").
EXCERPTS = {
    "embeddings": ["minibert.model:Embeddings.forward"],
    "attention": ["minibert.model:attention_probs", "minibert.model:attend", "minibert.model:SelfAttention.forward",
                  "minibert.model:SelfAttention.heads", "minibert.model:SelfAttention.output"],
    "ffn": ["minibert.model:activation", "minibert.model:FeedForward.forward"],
    "layer": ["minibert.model:Layer.forward", "minibert.model:Layer.residual", "minibert.model:Bert.forward"],
    "pooler": ["minibert.model:Pooler.forward"],
    "heads": ["minibert.heads:mean_pool", "minibert.heads:SequenceClassifier.pool"],
}
MARK = re.compile(r"<!-- excerpt (\S+) -->\n```python\n(.*?)```\n", re.S)
SETTINGS = {"real": {"train": 320, "test": 200, "epochs": 3, "lr": 5e-5},
            "tiny": {"train": 16, "test": 16, "epochs": 1, "lr": 5e-5}}


def excerpt(name: str) -> str:
    """The source of `module:Qualified.name`, dedented; a missing name is a loud error naming it."""
    module, qualname = name.split(":")
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        if not hasattr(obj, part):
            raise LookupError(f"the tour shows {qualname} from {module}, which no longer has it; "
                              "update EXCERPTS in minibert/tools/tour.py")
        obj = getattr(obj, part)
    return textwrap.dedent(inspect.getsource(obj))


def code(names) -> str:
    """Markdown for the excerpts `names`, each marked with its name so that check() can find it."""
    return "\n".join(f"<!-- excerpt {n} -->\n```python\n{excerpt(n)}```\n" for n in names)


def check(page) -> list[str]:
    """What on a written tour page no longer matches: changed excerpts and missing figures."""
    page = Path(page)
    text = page.read_text()
    problems = []
    for name, shown in MARK.findall(text):
        try:
            if shown != excerpt(name):
                problems.append(f"{page}: the excerpt {name} differs from the code; regenerate the page")
        except LookupError as e:
            problems.append(f"{page}: {e}")
    for target in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        if not (page.parent / target).is_file():
            problems.append(f"{page}: figure {target} is missing")
    if not MARK.search(text):
        problems.append(f"{page}: no excerpts found")
    return problems


def fmt(shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ")"


def table(header, rows) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def entropies(run) -> list[float]:
    """Mean attention entropy over the heads of each layer, in nats."""
    return [float(tr.entropy(layer["attention"]).mean()) for layer in run["layers"]]


def figure(directory: Path, data, title: str, prefix: str, dpi: int, layers) -> dict:
    """Write a trace's figures for `layers` (1-based) and hidden.png under directory/tour/prefix;
    returns {name: path relative to the page}."""
    written = tr_figures().write_figures(data, directory / FIGURES / prefix, title, dpi=dpi, layers=layers)
    return {p.stem: f"{FIGURES}/{prefix}/{p.name}" for p in written}


def tr_figures():
    from . import trace_figures  # the `plot` extra: imported when the first figure is drawn
    return trace_figures


def walk(model, tok, name: str, out: Path, dpi: int) -> tuple[list[str], dict]:
    """The reading-order sections on one sentence through the clean model; returns (markdown, traced)."""
    batch = tok([SENTENCE])
    ids = batch["input_ids"][0].tolist()
    tokens = tok.convert_ids_to_tokens(ids)
    clean = tr.trace(model, batch)
    data = tr.figure_data(tokens, batch["token_type_ids"][0].tolist(), batch["attention_mask"][0], clean)
    cfg, s, T = model.config, clean["layers"][0]["shapes"], len(ids)
    figs = figure(out, data, f"{name}, clean", "clean", dpi, layers=[1, cfg.num_hidden_layers])
    emb = clean["embeddings"]
    parts = [p for p in ("word", "position", "type", "sum", "normed") if p in emb]
    norms = {p: emb[p].norm(dim=-1) for p in parts}
    md = [f"## 1. Tokens\n\n`{SENTENCE}` becomes {T} tokens (WordPiece, with [CLS] first and [SEP] last):\n\n"
          + table(["token", *tokens], [["id", *ids]]),
          "## 2. Embeddings: what each token starts as\n\n" + code(EXCERPTS["embeddings"])
          + f"\ninput_ids {fmt(batch['input_ids'].shape)} -> word, position and type vectors, each "
          f"{fmt((1, T, cfg.hidden_size))}, summed, then LayerNorm. The L2 norm of each token's vectors:\n\n"
          + table(["token", *parts], [[t, *(f"{norms[p][j]:.2f}" for p in parts)] for j, t in enumerate(tokens)])
          + f"\n\nLayerNorm gives every token's sum mean 0 and variance 1 over its {cfg.hidden_size} numbers (a "
          f"norm of sqrt({cfg.hidden_size}) = {math.sqrt(cfg.hidden_size):.2f}), then its learned per-dimension "
          "scale and shift set the lengths in the last column.",
          "## 3. Self-attention: every token reads every token\n\n" + code(EXCERPTS["attention"])
          + f"\nShapes in layer 1: x {fmt(s['x'])} -> qkv {fmt(s['qkv'])} -> q, k, v {fmt(s['q,k,v'])} each "
          f"({cfg.num_attention_heads} heads of {cfg.head_dim}) -> weights {fmt(s['weights'])} -> out "
          f"{fmt(s['attention out'])}.\n\nEach head's attention in layer 1 (row = the token asking, column = the "
          f"token read; a row sums to 1):\n\n![layer 1 attention]({figs['attention_layer1']})\n\n"
          f"Attention entropy per head in layer 1, in nats (uniform over {T} tokens = {math.log(T):.2f}): "
          + ", ".join(f"{e:.2f}" for e in tr.entropy(clean["layers"][0]["attention"]).tolist())
          + f". 0 would be a head that reads a single token.\n\nThe same picture for layer "
          f"{cfg.num_hidden_layers}:\n\n![last layer attention]({figs[f'attention_layer{cfg.num_hidden_layers}']})",
          "## 4. Feed-forward: the same MLP on every token\n\n" + code(EXCERPTS["ffn"])
          + f"\nShapes: {fmt(s['attention out'])} -> up {fmt(s['ffn up'])} -> {clean['activation']} -> down "
          f"{fmt(s['ffn down'])}.",
          "## 5. The layer, and the stack of layers\n\n" + code(EXCERPTS["layer"])
          + "\nMean L2 norm of the tokens' hidden states after each layer: "
          + ", ".join(f"{i + 1}: {layer['hidden'].norm(dim=-1).mean():.2f}" for i, layer in enumerate(clean["layers"]))
          + f".\n\n![hidden-state norms]({figs['hidden']})"]
    return md, {"batch": batch, "tokens": tokens, "clean": clean}


def ends(model, batch) -> str:
    """The pooler and the classification heads, with their outputs on the sentence."""
    with torch.no_grad():
        out = model(**batch)
    pooled = ("BERT's pooler gives a vector of shape " + fmt(out.pooler_output.shape)
              + f" (L2 norm {out.pooler_output.norm():.2f}) from [CLS] alone."
              if out.pooler_output is not None else "DistilBERT has no pooler.")
    return ("## 6. Pooler\n\n" + code(EXCERPTS["pooler"]) + f"\n{pooled}\n\n"
            "## 7. Heads: one vector per sentence, then a linear layer\n\n" + code(EXCERPTS["heads"])
            + f"\nlast_hidden_state {fmt(out.last_hidden_state.shape)} -> one pooled vector (1, "
            f"{model.config.hidden_size}) -> logits (1, num_labels). Section 8 trains such a head.")


def fine_tune(clf, texts, labels, tok, epochs: int, lr: float, batch_size: int = 32) -> float:
    """Full fine-tuning with plain Adam at a constant lr (the paper's optimiser); returns the seconds taken."""
    start = time.perf_counter()
    opt = torch.optim.Adam(clf.parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)
    clf.train()
    for _ in range(epochs):
        order = torch.randperm(len(texts), generator=g).tolist()
        for i in range(0, len(order), batch_size):
            rows = order[i:i + batch_size]
            batch = tok([texts[j] for j in rows], max_length=64)
            loss = F.cross_entropy(clf(**batch), torch.tensor([labels[j] for j in rows]))
            opt.zero_grad()
            loss.backward()
            opt.step()
    clf.eval()
    return time.perf_counter() - start


@torch.no_grad()
def accuracy(clf, texts, labels, tok, batch_size: int = 64) -> float:
    clf.eval()
    right = 0
    for i in range(0, len(texts), batch_size):
        logits = clf(**tok(texts[i:i + batch_size], max_length=64))
        right += int((logits.argmax(-1) == torch.tensor(labels[i:i + batch_size])).sum())
    return right / len(texts)


def train_and_score(encoder, ds, tok, setting) -> dict:
    """A fresh [CLS] head on `encoder`: accuracy on the test sentences before and after fine-tuning."""
    torch.manual_seed(0)  # the same new head for every encoder
    clf = SequenceClassifier(encoder, num_labels=2)
    before = accuracy(clf, ds.test.texts, ds.test.labels, tok)
    seconds = fine_tune(clf, ds.train.texts, ds.train.labels, tok, setting["epochs"], setting["lr"])
    return {"before": before, "after": accuracy(clf, ds.test.texts, ds.test.labels, tok), "seconds": seconds}


def experiment(model, tok, name: str, walked, data_dir, setting, out: Path, dpi: int) -> str:
    """Section 8: corrupt the bottom two layers, look, fine-tune on SST-2 sentences, look again."""
    batch, tokens, clean = walked["batch"], walked["tokens"], walked["clean"]
    types, mask = batch["token_type_ids"][0].tolist(), batch["attention_mask"][0]
    broken = copy.deepcopy(model)
    report = corrupt(broken, "bottom:2", seed=0)
    corrupted = tr.trace(broken, batch)
    figs = figure(out, tr.figure_data(tokens, types, mask, clean, corrupted, report.layers),
                  f"{name}, corrupted bottom:2 (seed 0)", "bottom2", dpi, layers=[1])
    ds = load_dataset("sst2", data_dir, split="official", seed=0, limit=setting["train"])
    ds.test = ds.test.take(range(min(setting["test"], len(ds.test))))
    tuned, healed_encoder = copy.deepcopy(model), copy.deepcopy(broken)  # fine-tuned in place
    scores = {"clean": train_and_score(tuned, ds, tok, setting),
              "bottom:2": train_and_score(healed_encoder, ds, tok, setting)}
    healed = tr.trace(healed_encoder, batch)
    healed_figs = figure(out, tr.figure_data(tokens, types, mask, clean, healed, report.layers, "fine-tuned"),
                         f"{name}, corrupted bottom:2, then fine-tuned on SST-2", "healed", dpi,
                         layers=[1, len(clean["layers"])])
    T, L = len(tokens), len(clean["layers"])
    runs = {"clean": clean, "clean, fine-tuned": tr.trace(tuned, batch), "bottom:2": corrupted,
            "bottom:2, fine-tuned": healed}
    ent = {name: entropies(run) for name, run in runs.items()}
    cos = {name: [float(F.cosine_similarity(clean["layers"][i]["hidden"], run["layers"][i]["hidden"], dim=-1).mean())
                  for i in range(L)] for name, run in runs.items() if name != "clean"}
    rows = [[f"{i + 1}" + (" (corrupted)" if i + 1 in report.layers else ""),
             *(f"{ent[n][i]:.2f}" for n in runs), *(f"{cos[n][i]:.3f}" for n in cos)] for i in range(L)]
    return ("## 8. The paper's experiment in miniature\n\nThe paper re-initialises the bottom layers of a "
            "pre-trained model and fine-tunes it on a task. Here: `corrupt(model, \"bottom:2\", seed=0)` "
            f"re-initialises layers 1 and 2 of {L}:\n\n```\n{report}\n```\n\n"
            f"Mean attention entropy over heads per layer (uniform over {T} tokens = {math.log(T):.2f} nats), "
            "and the mean cosine of each token's hidden state with the clean model's:\n\n"
            + table(["layer", *(f"entropy {n}" for n in runs), *(f"cos {n}" for n in cos)], rows)
            + f"\n\nThe corrupted layers' heads, beside the clean ones:\n\n![layer 1 corrupted]"
            f"({figs['attention_layer1']})\n\n![hidden states corrupted]({figs['hidden']})\n\n"
            f"Then a new [CLS] classification head on each model, full fine-tuning on {len(ds.train)} SST-2 "
            f"training sentences for {setting['epochs']} epoch{'s' * (setting['epochs'] > 1)} "
            f"(Adam, lr {setting['lr']}, batch 32), "
            f"accuracy on {len(ds.test)} SST-2 validation sentences:\n\n"
            + table(["model", "accuracy before", "accuracy after", "fine-tuning time (s, CPU)"],
                    [[n, f"{s['before']:.3f}", f"{s['after']:.3f}", f"{s['seconds']:.0f}"] for n, s in scores.items()])
            + f"\n\nWhat came back: the corrupted model after fine-tuning, beside the clean one:\n\n"
            f"![layer 1 after fine-tuning]({healed_figs['attention_layer1']})\n\n"
            f"![layer {L} after fine-tuning]({healed_figs[f'attention_layer{L}']})\n\n"
            f"![hidden states after fine-tuning]({healed_figs['hidden']})")


def write_tour(model_dir, out, data_dir=None, tiny: bool = False, name: str = "all-MiniLM-L6-v2") -> Path:
    """Generate out/tour.md and its figures under out/tour/; returns the page's path."""
    tr_figures().pyplot()  # fail before any work when matplotlib is missing
    start, cpu = time.perf_counter(), time.process_time()
    out = Path(out)
    setting = SETTINGS["tiny" if tiny else "real"]
    model = load_pretrained(model_dir).eval()
    tok = tokenizer_from_dir(model_dir)
    dpi = 50 if tiny else 80
    md, walked = walk(model, tok, name, out, dpi)
    md += [ends(model, walked["batch"]), experiment(model, tok, name, walked, data_dir, setting, out, dpi)]
    head = ("# A tour of model.py on real weights\n\n*Generated by `python -m minibert tour` "
            f"({'--tiny, ' if tiny else ''}{name}, {model.config.num_hidden_layers} layers, "
            f"hidden size {model.config.hidden_size}); every excerpt is pulled from the code by name, every "
            "number and figure is computed by that command (on a CPU it took {seconds:.0f} s, "
            "{cpu:.0f} s of CPU time). Read it beside "
            "[minibert/model.py](../minibert/model.py).*")
    page = out / "tour.md"
    text = "\n\n".join(md) + "\n"
    page.write_text(head.format(seconds=time.perf_counter() - start, cpu=time.process_time() - cpu) + "\n\n" + text)
    return page


@main_wrapper
def main(argv=None) -> int:
    parser = Parser(prog="python -m minibert tour", description="Regenerate docs/tour.md and its figures.")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="all-MiniLM-L6-v2's folder or hub id (the page is written for it)")
    parser.add_argument("--out", type=Path, default=Path("docs"), help="folder for tour.md and tour/*.png")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="local SST-2 folder (default: $MINIBERT_DATA/sst2, else the Hugging Face Hub)")
    parser.add_argument("--name", default="all-MiniLM-L6-v2", help="the model's name on the page and figures")
    parser.add_argument("--tiny", action="store_true", help="16 sentences, 1 epoch: a quick check, not the page")
    parser.add_argument("--check", type=Path, default=None, metavar="PAGE",
                        help="only check that PAGE's excerpts match the code and its figures exist")
    args = parser.parse_args(argv)
    if args.check:
        problems = check(args.check)
        print("\n".join(problems) or f"{args.check}: every excerpt matches the code, every figure exists")
        return 1 if problems else 0
    data_dir = args.data_dir or (default_data_root() / "sst2" if default_data_root() else None)
    print(f"wrote {write_tour(resolve(args.model), args.out, data_dir, args.tiny, args.name)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
