"""The benchmark's correctness part, on a tiny config: equal work on both sides, and every row in the JSON."""
import json
import math

import pytest
import torch

from minibert.data import encoding
from minibert.tools import bench, bench_data

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def result(data_root, minilm_dir):
    s = bench.Settings(model="tiny", batch=2, length=16, sst2_batch=8, repeats=1, warmup=0,
                       epoch_examples={"sst2": 24, "imdb": 4}, epoch_batch=4,
                       data_dir=str(data_root), tokenizer=str(minilm_dir))
    return bench.run(s, log=lambda *_: None)


def test_json_has_every_row(result, tmp_path):
    names = [r["row"] for r in result["rows"]]
    expected = ["encoder forward 2x16", "clf forward sst2 8", "train step 2x16", "train step sst2 8",
                "epoch sst2 x24 (ref padded to 128)", "epoch sst2 x24 (ref group_by_length)",
                "epoch imdb x4 (ref padded to 512)", "epoch imdb x4 (ref group_by_length)"]
    assert len(names) == len(expected)
    assert all(n.startswith(e) for n, e in zip(names, expected)), names
    for r in result["rows"]:
        for key in ("minibert", "reference", "ratio", "minibert_tflops", "reference_tflops",
                    "minibert_mfu", "reference_mfu"):
            assert math.isfinite(r[key]) and r[key] > 0, (r["row"], key)
        assert r["ratio"] == pytest.approx(r["minibert"] / r["reference"])
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(result, default=str))
    assert json.loads(path.read_text())["ceiling_tflops"] > 0
    assert "epoch" in bench.table(result) and "ratio" in bench.table(result)


def test_dispatch_rows_count_kernels_and_no_minibert_sync(result):
    """The dispatch rows ([CLS], mean, sentence pairs): minibert's training step waits on the host 0 times."""
    rows = {d["row"].split(" (")[0]: d for d in result["dispatch"]}
    assert set(rows) == {"[CLS] sst2 8", "mean sst2 8", "[CLS] mrpc pairs 8"}
    for name, d in rows.items():
        assert d["minibert_syncs"] == 0 and d["minibert_sync_ops"] == {}, (name, d)
        assert d["minibert_kernels"] > 0 and d["reference_kernels"] > 0, (name, d)
        assert d["kernel_ratio"] == pytest.approx(d["minibert_kernels"] / d["reference_kernels"])
        assert d["minibert_kernels"] < d["reference_kernels"], (name, d)
    lines = bench.table(result).splitlines()
    assert sum(line.startswith(("kernels/step", "host syncs/step")) for line in lines) == 2 * len(rows)


def test_both_systems_compute_the_same_thing(result):
    """Logits, loss and gradients of the timed batches agree: the ratios compare equal work."""
    assert set(result["checks"]) == {r["row"] for r in result["rows"] if not r["row"].startswith("epoch")}
    for name, c in result["checks"].items():
        assert c["logits"] <= 1e-5 and c["loss"] <= 1e-5, (name, c)
        assert c["hidden_real_tokens"] <= 1e-5 and c["grad_rel"] <= 1e-5, (name, c)


def test_epoch_batchings_hold_the_same_examples(data_root, minilm_dir):
    tok = bench_data.load_tokenizer_for_bench(str(minilm_dir))
    split, max_length = bench_data.real_split("sst2", data_root, 40, seed=0)
    enc = encoding.encode(split, tok, max_length)
    ours = bench_data.minibert_batches(enc, 8, seed=0, pad_id=tok.pad_id)
    grouped = bench_data.reference_batches(enc, 8, None, seed=0, pad_id=tok.pad_id)
    at_max = bench_data.reference_batches(enc, 8, max_length, seed=0, pad_id=tok.pad_id)
    assert all(b["input_ids"].shape[1] == max_length for b in at_max)
    for batches in (ours, grouped, at_max):
        assert sum(int(b["attention_mask"].sum()) for b in batches) == enc.lengths.sum()
        tokens = torch.cat([b["input_ids"][b["attention_mask"].bool()] for b in batches])
        assert sorted(tokens.tolist()) == sorted(t for ids in enc.ids for t in ids)


def test_model_flops_formula():
    cfg = bench.BertConfig(vocab_size=10, hidden_size=2, num_hidden_layers=1, num_attention_heads=1,
                           intermediate_size=4)
    assert bench.matmul_params(cfg) == 4 * 2 * 2 + 2 * 2 * 4  # qkv + proj, up + down
    # one sequence of 3 tokens: 2N per token plus QK^T and AV (2 * 2 * T * H per token)
    assert bench.model_flops(cfg, [3], training=False) == 2 * 32 * 3 + 4 * 1 * 2 * 3 * 3
    assert bench.model_flops(cfg, [3, 1], training=True) == 3 * (2 * 32 * 4 + 4 * 2 * (9 + 1))
