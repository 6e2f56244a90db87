"""The fast path (padding.encode: unpadded layers, last layer for [CLS] only) gives model.py's numbers."""
import pytest
import torch

from minibert import Bert, BertConfig, SequenceClassifier
from minibert.padding import Unpadded, encode

from helpers import max_diff

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


def test_unpadded_round_trip():
    mask = padded()["attention_mask"]
    u = Unpadded(mask)
    x = torch.randn(4, 10, 3)
    flat = u.unpad(x)
    assert flat.shape == (int(mask.sum()), 3)
    assert torch.equal(u.pad(flat), x * mask[..., None])
    assert torch.equal(flat[u.first], x[:, 0])  # each sequence's [CLS] row


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


def test_model_py_is_the_plain_path_only():
    """The teaching text carries none of the fast path's machinery (issue 11)."""
    from pathlib import Path

    import minibert.model
    text = Path(minibert.model.__file__).read_text()
    for word in ("unpad", "cls_only", "is_compiling"):
        assert word not in text
