"""The dataset layer on the real files in ../shared/data: readers, label mapping, splits, batching, errors."""
import csv
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from huggingface_hub import constants

from minibert.data import datasets, encoding
from minibert.data.datasets import DATASETS, load_dataset
from minibert.data.encoding import batch_indices, batches, encode, padding_fraction
from minibert.data.readers import progress
from minibert.tokenizer import tokenizer_from_dir

# Row counts per split file, from ../shared/data/README.md. imdb/test.csv: the README says 4,362 but the
# file holds 4,363 rows (ids 0..4362, no header), which is what any CSV reader finds.
ROWS = {
    "sst2": {"train": 67349, "validation": 872},
    "mrpc": {"train": 3668, "validation": 408},
    "rte": {"train": 2490, "validation": 277},
    "emotion": {"train": 16000, "validation": 2000, "test": 2000},
    "tfnt": {"train": 16990, "validation": 4117},
    "ag_news": {"test": 7600},
    "dbpedia": {"validation": 5000, "test": 5000},
    "imdb": {"test": 4363},
}


@pytest.fixture(scope="module")
def tok(minilm_dir):
    return tokenizer_from_dir(minilm_dir)


@pytest.fixture(scope="module")
def sst2(data_root):
    return load_dataset("sst2", data_root / "sst2")


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message
    return message


# ---------------------------------------------------------------------------------------------------- reading


@pytest.mark.parametrize("name", sorted(ROWS))
def test_every_folder_loads_with_its_row_counts(data_root, name):
    spec = DATASETS[name]
    splits = datasets.read_splits(spec, data_root / name)
    assert {s: len(v) for s, v in splits.items()} == ROWS[name]
    for split in splits.values():
        assert all(0 <= y < len(spec.label_names) for y in split.labels)
        assert len(split.texts) == len(split) and all(isinstance(t, str) and t for t in split.texts)
        assert (split.pairs is not None) == spec.pair


@pytest.mark.parametrize("name", ["imdb", "dbpedia"])
def test_samples_load(data_root, name):
    sample = datasets.read_file(data_root / name / "sample.jsonl", name)
    assert len(sample) == 100 and sum(sample.class_balance().values()) == 100


def test_parent_folder_finds_the_dataset_subfolder(data_root):
    assert len(datasets.read_splits(DATASETS["rte"], data_root)["train"]) == 2490


def test_ag_news_one_based_ids_map_to_hub_order(data_root):
    test = datasets.read_splits(DATASETS["ag_news"], data_root / "ag_news")["test"]
    with open(data_root / "ag_news" / "test.csv", newline="") as f:
        raw = [int(r["label"]) for r in csv.DictReader(f)]
    assert test.labels == [y - 1 for y in raw]  # 1 World .. 4 Sci/Tech -> 0..3
    assert test.class_balance() == {"World": 1900, "Sports": 1900, "Business": 1900, "Sci/Tech": 1900}
    assert test.texts[0].startswith("Fears for T N pension after talks Unions representing")  # title + description


def test_emotion_words_map_to_hub_ids(data_root):
    train = datasets.read_splits(DATASETS["emotion"], data_root / "emotion")["train"]
    lines = (data_root / "emotion" / "train.txt").read_text().splitlines()[1:]
    order = ["sadness", "joy", "love", "anger", "fear", "surprise"]
    assert train.labels == [order.index(line.rsplit(";", 1)[1]) for line in lines]


def test_dbpedia_ids_map_by_name_not_position(data_root):
    test = datasets.read_splits(DATASETS["dbpedia"], data_root / "dbpedia")["test"]
    hub = DATASETS["dbpedia"].label_names
    # meta.txt: 1 Artist, 5 Village, 3 OfficeHolder; the hub's order puts them at 2, 8, 4
    assert [hub[y] for y in test.labels[:3]] == ["Artist", "Village", "OfficeHolder"]
    assert test.texts[0].startswith("Thomas E. Breitenbach")
    sample = datasets.read_file(data_root / "dbpedia" / "sample.jsonl", "dbpedia")
    assert hub[sample.labels[0]] == "WrittenWork"  # "written work"
    assert sample.texts[0].startswith("The April Witch The April Witch is a fantasy")  # title + content


def test_tfnt_ids_keep_their_meaning(data_root):
    train = datasets.read_splits(DATASETS["tfnt"], data_root / "tfnt")["train"]
    assert train.labels == pq.read_table(data_root / "tfnt" / "train.parquet")["label"].to_pylist()
    names = (data_root / "tfnt" / "classes.txt").read_text().split("\n")[:20]
    assert list(DATASETS["tfnt"].label_names) == names


def test_mrpc_reads_the_glue_tsv_with_its_bom(data_root):
    train = datasets.read_splits(DATASETS["mrpc"], data_root / "mrpc")["train"]
    assert train.labels[:2] == [1, 0]
    assert train.texts[0].startswith("Amrozi accused his brother")
    assert train.pairs[0].startswith("Referring to him as only")


@pytest.mark.parametrize("name", ["mrpc", "rte"])
def test_pair_tasks_have_both_segments(data_root, tok, name):
    ds = load_dataset(name, data_root / name, limit=64)
    enc = encode(ds.train, tok, ds.spec.max_length)
    batch = next(batches(enc, 64, shuffle=False))
    types = batch["token_type_ids"]
    assert (types.max(dim=1).values == 1).all() and (types[:, 0] == 0).all()
    assert ((batch["input_ids"] == tok.sep_id).sum(dim=1) == 2).all()
    assert (types * (1 - batch["attention_mask"])).sum() == 0  # padding is segment 0


# ---------------------------------------------------------------------------------------------------- splits


def test_paper_split_sizes_no_overlap_and_seeded(data_root, sst2):
    assert (len(sst2.train), len(sst2.test)) == (56000, 12000)
    assert not set(sst2.train.texts) & set(sst2.test.texts)  # duplicates never straddle train and test
    again = load_dataset("sst2", data_root / "sst2", seed=0)
    other = load_dataset("sst2", data_root / "sst2", seed=1)
    assert again.train.texts == sst2.train.texts and again.test.labels == sst2.test.labels
    assert other.test.texts != sst2.test.texts
    balance = sst2.test.class_balance()
    assert sum(balance.values()) == 12000 and min(balance.values()) > 4000


def test_small_local_sample_keeps_the_paper_ratio_and_says_so(data_root):
    ds = load_dataset("ag_news", data_root / "ag_news")
    assert (len(ds.train), len(ds.test)) == (6756, 844)  # 7600 at 48:6
    assert any("smaller than the paper's 48000/6000" in n for n in ds.notes)


def test_official_splits_and_glue_on_validation(data_root):
    ds = load_dataset("emotion", data_root / "emotion", split="official")
    assert (len(ds.train), len(ds.test)) == (16000, 2000)
    for split in ("paper", "official"):  # MRPC and RTE: official in both modes
        rte = load_dataset("rte", data_root / "rte", split=split)
        assert (len(rte.train), len(rte.test)) == (2490, 277)


def test_limit_caps_both_splits(data_root):
    ds = load_dataset("tfnt", data_root / "tfnt", split="official", limit=50)
    assert (len(ds.train), len(ds.test)) == (50, 50)
    assert len(set(ds.train.labels)) > 5  # a random subset, not the label-sorted head of the file


# ---------------------------------------------------------------------------------------------------- batching


def test_encode_caches_to_disk(tmp_path, sst2, tok):
    test = sst2.test.take(range(500))
    first = encode(test, tok, 128, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    again = encode(test, tok, 128, cache_dir=tmp_path)
    assert again.ids == first.ids and again.type_ids == first.type_ids and again.labels == first.labels
    assert (again.lengths == first.lengths).all()
    short = encode(test, tok, 8, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 2 and short.lengths.max() == 8


def test_length_grouping_cuts_padding_and_sees_every_example_once(sst2, tok):
    enc = encode(sst2.train, tok, 128)
    grouped = padding_fraction(enc, 32, group_by_length=True)
    plain = padding_fraction(enc, 32, group_by_length=False)
    assert grouped < 0.1 < 0.5 < plain  # measured: ~4% vs ~67% on SST-2
    for kwargs in ({}, {"group_by_length": False}, {"shuffle": False}):
        index = np.concatenate(batch_indices(enc.lengths, 32, **kwargs))
        assert np.array_equal(np.sort(index), np.arange(len(enc)))


def test_batches_pad_to_the_longest_and_are_reproducible(sst2, tok):
    enc = encode(sst2.test, tok, 128)
    seen = 0
    for batch in batches(enc, 64, seed=3, epoch=1, pad_id=tok.pad_id):
        mask = batch["attention_mask"]
        assert batch["input_ids"].shape == mask.shape == batch["token_type_ids"].shape
        assert mask[:, -1].any() and (batch["input_ids"][mask == 0] == tok.pad_id).all()
        seen += len(batch["labels"])
    assert seen == len(enc)
    same = [b["labels"] for b in batches(enc, 64, seed=3, epoch=1)]
    again = [b["labels"] for b in batches(enc, 64, seed=3, epoch=1)]
    other = [b["labels"] for b in batches(enc, 64, seed=3, epoch=2)]
    assert all((a == b).all() for a, b in zip(same, again)) and len(same) == len(other)
    assert not all(len(a) == len(b) and (a == b).all() for a, b in zip(same, other))
    lengths = [int(b["attention_mask"].sum(1).max()) for b in batches(enc, 64, shuffle=False)]
    assert lengths == sorted(lengths, reverse=True)  # evaluation: longest first


# ---------------------------------------------------------------------------------------------------- the hub


def _fake_hub(tmp_path, monkeypatch, files: dict[str, str]):
    """Serve `files` ({hub path: local file}) through hf_hub_download and record what was asked for."""
    asked = []

    def download(repo_id, filename, repo_type=None, revision=None):
        asked.append((repo_id, filename, repo_type))
        dest = tmp_path / repo_id / filename
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(files[filename], dest)
        return str(dest)

    monkeypatch.setattr(datasets, "hf_hub_download", download)
    return asked


def test_hub_glue_layout(tmp_path, monkeypatch, data_root):
    # the shared RTE parquet files are byte-identical to the hub's nyu-mll/glue rte/*.parquet
    asked = _fake_hub(tmp_path, monkeypatch, {
        "rte/train-00000-of-00001.parquet": data_root / "rte" / "train.parquet",
        "rte/validation-00000-of-00001.parquet": data_root / "rte" / "validation.parquet"})
    ds = load_dataset("rte")
    assert asked == [("nyu-mll/glue", "rte/train-00000-of-00001.parquet", "dataset"),
                     ("nyu-mll/glue", "rte/validation-00000-of-00001.parquet", "dataset")]
    assert (len(ds.train), len(ds.test)) == (2490, 277)


def test_hub_csv_and_parquet_layouts(tmp_path, monkeypatch, data_root):
    tfnt = datasets.read_splits(DATASETS["tfnt"], data_root / "tfnt")
    imdb = datasets.read_splits(DATASETS["imdb"], data_root / "imdb")["test"]
    files = {}
    for split, hub_name in (("train", "topic_train.csv"), ("validation", "topic_valid.csv")):
        files[hub_name] = tmp_path / hub_name
        with open(files[hub_name], "w", newline="") as f:  # the hub's CSV: text,label with ids 0..19
            csv.writer(f).writerows([("text", "label")] + list(zip(tfnt[split].texts, tfnt[split].labels)))
    for split in ("train", "test"):
        hub_name = f"plain_text/{split}-00000-of-00001.parquet"
        files[hub_name] = tmp_path / f"imdb-{split}.parquet"
        pq.write_table(pa.table({"text": imdb.texts, "label": imdb.labels}), files[hub_name])
    asked = _fake_hub(tmp_path / "hub", monkeypatch, files)
    assert len(load_dataset("tfnt", split="official").test) == 4117
    ds = load_dataset("imdb")
    assert (len(ds.train), len(ds.test)) == (7272, 1454)  # 2 x 4363 pooled, 25:5
    assert asked == [("zeroshot/twitter-financial-news-topic", "topic_train.csv", "dataset"),
                     ("zeroshot/twitter-financial-news-topic", "topic_valid.csv", "dataset"),
                     ("stanfordnlp/imdb", "plain_text/train-00000-of-00001.parquet", "dataset"),
                     ("stanfordnlp/imdb", "plain_text/test-00000-of-00001.parquet", "dataset")]


def test_hub_failure_offline_says_how_to_use_data_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError) as e:
        load_dataset("sst2")
    assert "nyu-mll/glue/sst2/train-00000-of-00001.parquet" in one_line_error(e) and "--data-dir" in str(e.value)


# ---------------------------------------------------------------------------------------------------- bad input


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path.parent


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(ValueError) as e:
        load_dataset("sst3")
    assert "sst3" in one_line_error(e) and all(n in str(e.value) for n in DATASETS)


def test_folder_without_data_lists_what_it_looked_for(tmp_path):
    _write(tmp_path / "notes.md", "nothing here")
    with pytest.raises(FileNotFoundError) as e:
        load_dataset("sst2", tmp_path)
    assert "train/validation/test" in one_line_error(e) and ".parquet" in str(e.value)


def test_missing_column_names_the_columns_found(tmp_path):
    folder = _write(tmp_path / "train.csv", "review,label\ngood,1\n")
    with pytest.raises(ValueError) as e:
        load_dataset("sst2", folder, split="official")
    assert "no text column" in one_line_error(e) and "review, label" in str(e.value)
    folder = _write(tmp_path / "b" / "train.csv", "sentence,stars\ngood,1\n")
    with pytest.raises(ValueError) as e:
        load_dataset("sst2", folder, split="official")
    assert "no label column" in one_line_error(e) and "sentence, stars" in str(e.value)


def test_unknown_labels_show_offending_rows(tmp_path):
    folder = _write(tmp_path / "train.tsv", "sentence\tlabel\ngood\t1\nbad\t0\nmeh\tmaybe\nodd\t7\n")
    with pytest.raises(ValueError) as e:
        load_dataset("sst2", folder, split="official")
    assert "row 3: 'maybe'" in one_line_error(e) and "row 4: 7" in str(e.value)


def test_empty_split(tmp_path):
    folder = _write(tmp_path / "test.csv", "text,label\n")
    _write(tmp_path / "train.csv", "text,label\nim glad,joy\n")
    with pytest.raises(ValueError) as e:
        load_dataset("emotion", folder, split="official")
    assert "empty" in one_line_error(e) and "test.csv" in str(e.value)


def test_cli_prints_splits_and_fails_cleanly(data_root, minilm_dir, tmp_path, capsys):
    assert encoding.main(["rte", "--data-dir", str(data_root / "rte"), "--model", str(minilm_dir),
                      "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "train   2490  entailment 1249" in out and "padding (batch 32)" in out and "p99" in out
    assert encoding.main(["nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown dataset 'nope'") and err.count("\n") == 1


# ---------------------------------------------------------------------------------------------------- declared layouts


def test_every_layout_is_declared_and_files_match_one():
    for spec in DATASETS.values():
        assert spec.layouts and all(set(layout.text) and layout.label for layout in spec.layouts)
        assert all(bool(layout.pair) == spec.pair for layout in spec.layouts)
        widths = [len(layout.columns) for layout in spec.layouts if layout.columns]
        assert len(widths) == len(set(widths))  # a header-less file's width picks exactly one layout


def test_unknown_layout_names_the_file_the_columns_found_and_expected(tmp_path):
    folder = _write(tmp_path / "train.csv", "review,stars\ngood,1\n")
    with pytest.raises(ValueError) as e:
        load_dataset("sst2", folder, split="official")
    message = one_line_error(e)
    assert str(folder / "train.csv") in message and "found columns: review, stars" in message
    assert "expected sentence,label or text,label" in message
    folder = _write(tmp_path / "p" / "train.parquet", "")
    pq.write_table(pa.table({"premise": ["a"], "hypothesis": ["b"], "gold": [0]}), folder / "train.parquet")
    with pytest.raises(ValueError) as e:
        load_dataset("rte", folder, split="official")
    assert "found columns: premise, hypothesis, gold; expected sentence1,sentence2,label" in one_line_error(e)


def test_header_less_file_of_an_undeclared_width(tmp_path):
    folder = _write(tmp_path / "test.csv", '"1","2","a title","some content"\n')
    with pytest.raises(ValueError) as e:
        load_dataset("dbpedia", folder)
    assert "found columns: 1, 2, a title, some content" in one_line_error(e)
    assert "header-less label,title,content or header-less label,content" in str(e.value)


def test_declared_names_file_is_required(tmp_path):
    # DBPedia's 2-column mirror numbers its classes in meta.txt's order; without meta.txt it cannot be read
    folder = _write(tmp_path / "test.csv", '"1","Thomas E. Breitenbach is a painter"\n')
    with pytest.raises(FileNotFoundError) as e:
        load_dataset("dbpedia", folder)
    assert "meta.txt" in one_line_error(e) and str(folder / "test.csv") in str(e.value)
    (folder / "meta.txt").write_text("1: Artist\n2: Company\n")
    split = datasets.read_splits(DATASETS["dbpedia"], folder)["test"]
    assert [DATASETS["dbpedia"].label_names[y] for y in split.labels] == ["Artist"]


def test_one_based_layout_refuses_a_zero(tmp_path):
    folder = _write(tmp_path / "test.csv", "label,title,description\n0,a,b\n4,c,d\n")
    with pytest.raises(ValueError) as e:
        load_dataset("ag_news", folder)
    assert "row 1: 0" in one_line_error(e) and "expected ids 1..4" in str(e.value)


# ---------------------------------------------------------------------------------------------------- bad files


@pytest.mark.parametrize("name, text", [("train.tsv", "sentence\tlabel\ncaf\xe9\t1\n"),
                                        ("train.csv", "sentence,label\ncaf\xe9,1\n"),
                                        ("train.txt", "sentence;label\ncaf\xe9;1\n"),
                                        ("train.jsonl", '{"sentence": "caf\xe9", "label": 1}\n')])
def test_non_utf8_file_is_one_line_naming_file_and_fix(tmp_path, name, text):
    path = tmp_path / name
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(ValueError) as e:
        load_dataset("sst2", tmp_path, split="official")
    message = one_line_error(e)
    assert message.startswith(f"{path}: not UTF-8 text (byte 0xe9") and message.endswith("save the file as UTF-8")


def test_rows_with_empty_text_or_pair_are_dropped_with_a_note(tmp_path, capsys):
    _write(tmp_path / "validation.tsv", "sentence1\tsentence2\tlabel\na\tb\t0\n")
    folder = _write(tmp_path / "train.tsv", "sentence1\tsentence2\tlabel\na\tb\t0\n \tb\t1\nc\t\t1\nd\te\t1\n")
    ds = load_dataset("rte", folder)
    assert (ds.train.texts, ds.train.pairs, ds.train.labels) == (["a", "d"], ["b", "e"], [0, 1])
    note = f"dropped 2 of 4 rows of {folder / 'train.tsv'} whose text is empty"
    assert note in ds.notes
    assert capsys.readouterr().err == f"note: {note}\n"


# ---------------------------------------------------------------------------------------------------- the token cache


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "wrong size"])
def test_damaged_token_cache_is_rebuilt_with_a_note(tmp_path, sst2, tok, capsys, damage):
    test = sst2.test.take(range(300))
    fresh = encode(test, tok, 64, cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.npz")
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "garbage":
        path.write_text("not a cache file\n")
    else:  # a valid npz holding another split's tokens under this name
        np.savez(path, ids=np.zeros(3, np.int32), type_ids=np.zeros(3, np.int8), lengths=np.array([3]))
    capsys.readouterr()
    again = encode(test, tok, 64, cache_dir=tmp_path)
    err = capsys.readouterr().err
    assert err.startswith(f"note: token cache {path} was damaged (") and err.endswith("); rebuilding\n")
    assert err.count("\n") == 1
    assert again.ids == fresh.ids and again.type_ids == fresh.type_ids and (again.lengths == fresh.lengths).all()
    encode(test, tok, 64, cache_dir=tmp_path)  # the rebuilt file is whole: read without a note
    assert capsys.readouterr().err == "" and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_cache_write_interrupted_leaves_no_file(tmp_path, sst2, tok, monkeypatch):
    test = sst2.test.take(range(200))
    real_savez = np.savez

    def savez_then_die(f, **arrays):  # the process dies after half the bytes reached the disk
        real_savez(f, **arrays)
        f.truncate(f.tell() // 2)
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", savez_then_die)
    with pytest.raises(KeyboardInterrupt):
        encode(test, tok, 64, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []  # neither a half cache file nor a temporary one
    monkeypatch.setattr(np, "savez", real_savez)
    assert encode(test, tok, 64, cache_dir=tmp_path).ids == encode(test, tok, 64).ids
    assert len(list(tmp_path.glob("*.npz"))) == 1


# ---------------------------------------------------------------------------------------------------- progress, CLI


def test_progress_bar_on_a_terminal_only(data_root, minilm_dir, tmp_path):
    """Tokenising a large split (SST-2's 67k training sentences) takes over a second: a bar on a terminal, none
    elsewhere. The bar's one-second delay is set to 0 here, so that the 872 validation sentences show it too."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios
    script = (f"import minibert.data.readers as r; from minibert.data.encoding import encode; "
              f"from minibert.data.datasets import read_splits, DATASETS; "
              f"from minibert.tokenizer import tokenizer_from_dir; "
              f"bar = r.tqdm; r.tqdm = lambda *a, **k: bar(*a, **{{**k, 'delay': 0}}); "
              f"s = read_splits(DATASETS['sst2'], {str(data_root / 'sst2')!r})['validation']; "
              f"encode(s, tokenizer_from_dir({str(minilm_dir)!r}), 128)")
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100-column terminal
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=follower, stdout=subprocess.DEVNULL)
    os.close(follower)
    seen = b""
    while True:  # read while it runs: a full terminal buffer would block the child
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child exited and the terminal is drained
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    proc.wait(timeout=300)
    assert proc.returncode == 0 and b"tokenising sst2/validation" in seen and b"examples" in seen
    with progress(total=10) as bar:  # pytest captures stderr: not a terminal, so no bar in logs and pipes
        assert bar.disable


def test_cli_flag_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        encoding.main(["sst2", "--batch-size", "many"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: argument --batch-size: invalid int value: 'many'") and err.count("\n") == 1
