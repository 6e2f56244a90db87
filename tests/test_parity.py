"""Parity with the reference implementation (transformers), fp32, CPU, eval mode: max |diff| <= 1e-5."""
import shutil

import pytest
import torch
from helpers import PAIRS, SENTENCES, max_diff, scramble_, write_checkpoint

import minibert
from minibert import SequenceClassifier, load_pretrained, load_tokenizer, save_pretrained

transformers = pytest.importorskip("transformers")
TOL = 1e-5
VOCAB = 1000  # small vocabularies keep the base/large-shaped checkpoints quick to build


def compare_encoders(ours, ref, batch, report=None):
    """Max |diff| over every hidden state and the pooler; prints it so the CI log shows the numbers."""
    with torch.no_grad():
        a = ours(**batch, output_hidden_states=True)
        b = ref(**batch, output_hidden_states=True)
    assert len(a.hidden_states) == len(b.hidden_states) == ours.config.num_hidden_layers + 1
    diffs = [max_diff(x, y) for x, y in zip(a.hidden_states, b.hidden_states)]
    if a.pooler_output is not None or getattr(b, "pooler_output", None) is not None:
        diffs.append(max_diff(a.pooler_output, b.pooler_output))
    print(f"{report}: max |diff| = {max(diffs):.3g} over {len(diffs)} tensors")
    return max(diffs)


def random_batch(vocab, B=4, T=24, pairs=True, seed=0):
    """Token ids with padding of different lengths and two segments."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, vocab, (B, T), generator=g)
    lengths = torch.tensor([T, T - 5, T // 2, 3])[:B]
    attention_mask = (torch.arange(T)[None] < lengths[:, None]).long()
    token_type_ids = ((torch.arange(T)[None] >= (lengths[:, None] // 2)) & attention_mask.bool()).long()
    input_ids = input_ids * attention_mask
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if pairs:
        batch["token_type_ids"] = token_type_ids
    return batch


# ---- 1. real weights -------------------------------------------------------------------

@pytest.fixture(scope="module")
def minilm(minilm_dir):
    ours = load_pretrained(minilm_dir)
    ref = transformers.BertModel.from_pretrained(minilm_dir).eval()
    return ours, ref, load_tokenizer(minilm_dir)


def test_minilm_real_weights_sentences(minilm):
    ours, ref, tok = minilm
    batch = tok(SENTENCES, max_length=128)
    assert batch["attention_mask"].float().mean() < 0.8  # the batch really is padded
    assert compare_encoders(ours, ref, batch, "MiniLM sentences") <= TOL


def test_minilm_real_weights_pairs(minilm):
    ours, ref, tok = minilm
    batch = tok([a for a, _ in PAIRS], [b for _, b in PAIRS], max_length=128)
    assert batch["token_type_ids"].sum() > 0
    assert compare_encoders(ours, ref, batch, "MiniLM pairs") <= TOL


def test_sdpa_and_explicit_attention_agree(minilm):
    ours, _, tok = minilm
    batch = tok(SENTENCES, max_length=128)
    with torch.no_grad():
        fast = ours(**batch, output_hidden_states=True).hidden_states
        slow = ours.explicit_attention(True)(**batch, output_hidden_states=True).hidden_states
    ours.explicit_attention(False)
    # Compared on real tokens: the two kernels round differently, and at padding positions (whose
    # outputs nothing reads) the difference may exceed 1e-5 after a few layers.
    real = batch["attention_mask"].bool()
    diff = max(max_diff(a[real], b[real]) for a, b in zip(fast, slow))
    print(f"SDPA vs explicit attention (real tokens): max |diff| = {diff:.3g}")
    assert diff <= TOL


def test_bf16_autocast_padded_batch_is_finite(minilm):
    ours, _, tok = minilm
    batch = tok(SENTENCES, max_length=128)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = ours(**batch, output_hidden_states=True)
        logits = SequenceClassifier(ours, 3, pooling="mean")(**batch)
    assert all(torch.isfinite(h).all() for h in out.hidden_states)
    assert torch.isfinite(out.pooler_output).all() and torch.isfinite(logits).all()


# ---- 2./3. base-, large- and DistilBERT-shaped checkpoints in the hub's layouts ----------

def bert_config(**kw):
    return transformers.BertConfig(vocab_size=VOCAB, **kw)


@pytest.mark.parametrize("shape", ["base", pytest.param("large", marks=pytest.mark.slow)])
def test_legacy_bert_checkpoint(tmp_path, shape):
    kw = {} if shape == "base" else dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                         intermediate_size=4096)
    torch.manual_seed(0)
    pretraining = scramble_(transformers.BertForPreTraining(bert_config(**kw)))
    directory = write_checkpoint(tmp_path / shape, pretraining, legacy=True)
    ours = load_pretrained(directory)
    assert ours.config.num_hidden_layers == (12 if shape == "base" else 24)
    ref = transformers.BertModel.from_pretrained(directory).eval()
    assert compare_encoders(ours, ref, random_batch(VOCAB), f"bert-{shape}-shaped legacy") <= TOL


def test_distilbert_checkpoint(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.DistilBertConfig(vocab_size=VOCAB)
    directory = write_checkpoint(tmp_path / "distil", scramble_(transformers.DistilBertForMaskedLM(cfg)))
    ours = load_pretrained(directory)
    assert ours.pooler is None and ours.embeddings.token_type_embeddings is None
    ref = transformers.DistilBertModel.from_pretrained(directory).eval()
    batch = random_batch(VOCAB, pairs=False)
    assert compare_encoders(ours, ref, batch, "distilbert-shaped") <= TOL
    assert ours(**batch).pooler_output is None


# ---- 4. heads ----------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_classifier_logits_match_hf(tmp_path, family):
    torch.manual_seed(0)
    if family == "bert":
        hf_cls = transformers.BertForSequenceClassification(bert_config(num_hidden_layers=2, num_labels=3))
    else:
        hf_cls = transformers.DistilBertForSequenceClassification(
            transformers.DistilBertConfig(vocab_size=VOCAB, n_layers=2, num_labels=3))
    directory = write_checkpoint(tmp_path / family, scramble_(hf_cls))
    ours = SequenceClassifier(load_pretrained(directory), num_labels=3, pooling="cls").eval()
    # the head is new on our side: copy HF's head weights across
    head = {k: v for k, v in hf_cls.state_dict().items() if k.startswith(("classifier.", "pre_classifier."))}
    ours.load_state_dict({**ours.state_dict(), **head})
    hf_cls.eval()
    batch = random_batch(VOCAB, pairs=family == "bert")
    with torch.no_grad():
        diff = max_diff(ours(**batch), hf_cls(**batch).logits)
    print(f"{family} classifier logits: max |diff| = {diff:.3g}")
    assert diff <= TOL


def test_mean_pooling_excludes_cls_and_padding():
    enc = minibert.Bert(minibert.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                            num_attention_heads=2, intermediate_size=32)).eval()
    clf = SequenceClassifier(enc, 2, pooling="mean").eval()
    batch = {"input_ids": torch.tensor([[2, 7, 9, 0, 0]]), "attention_mask": torch.tensor([[1, 1, 1, 0, 0]])}
    with torch.no_grad():
        hidden = enc(**batch).last_hidden_state
        expected = hidden[0, 1:3].mean(0)
        assert torch.allclose(clf.features(**batch)[0], expected, atol=1e-6)


def test_new_heads_initialised_like_hf():
    enc = minibert.Bert(minibert.BertConfig(vocab_size=50, hidden_size=64, num_hidden_layers=1,
                                            num_attention_heads=2, intermediate_size=32, flavour="distilbert",
                                            type_vocab_size=0))
    clf = SequenceClassifier(enc, 4)
    for layer in (clf.pre_classifier, clf.classifier):
        assert layer.bias.abs().max() == 0
        assert abs(layer.weight.std().item() - 0.02) < 0.005


# ---- 6. tokenizer ------------------------------------------------------------------------

def test_tokenizer_matches_hf_fast_tokenizer(minilm_dir, tmp_path):
    ref = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    vocab_only = tmp_path / "vocab_only"
    vocab_only.mkdir()
    for f in ("vocab.txt", "tokenizer_config.json", "config.json"):
        shutil.copy(minilm_dir / f, vocab_only / f)
    for directory in (minilm_dir, vocab_only):
        tok = load_tokenizer(directory)
        for max_length in (128, 12):  # 12 truncates most sentences, and pairs longest-first
            ours = tok(SENTENCES, max_length=max_length)
            theirs = ref(SENTENCES, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            for key in ("input_ids", "attention_mask", "token_type_ids"):
                assert torch.equal(ours[key], theirs[key]), (directory, key, max_length)
            a, b = [p[0] for p in PAIRS], [p[1] for p in PAIRS]
            ours = tok(a, b, max_length=max_length)
            theirs = ref(a, b, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            for key in ("input_ids", "attention_mask", "token_type_ids"):
                assert torch.equal(ours[key], theirs[key]), (directory, "pairs", key, max_length)


# ---- 7. save_pretrained round trip -------------------------------------------------------

def test_save_pretrained_loads_in_transformers(minilm, tmp_path):
    ours, _, tok = minilm
    save_pretrained(ours, tmp_path / "enc")
    ref = transformers.BertModel.from_pretrained(tmp_path / "enc").eval()
    batch = tok(SENTENCES, max_length=64)
    assert compare_encoders(ours, ref, batch, "saved encoder") <= TOL
    again = load_pretrained(tmp_path / "enc")
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), again.state_dict().values()))


def test_saved_classifier_loads_in_transformers(tmp_path):
    torch.manual_seed(0)
    hf = scramble_(transformers.DistilBertForMaskedLM(transformers.DistilBertConfig(vocab_size=VOCAB, n_layers=2)))
    enc = load_pretrained(write_checkpoint(tmp_path / "src", hf))
    clf = SequenceClassifier(enc, 3).eval()
    save_pretrained(clf, tmp_path / "clf", label_names=["a", "b", "c"])
    ref = transformers.DistilBertForSequenceClassification.from_pretrained(tmp_path / "clf").eval()
    assert ref.config.id2label[2] == "c"
    batch = random_batch(VOCAB, pairs=False)
    loaded = minibert.load_classifier(tmp_path / "clf")
    with torch.no_grad():
        assert max_diff(clf(**batch), ref(**batch).logits) <= TOL
        assert torch.equal(clf(**batch), loaded(**batch))
    assert loaded.label_names == ["a", "b", "c"]
