"""The fast path (padding.encode: unpadded layers, last layer for [CLS] only) gives model.py's numbers."""
import ast
from pathlib import Path

import pytest
import torch
from helpers import max_diff

import minibert.model
import minibert.padding
from minibert import Bert, BertConfig, SequenceClassifier
from minibert.padding import Unpadded, encode

TOL = 1e-6  # same math on fewer rows; only the matmuls' blocking can round differently


def encoder(flavour="bert", layers=3):
    torch.manual_seed(0)
    cfg = BertConfig(flavour=flavour, vocab_size=100, hidden_size=32, num_hidden_layers=layers,
                     num_attention_heads=4, intermediate_size=64, type_vocab_size=2 if flavour == "bert" else 0)
    return Bert(cfg).eval()


def padded(lengths=(10, 7, 3, 1), T=10, left=False):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 100, (len(lengths), T), generator=g)
    mask = (torch.arange(T)[None] < torch.tensor(lengths)[:, None]).long()
    mask = mask.flip(1) if left else mask
    return {"input_ids": ids * mask, "attention_mask": mask}


@pytest.mark.parametrize("left", [False, True], ids=["right", "left"])
def test_unpadded_round_trip(left):
    mask = padded(left=left)["attention_mask"]
    u = Unpadded.of(mask)
    x = torch.randn(4, 10, 3)
    flat = u.unpad(x)
    assert flat.shape == (int(mask.sum()), 3)
    assert torch.equal(u.pad(flat), x * mask[..., None])
    if not left:
        assert torch.equal(flat[u.first], x[:, 0])  # each sequence's [CLS] row
    assert torch.equal(u.unpad(x.transpose(0, 1).contiguous().transpose(0, 1)), flat)  # any memory layout


def test_unpadded_from_lengths_is_the_masks():
    """The tokenizer's lengths, read on the host, give the same map as the mask (which costs a sync on a GPU)."""
    mask = padded()["attention_mask"]
    a, b = Unpadded.of(mask), Unpadded.of(mask, lengths=mask.sum(1))
    for name in ("batch", "position", "first"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert (a.full, a.cls_real) == (b.full, b.cls_real) == (False, True)


@pytest.mark.parametrize("left", [False, True], ids=["right", "left"])
@pytest.mark.parametrize("flavour", ["bert", "distilbert"])
def test_unpad_matches_default_on_real_tokens(flavour, left):
    enc, batch = encoder(flavour), padded(left=left)
    with torch.no_grad():
        full = enc(**batch, output_hidden_states=True)
        fast = encode(enc, **batch, output_hidden_states=True)
    real = batch["attention_mask"].bool()
    for a, b in zip(full.hidden_states, fast.hidden_states):
        assert max_diff(a[real], b[real]) <= TOL
        assert b[~real].abs().max() == 0  # padding positions are zero, not HF's values
    if flavour == "bert" and not left:  # left-padded, the pooler reads position 0: padding, zero when unpadded
        assert max_diff(full.pooler_output, fast.pooler_output) <= TOL


@pytest.mark.parametrize("batch", [padded(), padded((10,) * 4), padded(left=True)], ids=["right", "none", "left"])
@pytest.mark.parametrize("explicit", [False, True])
def test_cls_only_matches_default(batch, explicit):
    enc = encoder().explicit_attention(explicit)
    with torch.no_grad():
        full = enc(**batch)
        for unpad in (False, True):
            fast = encode(enc, **batch, unpad=unpad, cls_only=True)
            assert fast.last_hidden_state.shape == (4, 1, 32)
            assert max_diff(full.last_hidden_state[:, :1], fast.last_hidden_state) <= TOL
            assert max_diff(full.pooler_output, fast.pooler_output) <= TOL


def test_cls_only_has_no_hidden_states():
    with pytest.raises(ValueError, match="cls_only"):
        encode(encoder(), **padded(), cls_only=True, output_hidden_states=True)


@pytest.mark.parametrize("left", [False, True], ids=["right", "left"])
@pytest.mark.parametrize("flavour,pooling", [("bert", "cls"), ("bert", "mean"), ("distilbert", "cls")])
def test_classifier_gradients_match_the_default_path(flavour, pooling, left):
    """Training goes through the fast path: loss and every gradient equal model.py's (dropout off)."""
    batch = padded(left=left)
    labels = torch.tensor([0, 1, 2, 1])
    grads = []
    for shortcut in (True, False):
        clf = SequenceClassifier(encoder(flavour), 3, pooling=pooling).eval()
        if shortcut:
            logits = clf(**batch)
        else:
            logits = clf.head(clf.pool(clf.encoder(**batch), batch["attention_mask"]))
        loss = torch.nn.functional.cross_entropy(logits, labels)
        loss.backward()
        grads.append({"loss": loss.detach(), **{n: p.grad for n, p in clf.named_parameters() if p.grad is not None}})
    assert grads[0].keys() == grads[1].keys()
    assert max(max_diff(grads[0][k], grads[1][k]) for k in grads[0]) <= TOL


def test_classifier_compiles_without_graph_breaks():
    """Under torch.compile the shortcuts that depend on the data (the mask test, unpadding) step aside."""
    clf = SequenceClassifier(encoder(layers=2), 2).eval()
    explained = torch._dynamo.explain(clf)(**padded())
    assert explained.graph_break_count == 0, explained.break_reasons


def test_left_padded_batch_is_unpadded_except_for_a_cls_only_head():
    """Unpadding does not care where the padding sits; only the [CLS]-only last layer needs [CLS] real at 0."""
    enc, batch = encoder(), padded(left=True)
    with torch.no_grad():
        full = enc(**batch)
        mean_path = encode(enc, **batch)
        cls_path = encode(enc, **batch, cls_only=True)
    pad = ~batch["attention_mask"].bool()
    assert mean_path.last_hidden_state[pad].abs().max() == 0  # padding rows were never computed
    # position 0 is padding in three rows: the [CLS]-only head runs padded, as model.py does
    assert max_diff(full.last_hidden_state[:, :1], cls_path.last_hidden_state) <= TOL


# ---- model.py is the teaching text: the fast path lives here, never there (issues 11 and 20) ---------------

MODEL, PADDING = Path(minibert.model.__file__), Path(minibert.padding.__file__)
REPO = Path(minibert.__file__).resolve().parent.parent


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def imports(tree) -> set[str]:
    """The modules a file imports, as written: `from .model import Bert` gives .model and .model.Bert."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            names |= {module} | {f"{module}.{a.name}" for a in node.names}
    return names


def callee(call: ast.Call) -> str | None:
    """The name a call is made by: f(...) and obj.f(...) give "f"."""
    return getattr(call.func, "id", None) or getattr(call.func, "attr", None)


def test_padding_imports_model_never_the_reverse():
    def parts(names):
        return {part for name in names for part in name.split(".")}
    assert "model" in parts(imports(parse(PADDING)))
    assert "padding" not in parts(imports(parse(MODEL)))


def test_every_name_model_py_defines_has_a_user_besides_padding():
    """Every function, method and optional argument of model.py is used by model.py itself or by a module
    other than padding.py (the package, the scripts, the tests of the plain path): none exists for the fast
    path alone. A required argument is passed by every call, so its function's use covers it. Names are
    matched, not resolved: a use of any `f` counts for model.py's `f`."""
    users = [p for p in [*(REPO / "minibert").rglob("*.py"), *REPO.glob("*.py"), *(REPO / "tests").glob("*.py")]
             if p.resolve() not in (PADDING.resolve(), Path(__file__).resolve())]
    fast_path = {f.name for f in ast.walk(parse(PADDING)) if isinstance(f, ast.FunctionDef)}  # encode, ...
    used, calls = set(), []
    for path in users:
        for node in ast.walk(parse(path)):
            if isinstance(node, ast.Name):
                used.add(node.id)
            elif isinstance(node, ast.Attribute):
                used.add(node.attr)
            elif isinstance(node, ast.alias):
                used.add(node.name.split(".")[-1])
            elif isinstance(node, ast.Call) and callee(node) not in fast_path:
                calls.append(node)

    def passed(function: ast.FunctionDef, name: str, place: int) -> bool:
        """Does a call outside `function` pass its argument `name`, by keyword or in its place? A module's
        forward is called through the module under any name: there a positional argument counts when the
        caller's variable has the argument's name, as in `layer(x, mask)`."""
        inside = {id(n) for n in ast.walk(function)}
        for call in calls:
            if id(call) in inside:
                continue
            if any(k.arg == name for k in call.keywords):
                return True
            if place < len(call.args):
                arg = call.args[place]
                if callee(call) == function.name or (function.name == "forward" and getattr(arg, "id", None) == name):
                    return True
        return False

    unused = []
    for function in ast.walk(parse(MODEL)):
        if not isinstance(function, ast.FunctionDef) or function.name.startswith("__"):
            continue
        if function.name != "forward" and function.name not in used:  # forward: called through the module
            unused.append(f"{function.name}()")
        args = [a.arg for a in function.args.args if a.arg != "self"]
        optional = {name: args.index(name) for name in args[len(args) - len(function.args.defaults):]}
        optional |= {a.arg: len(args) + 99 for a, d in zip(function.args.kwonlyargs, function.args.kw_defaults)
                     if d is not None}  # keyword-only: no place
        unused += [f"{function.name}({name}=)" for name, place in optional.items() if not passed(function, name, place)]
    # the two doors through which padding.py's rows enter SelfAttention's own steps (no copy of them elsewhere)
    doors = ["heads(pad=)", "output(select=)"]
    assert [u for u in unused if u not in doors] == [], f"model.py defines what only padding.py uses: {unused}"


def test_self_attention_steps_are_read_in_forward_and_used_not_copied():
    """forward reads as nanoGPT's: project and split into heads, attend, merge the heads and project back; the
    fast path calls those steps and touches none of SelfAttention's attributes (weights, head counts)."""
    attention = next(c for c in parse(MODEL).body if isinstance(c, ast.ClassDef) and c.name == "SelfAttention")
    assert [f.name for f in attention.body if isinstance(f, ast.FunctionDef)] == [
        "__init__", "forward", "heads", "attend", "output"]
    touched = {node.attr for node in ast.walk(parse(PADDING)) if isinstance(node, ast.Attribute)
               and isinstance(node.value, ast.Name) and node.value.id == "attention"}
    assert touched == {"heads", "attend", "output"}
    for path in (PADDING, REPO / "minibert" / "tools" / "trace.py"):  # the head split is written once, in model.py
        assert "n_head" not in path.read_text() and ".permute(" not in path.read_text()


def test_model_py_has_no_host_sync_and_no_fast_path_names():
    """The fast path's tricks (a sync with the host to skip the mask, unpadding, [CLS] alone, the compile
    switch) are padding.py's."""
    tree = parse(MODEL)
    syncs = [ast.unparse(call) for call in ast.walk(tree) if isinstance(call, ast.Call)
             and (callee(call) in ("item", "tolist", "cpu", "numpy", "nonzero")
                  or (isinstance(call.func, ast.Name) and call.func.id in ("bool", "int", "float")
                      and not all(isinstance(a, ast.Constant) for a in call.args)))]
    assert syncs == []
    names = {getattr(node, field) for node in ast.walk(tree) for field in ("id", "attr", "arg", "name")
             if isinstance(getattr(node, field, None), str)}
    assert [n for n in names if any(w in n.lower() for w in ("unpad", "cls_only", "compil"))] == []
