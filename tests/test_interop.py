"""Every saved classifier either loads in transformers with the same logits, or transformers visibly cannot
load its head (issue 14): never a [CLS]-pooled model silently carrying a mean-pooled head's weights."""
import json
import os

import pytest
import torch
from helpers import max_diff, scramble_

import minibert
from minibert import Bert, BertConfig, SequenceClassifier, load_pretrained, save_pretrained
from minibert.training import rundir

transformers = pytest.importorskip("transformers")
TOL = 1e-5
SMALL = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             max_position_embeddings=64)
KINDS = ["bert", "distilbert", "minilm"]


def encoder_of(kind, minilm_dir):
    if kind == "minilm":
        return load_pretrained(minilm_dir)
    torch.manual_seed(0)
    cfg = BertConfig(flavour=kind, type_vocab_size=2 if kind == "bert" else 0, **SMALL)
    return scramble_(Bert(cfg)).eval()


def batch_for(enc):
    """A padded batch (lengths 12, 9, 4, 2) with two segments where the model has token types."""
    g = torch.Generator().manual_seed(1)
    mask = (torch.arange(12)[None] < torch.tensor([12, 9, 4, 2])[:, None]).long()
    batch = {"input_ids": torch.randint(5, 100, (4, 12), generator=g) * mask, "attention_mask": mask}
    if enc.config.type_vocab_size > 0:
        batch["token_type_ids"] = ((torch.arange(12)[None] >= 3) & mask.bool()).long()
    return batch


def saved(kind, pooling, minilm_dir, tmp_path):
    clf = scramble_(SequenceClassifier(encoder_of(kind, minilm_dir), 3, pooling=pooling), seed=1).eval()
    return clf, save_pretrained(clf, tmp_path / f"{kind}-{pooling}", label_names=["neg", "neu", "pos"])


@pytest.mark.parametrize("kind", KINDS)
def test_cls_classifier_gives_the_same_logits_in_transformers(kind, minilm_dir, tmp_path):
    clf, directory = saved(kind, "cls", minilm_dir, tmp_path)
    ref, info = transformers.AutoModelForSequenceClassification.from_pretrained(directory, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert ref.config.id2label[2] == "pos"
    batch = batch_for(clf.encoder)
    with torch.no_grad():
        diff = max_diff(clf(**batch), ref.eval()(**batch).logits)
    print(f"{kind} cls: transformers logits max |diff| = {diff:.3g}")
    assert diff <= TOL


@pytest.mark.parametrize("kind", KINDS)
def test_mean_classifier_loads_as_an_encoder_and_transformers_reports_the_head_missing(kind, minilm_dir, tmp_path):
    clf, directory = saved(kind, "mean", minilm_dir, tmp_path)
    enc, info = transformers.AutoModel.from_pretrained(directory, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    batch = batch_for(clf.encoder)
    with torch.no_grad():
        ours = clf.encoder(**batch, output_hidden_states=True).hidden_states
        theirs = enc.eval()(**batch, output_hidden_states=True).hidden_states
    diff = max(max_diff(a, b) for a, b in zip(ours, theirs))
    print(f"{kind} mean: AutoModel hidden states max |diff| = {diff:.3g}")
    assert len(ours) == len(theirs) and diff <= TOL
    # the loud refusal: transformers builds its [CLS] head from scratch and says so
    _, info = transformers.AutoModelForSequenceClassification.from_pretrained(directory, output_loading_info=True)
    assert {"classifier.weight", "classifier.bias"} <= set(info["missing_keys"]), info


@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("kind", KINDS)
def test_load_classifier_round_trips_exactly(kind, pooling, minilm_dir, tmp_path):
    clf, directory = saved(kind, pooling, minilm_dir, tmp_path)
    loaded = minibert.load_classifier(directory)
    assert loaded.pooling == pooling and loaded.label_names == ["neg", "neu", "pos"]
    ours, theirs = clf.state_dict(), loaded.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    batch = batch_for(clf.encoder)
    with torch.no_grad():
        assert torch.equal(clf(**batch), loaded(**batch))


def test_switching_pooling_in_one_folder_leaves_no_stale_head(tmp_path):
    clf = SequenceClassifier(encoder_of("bert", None), 3, pooling="mean").eval()
    save_pretrained(clf, tmp_path / "m")
    cls = SequenceClassifier(clf.encoder, 3, pooling="cls").eval()
    save_pretrained(cls, tmp_path / "m")
    loaded = minibert.load_classifier(tmp_path / "m")
    assert loaded.pooling == "cls" and torch.equal(loaded.classifier.weight, cls.classifier.weight)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_saved_files_are_world_readable_and_no_temp_files_remain(pooling, tmp_path):
    old = os.umask(0o022)
    try:
        clf = SequenceClassifier(encoder_of("distilbert", None), 2, pooling=pooling)
        directory = save_pretrained(clf, tmp_path / "m")
        save_pretrained(clf.encoder, tmp_path / "enc")
    finally:
        os.umask(old)
    files = [*directory.iterdir(), *(tmp_path / "enc").iterdir()]
    assert {f.name for f in files} >= {"config.json", "model.safetensors"}
    assert {f.name: oct(f.stat().st_mode & 0o777) for f in files} == {f.name: "0o644" for f in files}


def test_config_json_is_replaced_atomically(tmp_path, monkeypatch):
    """A crash while writing config.json leaves the previous one whole."""
    clf = SequenceClassifier(encoder_of("bert", None), 2)
    directory = save_pretrained(clf, tmp_path / "m")
    before = (directory / "config.json").read_text()

    def crash(path, obj):
        with rundir.atomic(path) as tmp:
            tmp.write_text('{"model_type": "be')  # half a file, then the process dies
            raise KeyboardInterrupt

    import minibert.checkpoint as checkpoint
    monkeypatch.setattr(checkpoint, "_write_json", crash)
    with pytest.raises(KeyboardInterrupt):
        save_pretrained(clf, directory)
    assert (directory / "config.json").read_text() == before
    assert json.loads(before)["minibert_pooling"] == "cls"
