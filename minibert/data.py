"""The paper's eight datasets: a registry, hub and local readers, the paper's splits, and fast batching.

    ds = load_dataset("sst2", data_dir=None, split="paper", seed=0)     # -> Dataset(train, test, notes)
    enc = encode(ds.train, tokenizer, ds.spec.max_length, cache_dir)   # tokenise once, cached on disk
    for batch in batches(enc, 32, shuffle=True, seed=0, epoch=e): ... # dynamic padding, length grouping

Data comes from the Hugging Face Hub (`huggingface_hub.hf_hub_download`, only the labelled files) or
from a local folder of parquet / CSV / TSV / `;`-separated text / JSONL files named after their split
(train, validation, test; also dev, val, valid). Labels may be 0-based ids, 1-based ids or words; they
are always mapped to the hub's names and order, by name whenever the folder says which name an id means.

Choices worth knowing:
- DBPedia and AG News are single-text tasks: title and body are joined with a space, as the hub's
  AG News `text` column already is (DBPedia samples without a title use the content alone).
- `split="paper"` pools every labelled split, groups exact duplicate texts so a text never lands in both
  train and test, shuffles with the seed and takes Table 1's sizes. MRPC and RTE always use the official
  splits, and GLUE tasks are evaluated on validation because GLUE's test labels are hidden.
- `python -m minibert.data <name>` prints splits, class balance, token lengths and padding fractions.
"""
import argparse
import csv
import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import hf_hub_download

from .tokenizer import load_tokenizer, pad_batch

DATA_ENV = "MINIBERT_DATA"  # a folder with one sub-folder per dataset; the tests and CI point it at real samples


def default_data_root() -> Path | None:
    """The local data folder named by $MINIBERT_DATA, or None: the Hugging Face Hub."""
    root = os.environ.get(DATA_ENV)
    return Path(root).resolve() if root else None

# ----------------------------------------------------------------------------------------------------
# The registry


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: where it lives, which columns hold text and label, and the paper's split sizes."""
    name: str
    hub_repo: str
    hub_files: tuple[tuple[str, str], ...]   # (split, path in the hub repo); labelled splits only
    label_names: tuple[str, ...]             # the hub's order: label i means label_names[i]
    text_fields: tuple[tuple[str, ...], ...]  # alternatives, first fully present wins; columns joined by " "
    pair: bool = False                       # sentence-pair task (token types 0 and 1)
    pair_fields: tuple[tuple[str, ...], ...] = ()
    paper_train: int | None = None           # Table 1; None = official splits in both modes
    paper_test: int | None = None
    max_length: int = 128                    # >= 99.9% of examples untruncated (uncased WordPiece); IMDB: BERT's 512
    headerless: tuple[tuple[str, ...], ...] = ()  # column names of header-less CSVs, one layout per width
    label_aliases: tuple[tuple[str, str], ...] = ()  # other spellings of label names
    hidden_test: bool = False                # GLUE: test labels are withheld, never read the test split
    revision: str | None = None              # hub revision to pin; None = the repo's default branch


LABEL_COLUMNS = ("label", "label_name", "quality")  # "Quality" is GLUE MRPC's TSV label header
SENTIMENT_ALIASES = (("neg", "negative"), ("pos", "positive"))


def _glue(task, label_names, text_fields, pair_fields=(), max_length=128):
    files = tuple((s, f"{task}/{s}-00000-of-00001.parquet") for s in ("train", "validation"))
    return DatasetSpec(task, "nyu-mll/glue", files, label_names, text_fields, pair=bool(pair_fields),
                       pair_fields=pair_fields, max_length=max_length, hidden_test=True)


def _parquet(folder, splits):
    return tuple((s, f"{folder}/{s}-00000-of-00001.parquet") for s in splits)


DATASETS: dict[str, DatasetSpec] = {s.name: s for s in [
    DatasetSpec("sst2", "nyu-mll/glue", _parquet("sst2", ("train", "validation")), ("negative", "positive"),
                (("sentence",), ("text",)), paper_train=56000, paper_test=12000, max_length=128,
                hidden_test=True, label_aliases=SENTIMENT_ALIASES),
    DatasetSpec("imdb", "stanfordnlp/imdb", _parquet("plain_text", ("train", "test")), ("negative", "positive"),
                (("text",),), paper_train=25000, paper_test=5000, max_length=512,
                headerless=(("idx", "text", "label"), ("text", "label")), label_aliases=SENTIMENT_ALIASES),
    DatasetSpec("ag_news", "fancyzhx/ag_news", _parquet("data", ("train", "test")),
                ("World", "Sports", "Business", "Sci/Tech"), (("text",), ("title", "description")),
                paper_train=48000, paper_test=6000, max_length=256,
                headerless=(("label", "title", "description"),)),
    DatasetSpec("emotion", "dair-ai/emotion", _parquet("split", ("train", "validation", "test")),
                ("sadness", "joy", "love", "anger", "fear", "surprise"), (("text",),),
                paper_train=14000, paper_test=4000, max_length=128,
                revision="106c232c0a63f3f06ae5d80d141114a00604e969"),  # a commit whose split/ holds these files
    DatasetSpec("dbpedia", "fancyzhx/dbpedia_14", _parquet("dbpedia_14", ("train", "test")),
                ("Company", "EducationalInstitution", "Artist", "Athlete", "OfficeHolder", "MeanOfTransportation",
                 "Building", "NaturalPlace", "Village", "Animal", "Plant", "Album", "Film", "WrittenWork"),
                (("title", "content"), ("content",), ("text",)), paper_train=50000, paper_test=12000,
                max_length=256, headerless=(("label", "title", "content"), ("label", "content"))),
    DatasetSpec("tfnt", "zeroshot/twitter-financial-news-topic",
                (("train", "topic_train.csv"), ("validation", "topic_valid.csv")),
                ("Analyst Update", "Fed | Central Banks", "Company | Product News", "Treasuries | Corporate Debt",
                 "Dividend", "Earnings", "Energy | Oil", "Financials", "Currencies", "General News | Opinion",
                 "Gold | Metals | Materials", "IPO", "Legal | Regulation", "M&A | Investments", "Macro",
                 "Markets", "Politics", "Personnel Change", "Stock Commentary", "Stock Movement"),
                (("text",),), paper_train=17000, paper_test=4000, max_length=128),
    _glue("mrpc", ("not_equivalent", "equivalent"), (("sentence1",), ("#1 string",)),
          (("sentence2",), ("#2 string",))),
    _glue("rte", ("entailment", "not_entailment"), (("sentence1",),), (("sentence2",),), max_length=256),
]}


def get_spec(name: str) -> DatasetSpec:
    """The registry entry for `name`, or a ValueError that lists the known names."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


# ----------------------------------------------------------------------------------------------------
# Splits


@dataclass
class Split:
    """Labelled examples: texts (and second segments for pair tasks) with label ids in the hub's order."""
    texts: list[str]
    pairs: list[str] | None
    labels: list[int]
    label_names: tuple[str, ...] = ()
    name: str = ""  # "<dataset>/<split>", part of the token cache key

    def __len__(self) -> int:
        return len(self.labels)

    def class_balance(self) -> dict[str, int]:
        """Examples per label name, in label order (absent classes count 0)."""
        counts = np.bincount(np.asarray(self.labels, dtype=np.int64), minlength=len(self.label_names))
        return {n: int(c) for n, c in zip(self.label_names, counts)}

    def take(self, index) -> "Split":
        """A new Split of the examples at `index`, in that order."""
        index = [int(i) for i in index]
        pairs = None if self.pairs is None else [self.pairs[i] for i in index]
        return Split([self.texts[i] for i in index], pairs, [self.labels[i] for i in index],
                     self.label_names, self.name)


@dataclass
class Dataset:
    """A train and a test Split of one dataset, plus remarks on how they were made."""
    spec: DatasetSpec
    train: Split
    test: Split
    notes: list[str]

    @property
    def label_names(self) -> list[str]:
        return list(self.spec.label_names)


# ----------------------------------------------------------------------------------------------------
# Reading files into columns

SPLIT_ALIASES = {"train": "train", "validation": "validation", "valid": "validation", "val": "validation",
                 "dev": "validation", "test": "test"}
SPLIT_ORDER = ("train", "validation", "test")
EXTENSIONS = (".parquet", ".csv", ".tsv", ".txt", ".jsonl")
NAMES_FILES = ("classes.txt", "meta.txt", "labels.txt")  # label-name lists that sit beside the data


def _norm(name) -> str:
    """Compare names loosely: 'EducationalInstitution' == 'educational institution', 'Sci/Tech' == 'scitech'."""
    return re.sub(r"[^0-9a-z]", "", str(name).lower())


def _known_columns(spec: DatasetSpec) -> set[str]:
    return {c for group in spec.text_fields + spec.pair_fields for c in group} | set(LABEL_COLUMNS)


def _read_delimited(path: Path, spec: DatasetSpec) -> dict[str, list]:
    with open(path, encoding="utf-8-sig", newline="") as f:  # utf-8-sig drops GLUE's byte-order mark
        first = f.readline()
        f.seek(0)
        if path.suffix == ".csv":
            rows = list(csv.reader(f))
        else:
            # GLUE TSVs hold unbalanced quotes ('"The foodservice ...'), so quotes are plain characters here
            delimiter = "\t" if "\t" in first else ";" if ";" in first else None
            if delimiter is None:
                raise ValueError(f"{path}: cannot tell the column separator (expected tabs or ';' in the first line)")
            rows = list(csv.reader(f, delimiter=delimiter, quoting=csv.QUOTE_NONE))
    rows = [r for r in rows if r]
    if not rows:
        raise ValueError(f"{path}: the file is empty; the split it names has no rows")
    header = [c.strip().lower() for c in rows[0]]
    if set(header) & _known_columns(spec):
        rows = rows[1:]
    else:  # header-less mirrors (Zhang et al.'s CSVs): the layout is known from the number of columns
        layouts = {len(h): h for h in spec.headerless}
        if len(header) not in layouts:
            raise ValueError(f"{path}: no header row naming {spec.name}'s columns and no known header-less "
                             f"layout with {len(header)} columns; add a header such as 'text,label'")
        header = list(layouts[len(header)])
    for i, r in enumerate(rows):
        if len(r) != len(header):
            raise ValueError(f"{path}: row {i + 1} has {len(r)} fields but the header has {len(header)}")
    return {c: [r[j] for r in rows] for j, c in enumerate(header)}


def read_columns(path, spec: DatasetSpec) -> dict[str, list]:
    """A data file as {lower-case column name: values}; parquet, CSV, TSV, ';'-separated .txt or JSONL."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq
        table = pq.read_table(path).to_pydict()
        return {c.strip().lower(): v for c, v in table.items()}
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        keys = {k for r in rows for k in r}
        return {k.strip().lower(): [r.get(k) for r in rows] for k in keys}
    if path.suffix in (".csv", ".tsv", ".txt"):
        return _read_delimited(path, spec)
    raise ValueError(f"{path}: unsupported file type; use one of {', '.join(EXTENSIONS)}")


def _pick(columns: dict, alternatives, what: str, path) -> list[str]:
    for group in alternatives:
        if all(c in columns for c in group):
            parts = [[("" if v is None else str(v)).strip() for v in columns[c]] for c in group]
            return [" ".join(p for p in ps if p) for ps in zip(*parts)]
    wanted = " or ".join("+".join(g) for g in alternatives)
    raise ValueError(f"{path}: no {what} column (looked for {wanted}; found columns: {', '.join(columns)})")


def _labels_column(columns: dict, path) -> list:
    for c in LABEL_COLUMNS:
        if c in columns:
            return columns[c]
    raise ValueError(f"{path}: no label column (looked for {', '.join(LABEL_COLUMNS)}; "
                     f"found columns: {', '.join(columns)})")


# ----------------------------------------------------------------------------------------------------
# Labels: ids or words -> the hub's ids


def _as_id(value):
    """An int for 3, '3', '-1' or 3.0; the stripped string for a word."""
    if isinstance(value, (int, np.integer)) or (isinstance(value, float) and value.is_integer()):
        return int(value)
    s = str(value).strip()
    return int(s) if re.fullmatch(r"-?\d+", s) else s


def read_label_names(path) -> dict[int, str] | list[str]:
    """A names file: 'N: Name' lines (explicit ids, as in DBPedia's meta.txt) or one name per line
    (position = id, as in classes.txt). Lines starting with '#' are comments."""
    lines = [l.strip() for l in Path(path).read_text(encoding="utf-8-sig").splitlines()]
    lines = [l for l in lines if l and not l.startswith("#")]
    numbered = [re.fullmatch(r"(\d+)\s*[:\t]\s*(.+)", l) for l in lines]
    if lines and all(numbered):
        return {int(m[1]): m[2].strip() for m in numbered}
    return lines


def _map_labels(raw: dict[str, list], spec: DatasetSpec, names, where: str, notes: list[str]) -> dict[str, list[int]]:
    """Map each split's raw labels (ids in any base, or words) to the hub's ids, by name where possible."""
    K = len(spec.label_names)
    by_name = {_norm(n): i for i, n in enumerate(spec.label_names)}
    by_name.update({_norm(a): by_name[_norm(n)] for a, n in spec.label_aliases})
    ids = {v for values in raw.values() for v in values if isinstance(v, int) and v != -1}
    # 1-based ids (Zhang et al.'s CSVs) are recognised by spanning 1..K with no 0
    base = 1 if ids and 0 not in ids and max(ids) == K else 0
    if isinstance(names, list):
        names = {base + i: n for i, n in enumerate(names)}
    if names is not None:  # a local id means whatever name the folder gives it, never its position
        unknown = [n for n in names.values() if _norm(n) not in by_name]
        if unknown:
            raise ValueError(f"{where}: label names {unknown} are not {spec.name}'s ({', '.join(spec.label_names)})")
        id_map = {i: by_name[_norm(n)] for i, n in names.items()}
    else:
        id_map = {i + base: i for i in range(K)}
        if base == 1 and ids:
            notes.append(f"labels 1..{K} read as 1-based ids in the hub's order")
    out = {}
    for split, values in raw.items():
        mapped = [id_map.get(v) if isinstance(v, int) else by_name.get(_norm(v)) for v in values]
        bad = [(i + 1, v) for i, (m, v) in enumerate(zip(mapped, values)) if m is None][:5]
        if bad:
            shown = ", ".join(f"row {i}: {v!r}" for i, v in bad)
            raise ValueError(f"{where} ({split}): labels outside {spec.name}'s {K} classes, e.g. {shown}; "
                             f"expected ids 0..{K - 1} (or 1..{K}) or names {', '.join(spec.label_names)}")
        out[split] = mapped
    return out


# ----------------------------------------------------------------------------------------------------
# Finding files: the hub, or a local folder


def _local_files(spec: DatasetSpec, data_dir: Path) -> tuple[Path, dict[str, list[Path]]]:
    """The folder used and split -> files in it: a copy of the hub layout, or files whose name holds a
    split word (train, topic_valid, train-00000-of-00002, ...). A parent of per-dataset folders such as
    ../shared/data works too: its `<name>/` subfolder is used."""
    hub_copy = {s: [data_dir / f] for s, f in spec.hub_files if (data_dir / f).is_file()}
    if hub_copy:
        return data_dir, hub_copy
    found: dict[str, list[Path]] = {}
    for path in sorted(data_dir.iterdir()):
        words = {SPLIT_ALIASES.get(w) for w in re.split(r"[-_.]", path.stem.lower())} - {None}
        if path.is_file() and path.suffix in EXTENSIONS and len(words) == 1:
            found.setdefault(words.pop(), []).append(path)
    if not found and (data_dir / spec.name).is_dir():
        return _local_files(spec, data_dir / spec.name)
    if not found:
        raise FileNotFoundError(
            f"{data_dir}: no {spec.name} data found; looked for train/validation/test (or dev/val) files "
            f"ending in {'/'.join(EXTENSIONS)}, or the hub layout {', '.join(f for _, f in spec.hub_files)}")
    return data_dir, found


def _hub_files(spec: DatasetSpec) -> dict[str, list[Path]]:
    """Download (or reuse from the local hub cache) only the labelled files of the dataset."""
    files = {}
    for split, filename in spec.hub_files:
        try:
            path = hf_hub_download(spec.hub_repo, filename, repo_type="dataset", revision=spec.revision)
        except Exception as e:  # offline, unreachable, moved: all have the same fix
            raise FileNotFoundError(
                f"could not download {spec.hub_repo}/{filename} from the Hugging Face Hub "
                f"({type(e).__name__}); offline? pass --data-dir (data_dir=) a folder with {spec.name}'s "
                f"train/validation/test files") from None
        files[split] = [Path(path)]
    return files


def _read(spec: DatasetSpec, files: dict[str, list[Path]], folder: Path | None, where: str,
          notes: list[str]) -> dict[str, Split]:
    """Read each split's files, then map all labels together (the id base is decided over every split)."""
    texts, pairs, raw = {}, {}, {}
    for split, paths in files.items():
        texts[split], pairs[split], raw[split] = [], [], []
        for path in paths:
            columns = read_columns(path, spec)
            if not next(iter(columns.values()), []):
                raise ValueError(f"{path}: no rows; the {split} split of {spec.name} is empty")
            texts[split] += _pick(columns, spec.text_fields, "text", path)
            if spec.pair:
                pairs[split] += _pick(columns, spec.pair_fields, "second-sentence", path)
            raw[split] += [_as_id(v) for v in _labels_column(columns, path)]
        if all(v == -1 for v in raw[split]):  # e.g. a GLUE-style test file whose labels are withheld
            notes.append(f"{spec.name} {split}: every label is -1 (hidden), skipped")
            for d in (texts, pairs, raw):
                del d[split]
    names_file = None if folder is None else next((folder / f for f in NAMES_FILES if (folder / f).is_file()), None)
    names = read_label_names(names_file) if names_file else None
    if names_file:
        notes.append(f"label ids mapped by name through {names_file.name}")
    labels = _map_labels(raw, spec, names, where, notes)
    return {s: Split(texts[s], pairs[s] if spec.pair else None, labels[s], spec.label_names, f"{spec.name}/{s}")
            for s in labels}


def read_splits(spec: DatasetSpec, data_dir=None, notes: list[str] | None = None) -> dict[str, Split]:
    """Every labelled split that exists, from the hub or from `data_dir`, labels in the hub's order."""
    notes = [] if notes is None else notes
    if data_dir is None:
        folder, files, where = None, _hub_files(spec), spec.hub_repo
    else:
        if not Path(data_dir).is_dir():
            raise FileNotFoundError(f"--data-dir {data_dir} is not a folder")
        folder, files = _local_files(spec, Path(data_dir))
        where = str(folder)
    if spec.hidden_test and "test" in files:
        notes.append(f"ignoring {', '.join(p.name for p in files.pop('test'))}: GLUE test labels are hidden")
    files = {s: files[s] for s in SPLIT_ORDER if s in files}
    splits = _read(spec, files, folder, where, notes)
    notes.append(f"read {where}: " + ", ".join(f"{s} {len(v)}" for s, v in splits.items()))
    return splits


def read_file(path, name: str) -> Split:
    """One labelled file of dataset `name` on its own (e.g. a sample), labels mapped like a folder's."""
    path = Path(path)
    return _read(get_spec(name), {path.stem: [path]}, path.parent, str(path), [])[path.stem]


# ----------------------------------------------------------------------------------------------------
# The paper's split and the official one


def _concat(splits: list[Split], name: str) -> Split:
    pairs = None if splits[0].pairs is None else [p for s in splits for p in s.pairs]
    return Split([t for s in splits for t in s.texts], pairs, [y for s in splits for y in s.labels],
                 splits[0].label_names, name)


def paper_split(pool: Split, n_train: int, n_test: int, seed: int, notes: list[str]) -> tuple[Split, Split]:
    """Shuffle the pool with `seed` and take n_train / n_test examples. Exact duplicate texts move as one
    group, so no test text is ever seen in training (SST-2 repeats ~370 phrases). A pool smaller than
    n_train + n_test is split in the same ratio, with a note."""
    n = len(pool)
    if n < n_train + n_test:
        scaled_test = round(n * n_test / (n_train + n_test))
        notes.append(f"local data smaller than the paper's {n_train}/{n_test}: using {n - scaled_test}/"
                     f"{scaled_test} (all {n} examples, same train:test ratio)")
        n_train, n_test = n - scaled_test, scaled_test
    groups: dict[tuple, list[int]] = {}
    keys = zip(pool.texts, pool.pairs) if pool.pairs is not None else pool.texts
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    groups = list(groups.values())
    rng = np.random.default_rng(seed)
    train, test = [], []
    for g in rng.permutation(len(groups)):
        rows = groups[g]
        if len(test) + len(rows) <= n_test:
            test += rows
        elif len(train) + len(rows) <= n_train:
            train += rows
        if len(test) == n_test and len(train) == n_train:
            break
    name = pool.name.split("/")[0]
    return (replace(pool.take(rng.permutation(train)), name=f"{name}/train"),
            replace(pool.take(rng.permutation(test)), name=f"{name}/test"))


def load_dataset(name: str, data_dir=None, split: str = "paper", seed: int = 0, limit: int | None = None) -> Dataset:
    """Train and test Splits of dataset `name` from the hub (data_dir=None) or a local folder.

    split="paper": pool every labelled split, shuffle with `seed`, take Table 1's sizes (MRPC and RTE have
    none and use the official splits). split="official": the dataset's own train, evaluated on its test
    split when labelled, else validation. `limit` caps train and test at that many examples each,
    a seeded random subset, for quick runs.
    """
    spec = get_spec(name)
    if split not in ("paper", "official"):
        raise ValueError(f"unknown split {split!r}; use 'paper' or 'official'")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of examples, got {limit}")
    notes: list[str] = []
    splits = read_splits(spec, data_dir, notes)
    if split == "paper" and spec.paper_train is not None:
        pool = _concat([splits[s] for s in SPLIT_ORDER if s in splits], f"{name}/pool")
        train, test = paper_split(pool, spec.paper_train, spec.paper_test, seed, notes)
        notes.append(f"paper split (seed {seed}): {len(train)} train / {len(test)} test from {len(pool)} pooled")
    else:
        if split == "paper":
            notes.append(f"{name} has no Table 1 sizes: using the official splits")
        if "train" not in splits:
            raise ValueError(f"{name}: the data has no train split (found {', '.join(splits) or 'none'}); "
                             "use split='paper' (--split paper) to split what there is")
        held_out = "test" if "test" in splits else "validation" if "validation" in splits else None
        if held_out is None:
            raise ValueError(f"{name}: the data has no validation or test split to evaluate on; "
                             "use split='paper' (--split paper)")
        train, test = splits["train"], splits[held_out]
        notes.append(f"official split: train {len(train)} / {held_out} {len(test)}")
        if limit is not None:  # official files are often sorted by label: cap with a seeded random subset
            rng = np.random.default_rng(seed)
            train, test = (s.take(rng.permutation(len(s))) for s in (train, test))
    if limit is not None:
        train, test = train.take(range(min(limit, len(train)))), test.take(range(min(limit, len(test))))
        notes.append(f"limit {limit}: using {len(train)} train / {len(test)} test")
    for s, what in ((train, "train"), (test, "test")):
        if len(s) == 0:
            raise ValueError(f"{name}: the {what} split is empty; add data or use the other --split mode")
    return Dataset(spec, train, test, notes)


# ----------------------------------------------------------------------------------------------------
# Tokenising once


@dataclass
class Encoded:
    """A tokenised Split: unpadded ids and token types per example, labels, and lengths (numpy int64)."""
    ids: list[list[int]]
    type_ids: list[list[int]]
    labels: list[int]
    lengths: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


def _tokenizer_identity(tokenizer) -> str:
    """A hash of everything that decides the tokens (vocab, normaliser, ...), not the truncation state."""
    state = json.loads(tokenizer.tokenizer.to_str())
    state.pop("truncation", None)
    state.pop("padding", None)
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


def _cache_key(split: Split, tokenizer, max_length: int) -> str:
    h = hashlib.sha256()
    for part in (_tokenizer_identity(tokenizer), split.name, str(max_length)):
        h.update(part.encode() + b"\0")
    for t in split.texts:
        h.update(t.encode() + b"\0")
    for t in split.pairs or []:
        h.update(t.encode() + b"\1")
    return h.hexdigest()[:20]


def encode(split: Split, tokenizer, max_length: int, cache_dir=None) -> Encoded:
    """Tokenise a Split once (truncating to max_length, pairs longest-first). With `cache_dir`, the result
    is stored there keyed by tokenizer + dataset + content + max_length and reused next time."""
    path = None
    if cache_dir is not None:
        tag = split.name.replace("/", "-") or "split"
        path = Path(cache_dir) / f"{tag}-{max_length}-{_cache_key(split, tokenizer, max_length)}.npz"
        if path.is_file():
            with np.load(path) as z:
                lengths = z["lengths"].astype(np.int64)
                cuts = np.cumsum(lengths)[:-1]
                ids = [a.tolist() for a in np.split(z["ids"], cuts)]
                type_ids = [a.tolist() for a in np.split(z["type_ids"], cuts)]
            return Encoded(ids, type_ids, list(split.labels), lengths)
    ids, type_ids = tokenizer.encode(split.texts, split.pairs, max_length=max_length)
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")  # write then rename: concurrent ranks never see half a file
        with open(tmp, "wb") as f:
            np.savez(f, ids=np.fromiter((t for x in ids for t in x), np.int32),
                     type_ids=np.fromiter((t for x in type_ids for t in x), np.int8), lengths=lengths)
        os.replace(tmp, path)
    return Encoded(ids, type_ids, list(split.labels), lengths)


# ----------------------------------------------------------------------------------------------------
# Batching with dynamic padding

MEGA_BATCH = 50  # batches per length-sorted group, as in HF's group_by_length


def batch_indices(lengths, batch_size: int, shuffle: bool = True, group_by_length: bool = True,
                  seed: int = 0, epoch: int = 0) -> list[np.ndarray]:
    """Example indices of each batch, a pure function of the arguments (so a resumed run repeats itself).

    Training (shuffle=True): a seeded permutation; with group_by_length, each run of 50 batches' worth is
    sorted by length so batches hold similar lengths, then the batches are shuffled and the longest is put
    first so an out-of-memory error shows up at step one. Evaluation (shuffle=False): longest first.
    """
    lengths = np.asarray(lengths)
    n = len(lengths)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if not shuffle:
        order = np.argsort(-lengths, kind="stable")
        return [order[i:i + batch_size] for i in range(0, n, batch_size)]
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n)
    if not group_by_length:
        return [order[i:i + batch_size] for i in range(0, n, batch_size)]
    mega = batch_size * MEGA_BATCH
    order = np.concatenate([m[np.argsort(-lengths[m], kind="stable")] for m in np.split(order, range(mega, n, mega))])
    chunks = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    chunks = [chunks[i] for i in rng.permutation(len(chunks))]
    longest = int(np.argmax([lengths[c].max() for c in chunks]))
    chunks[0], chunks[longest] = chunks[longest], chunks[0]
    return chunks


def batches(enc: Encoded, batch_size: int, shuffle: bool = True, group_by_length: bool = True,
            seed: int = 0, epoch: int = 0, pad_id: int = 0):
    """Yield dicts of LongTensors input_ids, attention_mask, token_type_ids (B, T) padded to the batch's
    longest example, and labels (B,). Every example appears exactly once per epoch."""
    labels = np.asarray(enc.labels, dtype=np.int64)
    for index in batch_indices(enc.lengths, batch_size, shuffle, group_by_length, seed, epoch):
        batch = pad_batch([enc.ids[i] for i in index], [enc.type_ids[i] for i in index], pad_id)
        batch["labels"] = torch.from_numpy(labels[index])
        yield batch


def padding_fraction(enc: Encoded, batch_size: int, **batch_kwargs) -> float:
    """Fraction of all batch slots (B * T summed over batches) that are padding, for `batches(...)`'s order."""
    batch_kwargs.pop("pad_id", None)  # padding is counted, its id doesn't matter
    index = batch_indices(enc.lengths, batch_size, **batch_kwargs)
    slots = sum(len(i) * int(enc.lengths[i].max()) for i in index)
    return 1.0 - float(enc.lengths.sum()) / slots


# ----------------------------------------------------------------------------------------------------
# CLI: python -m minibert.data sst2 --data-dir ../shared/data/sst2


def _balance(split: Split) -> str:
    n = max(len(split), 1)
    return ", ".join(f"{k} {v} ({100 * v / n:.1f}%)" for k, v in split.class_balance().items())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m minibert.data", description=__doc__.split("\n")[0])
    p.add_argument("name", help=f"dataset: {', '.join(DATASETS)}")
    p.add_argument("--data-dir", default=None, help="local folder with the dataset's files (default: the hub)")
    p.add_argument("--split", default="paper", choices=["paper", "official"], help="Table 1 split or official")
    p.add_argument("--seed", type=int, default=0, help="seed of the paper split")
    p.add_argument("--limit", type=int, default=None, help="cap train and test at this many examples")
    p.add_argument("--model", default="base", help="tokenizer: preset, checkpoint folder or hub id")
    p.add_argument("--max-length", type=int, default=None, help="truncation length (default: the dataset's)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size for the padding fractions")
    p.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "minibert" / "tokens"),
                   help="where tokenised data is cached")
    args = p.parse_args(argv)
    try:
        ds = load_dataset(args.name, args.data_dir, args.split, args.seed, args.limit)
        tok = load_tokenizer(args.model)
        max_length = args.max_length or ds.spec.max_length
        spec = ds.spec
        print(f"{spec.name}: {spec.hub_repo}, {'sentence pair' if spec.pair else 'single text'}, "
              f"{len(spec.label_names)} labels, max_length {max_length}")
        for note in ds.notes:
            print(f"  note: {note}")
        for what, split in (("train", ds.train), ("test", ds.test)):
            enc = encode(split, tok, max_length, args.cache_dir)
            p50, p90, p99 = np.percentile(enc.lengths, [50, 90, 99])
            print(f"{what:5s} {len(split):6d}  {_balance(split)}")
            print(f"      tokens p50 {p50:.0f}  p90 {p90:.0f}  p99 {p99:.0f}  max {enc.lengths.max()}  "
                  f"at max_length (truncated) {100 * np.mean(enc.lengths >= max_length):.2f}%")
            if what == "train":
                grouped = padding_fraction(enc, args.batch_size, group_by_length=True, seed=args.seed)
                plain = padding_fraction(enc, args.batch_size, group_by_length=False, seed=args.seed)
                print(f"      padding (batch {args.batch_size}): {100 * plain:.1f}% shuffled, "
                      f"{100 * grouped:.1f}% length-grouped")
            else:
                evalp = padding_fraction(enc, args.batch_size, shuffle=False)
                print(f"      padding (batch {args.batch_size}): {100 * evalp:.1f}% in evaluation (length) order")
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
