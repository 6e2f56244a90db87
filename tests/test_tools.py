"""The verifier and reader tools: parity report, weight download, guided trace; and their bad input."""
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from helpers import TOKENIZER_FILES, tiny_checkpoint

import minibert
from minibert.checkpoint import load_pretrained
from minibert.model import attention_bias
from minibert.tools import download, parity, trace

NEEDED = {"config.json", "model.safetensors", *TOKENIZER_FILES}


def run(main, argv, capsys):
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc, err, *fragments):
    """Exit status 2 and one `error: ...` line last on stderr (after any progress lines), no traceback."""
    assert rc == 2
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error: ") and "Traceback" not in err, err
    for f in fragments:
        assert f in lines[-1]


# ---- parity --------------------------------------------------------------------------------

def test_parity_on_minilm_passes_with_one_row_per_layer(minilm_dir, capsys):
    rc, out, _ = run(parity.main, [str(minilm_dir), "--text", "Parity holds on my text too.",
                                   "--pair", "And on its partner."], capsys)
    assert rc == 0, out
    rows = [line.split()[0] + (" " + line.split()[1] if line.startswith("layer") else "")
            for line in out.splitlines() if line.endswith((" ok", " FAIL"))]
    assert rows == ["embeddings", *[f"layer {i}" for i in range(1, 7)], "pooler", "logits"]
    assert "tokenizer: identical" in out and "PASS" in out
    assert "4 pairs" in out  # the built-in three and the user's


def test_parity_fails_and_names_the_layer_broken_on_minibert_side(minilm_dir):
    model = load_pretrained(minilm_dir)
    with torch.no_grad():
        model.layers[3].ffn_norm.weight[0] += 0.05  # only minibert's copy: the file both sides read is untouched
    report = parity.compare(minilm_dir, model=model)
    assert not report["passed"]
    assert report["failed"][0] == "layer 4"
    ok = {r["name"]: r["ok"] for r in report["rows"]}
    assert ok["embeddings"] and ok["layer 1"] and ok["layer 2"] and ok["layer 3"]
    assert "first divergence at layer 4" in parity.format_report(report)


def test_parity_distilbert_copies_the_whole_head_and_bf16_json(minilm_dir, tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path / "distil", minilm_dir, flavour="distilbert")
    report = parity.compare(ckpt)
    assert report["passed"], parity.format_report(report)
    assert [r["name"] for r in report["rows"]] == ["embeddings", "layer 1", "layer 2", "logits"]  # no pooler
    rc, out, _ = run(parity.main, [str(ckpt), "--dtype", "bf16", "--json"], capsys)
    report = json.loads(out)
    assert rc == 0 and report["dtype"] == "bf16" and report["tol"] == parity.DEFAULT_TOL["bf16"]


def test_parity_without_transformers_says_how_to_install(minilm_dir, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    rc, _, err = run(parity.main, [str(minilm_dir)], capsys)
    assert_one_line_error(rc, err, "pip install -e '.[test]'")


# ---- download, against a local fake of the hub ---------------------------------------------

class FakeHub:
    """huggingface_hub's list_repo_files / hf_hub_download, serving folders on disk by repo id.

    Like the real client it keeps a file already downloaded to local_dir unless force_download.
    `fail_on` makes the next request for that file break mid-way, as a dropped connection does.
    """

    def __init__(self, repos: dict):
        self.repos, self.requested, self.copied, self.fail_on = repos, [], [], None

    def list_repo_files(self, repo_id, **kwargs):
        if repo_id not in self.repos:
            raise ConnectionError("[Errno 111] Connection refused")
        root = self.repos[repo_id]
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    def get_hf_file_metadata(self, url, **kwargs):
        """The one quick request download() makes first: fails at once for a repo the hub does not hold."""
        if not any(f"/{repo_id}/" in url for repo_id in self.repos):
            raise ConnectionError("[Errno 111] Connection refused")

    def hf_hub_download(self, repo_id, filename, local_dir, force_download=False, **kwargs):
        self.requested.append((filename, force_download))
        dest = Path(local_dir) / filename
        if dest.is_file() and not force_download:
            return str(dest)
        if filename == self.fail_on:
            self.fail_on = None
            raise ConnectionError("connection reset by peer")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.repos[repo_id] / filename, dest)
        self.copied.append(filename)
        return str(dest)


@pytest.fixture
def hub(minilm_dir, tmp_path, monkeypatch):
    """A fake hub holding a tiny checkpoint as bert-base-uncased and as owner/tiny, plus files minibert skips."""
    repo = tiny_checkpoint(tmp_path / "hub" / "tiny", minilm_dir)
    for extra in ("README.md", "pytorch_model.bin", "tf_model.h5", "onnx/model.onnx"):
        (repo / extra).parent.mkdir(exist_ok=True)
        (repo / extra).write_bytes(b"not needed")
    fake = FakeHub({"bert-base-uncased": repo, "owner/tiny": repo})
    import huggingface_hub
    monkeypatch.setattr(huggingface_hub, "list_repo_files", fake.list_repo_files)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake.hf_hub_download)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", fake.get_hf_file_metadata)
    monkeypatch.setenv("MINIBERT_WEIGHTS", str(tmp_path / "weights"))
    return fake


def test_download_fetches_exactly_the_needed_files_and_presets_then_load_offline(hub, tmp_path, capsys):
    rc, out, _ = run(download.main, ["base"], capsys)
    assert rc == 0 and "base: ok" in out
    assert {f for f, _ in hub.requested} == NEEDED
    assert sorted(p.name for p in (tmp_path / "weights" / "base").iterdir() if p.is_file()) == sorted(NEEDED)
    hub.repos.clear()  # the hub is gone: loading by preset name must not need it
    enc = minibert.load_pretrained("base")
    tok = minibert.load_tokenizer("base")
    batch = tok(["offline now"])
    assert enc(**batch).last_hidden_state.shape == (1, batch["input_ids"].shape[1], 32)


def test_download_resumes_after_an_interruption(hub, tmp_path, capsys):
    hub.fail_on = "model.safetensors"
    rc, _, err = run(download.main, ["owner/tiny"], capsys)
    assert_one_line_error(rc, err, "could not fetch 'owner/tiny'")
    target = tmp_path / "weights" / "owner--tiny"
    assert (target / "config.json").is_file() and not (target / "model.safetensors").exists()
    hub.copied.clear()
    rc, out, _ = run(download.main, ["owner/tiny"], capsys)
    assert rc == 0
    assert hub.copied == ["model.safetensors"]  # what was there is kept, only the rest is fetched
    assert minibert.load_pretrained(target).config.num_hidden_layers == 2


def test_download_refetches_weights_that_do_not_load(hub, tmp_path, capsys):
    target = tmp_path / "weights" / "base"
    target.mkdir(parents=True)
    whole = (hub.repos["bert-base-uncased"] / "model.safetensors").read_bytes()
    (target / "model.safetensors").write_bytes(whole[: len(whole) // 2])  # a copy cut short
    rc, out, err = run(download.main, ["base"], capsys)
    assert rc == 0, err
    assert ("model.safetensors", True) in hub.requested
    assert (target / "model.safetensors").read_bytes() == whole
    rc, out, _ = run(download.main, ["--list"], capsys)
    assert rc == 0 and "base/" in out and "model.safetensors" in out and "KB" in out


# ---- trace ---------------------------------------------------------------------------------

def test_trace_prints_every_layer(minilm_dir, capsys):
    rc, out, _ = run(trace.main, [str(minilm_dir), "--text", "The cat sat on the mat."], capsys)
    assert rc == 0
    assert "tokens (9): [CLS]:101 the:1996 cat:4937" in out
    for i in range(1, 7):
        assert f"layer {i}/6\n" in out
    assert out.count("softmax(QK^T/sqrt(d)) (1, 12, 9, 9)") == 6
    assert out.count("up (1, 9, 1536)") == 6
    assert "corrupted" not in out


def test_trace_with_corruption_marks_the_bottom_two_layers_and_reports_the_rest(minilm_dir, capsys):
    rc, out, _ = run(trace.main, [str(minilm_dir), "--text", "The cat sat on the mat.", "--corrupt", "bottom:2"],
                     capsys)
    assert rc == 0
    blocks = out.split("\nlayer ")[1:]
    assert len(blocks) == 6
    assert [b.splitlines()[0].endswith("<- corrupted") for b in blocks] == [True, True] + [False] * 4
    for block in blocks:
        (_, side, clean), (_, other, broken) = [line.split(None, 2) for line in block.splitlines()
                                                if line.startswith("  |h|")]
        assert (side, other) == ("clean", "corrupted") and clean != broken
        assert "cos(clean, corrupted)" in block


def test_trace_attention_weights_are_the_ones_the_model_uses(minilm_dir):
    model = load_pretrained(minilm_dir)
    attn = model.layers[0].attention
    x = torch.randn(2, 5, model.config.hidden_size)
    mask = attention_bias(torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]), torch.float32)  # (B, 1, 1, T)
    with torch.no_grad():
        w = trace.attention_weights(attn, x, mask)  # (B, nh, T, T)
        v = attn.qkv(x)[..., 2 * 384:].view(2, 5, 12, 32).transpose(1, 2)
        y = attn.proj((w @ v).transpose(1, 2).reshape(2, 5, 384))
        torch.testing.assert_close(y, attn(x, mask), atol=1e-5, rtol=0)
    assert torch.allclose(w.sum(-1), torch.ones(2, 12, 5))
    assert float(w[1, :, :, 3:].abs().max()) == 0.0  # padding gets no attention


# ---- bad input -----------------------------------------------------------------------------

@pytest.mark.parametrize("main", [parity.main, trace.main, download.main], ids=["parity", "trace", "download"])
def test_unknown_model_is_a_one_line_error(main, tmp_path, capsys):
    rc, _, err = run(main, [str(tmp_path / "no-such-model")], capsys)
    assert_one_line_error(rc, err, "no-such-model")


@pytest.mark.parametrize("main", [parity.main, trace.main], ids=["parity", "trace"])
def test_unreachable_hub_is_a_one_line_error(main, hub, capsys):
    rc, _, err = run(main, ["someone/not-on-this-hub"], capsys)
    assert_one_line_error(rc, err, "could not fetch 'someone/not-on-this-hub'", "Connection refused")


def test_tol_must_be_a_number(minilm_dir, capsys):
    rc, _, err = run(parity.main, [str(minilm_dir), "--tol", "tiny"], capsys)
    assert_one_line_error(rc, err, "--tol", "'tiny'")


def test_trace_bad_corruption_spec(minilm_dir, capsys):
    rc, _, err = run(trace.main, [str(minilm_dir), "--corrupt", "bottom:99"], capsys)
    assert_one_line_error(rc, err, "bottom:99")
