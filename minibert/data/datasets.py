"""The paper's eight datasets: a registry (with each one's declared file layouts), the files, the paper's splits.

    ds = load_dataset("sst2", data_dir=None, split="paper", seed=0)     # -> Dataset(train, test, notes)

Data comes from the Hugging Face Hub (`huggingface_hub.hf_hub_download`, only the labelled files) or
from a local folder of parquet / CSV / TSV / `;`-separated text / JSONL files named after their split
(train, validation, test; also dev, val, valid). Every file must match one of the Layouts its dataset
declares in DATASETS: which columns hold the text, the second segment and the label, and what a label
id means (readers.py reads a file that way). Label words (`joy`, `written work`) map to the hub's
names and order by name.

Choices worth knowing:
- DBPedia and AG News are single-text tasks: title and body are joined with a space, as the hub's
  AG News `text` column already is (DBPedia samples without a title use the content alone).
- Rows whose text (or second segment) is empty are dropped with a note: an empty input carries no
  evidence for its label, and it is almost always an export artefact (a blank line, a NaN).
- `split="paper"` pools every labelled split, groups exact duplicate texts so a text never lands in both
  train and test, shuffles with the seed and takes Table 1's sizes. MRPC and RTE always use the official
  splits, and GLUE tasks are evaluated on validation because GLUE's test labels are hidden.
"""
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from huggingface_hub import hf_hub_download

from .readers import EXTENSIONS, DatasetSpec, Layout, read_labelled

DATA_ENV = "MINIBERT_DATA"  # a folder with one sub-folder per dataset; the tests and CI point it at real samples


def default_data_root() -> Path | None:
    """The local data folder named by $MINIBERT_DATA, or None: the Hugging Face Hub. Absolute, links kept (not
    followed), so a run's notes name its data `$MINIBERT_DATA/...` even when the variable points through a link."""
    root = os.environ.get(DATA_ENV)
    return Path(os.path.abspath(root)) if root else None


# ----------------------------------------------------------------------------------------------------
# The registry


# How the report names each dataset, as the paper does
DATASET_TITLES = {"sst2": "SST-2", "imdb": "IMDB", "ag_news": "AG News", "emotion": "Emotion",
                  "dbpedia": "DBPedia", "tfnt": "TFNT", "mrpc": "MRPC", "rte": "RTE"}
SPLITS = ("paper", "official")  # the paper's Table 1 sizes from the pooled labelled data, or the official splits

SENTIMENT_ALIASES = (("neg", "negative"), ("pos", "positive"))
TEXT = Layout(("text",))  # the hub's plain `text,label`, ids 0..K-1
GLUE_PAIR = Layout(("sentence1",), pair=("sentence2",))


def _parquet(folder, splits):
    return tuple((s, f"{folder}/{s}-00000-of-00001.parquet") for s in splits)


DATASETS: dict[str, DatasetSpec] = {s.name: s for s in [
    DatasetSpec("sst2", "nyu-mll/glue", _parquet("sst2", ("train", "validation")), ("negative", "positive"),
                (Layout(("sentence",)), TEXT), paper_train=56000, paper_test=12000, max_length=128,
                hidden_test=True, label_aliases=SENTIMENT_ALIASES),
    DatasetSpec("imdb", "stanfordnlp/imdb", _parquet("plain_text", ("train", "test")), ("negative", "positive"),
                (TEXT, Layout(("text",), columns=("idx", "text", "label")),
                 Layout(("text",), columns=("text", "label"))),
                paper_train=25000, paper_test=5000, max_length=512, label_aliases=SENTIMENT_ALIASES),
    DatasetSpec("ag_news", "fancyzhx/ag_news", _parquet("data", ("train", "test")),
                ("World", "Sports", "Business", "Sci/Tech"),
                (TEXT, Layout(("title", "description"), first_id=1),  # Zhang et al.'s CSV, with or without header
                 Layout(("title", "description"), columns=("label", "title", "description"), first_id=1)),
                paper_train=48000, paper_test=6000, max_length=256),
    DatasetSpec("emotion", "dair-ai/emotion", _parquet("split", ("train", "validation", "test")),
                ("sadness", "joy", "love", "anger", "fear", "surprise"), (TEXT, Layout(("text",), label="label_name")),
                paper_train=14000, paper_test=4000, max_length=128,
                revision="106c232c0a63f3f06ae5d80d141114a00604e969"),  # a commit whose split/ holds these files
    DatasetSpec("dbpedia", "fancyzhx/dbpedia_14", _parquet("dbpedia_14", ("train", "test")),
                ("Company", "EducationalInstitution", "Artist", "Athlete", "OfficeHolder", "MeanOfTransportation",
                 "Building", "NaturalPlace", "Village", "Animal", "Plant", "Album", "Film", "WrittenWork"),
                (Layout(("title", "content")), TEXT,
                 Layout(("title", "content"), columns=("label", "title", "content"), first_id=1),  # Zhang et al.
                 Layout(("content",), columns=("label", "content"), names_file="meta.txt")),  # ids in meta.txt's order
                paper_train=50000, paper_test=12000, max_length=256),
    DatasetSpec("tfnt", "zeroshot/twitter-financial-news-topic",
                (("train", "topic_train.csv"), ("validation", "topic_valid.csv")),
                ("Analyst Update", "Fed | Central Banks", "Company | Product News", "Treasuries | Corporate Debt",
                 "Dividend", "Earnings", "Energy | Oil", "Financials", "Currencies", "General News | Opinion",
                 "Gold | Metals | Materials", "IPO", "Legal | Regulation", "M&A | Investments", "Macro",
                 "Markets", "Politics", "Personnel Change", "Stock Commentary", "Stock Movement"),
                (TEXT,), paper_train=17000, paper_test=4000, max_length=128),
    DatasetSpec("mrpc", "nyu-mll/glue", _parquet("mrpc", ("train", "validation")), ("not_equivalent", "equivalent"),
                (GLUE_PAIR, Layout(("#1 string",), label="quality", pair=("#2 string",))),  # GLUE's original TSV
                hidden_test=True),
    DatasetSpec("rte", "nyu-mll/glue", _parquet("rte", ("train", "validation")), ("entailment", "not_entailment"),
                (GLUE_PAIR,), max_length=256, hidden_test=True),
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
# Finding files: the hub, or a local folder

SPLIT_ALIASES = {"train": "train", "validation": "validation", "valid": "validation", "val": "validation",
                 "dev": "validation", "test": "test"}
SPLIT_ORDER = ("train", "validation", "test")


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


def _read_file(path: Path, spec: DatasetSpec, name: str, notes: list[str]) -> Split | None:
    """One file as a Split named `name`; None when every label is -1 (hidden)."""
    read = read_labelled(path, spec, notes)
    return None if read is None else Split(*read, spec.label_names, name)


def _concat(splits: list[Split], name: str) -> Split:
    pairs = None if splits[0].pairs is None else [p for s in splits for p in s.pairs]
    return Split([t for s in splits for t in s.texts], pairs, [y for s in splits for y in s.labels],
                 splits[0].label_names, name)


def read_splits(spec: DatasetSpec, data_dir=None, notes: list[str] | None = None) -> dict[str, Split]:
    """Every labelled split that exists, from the hub or from `data_dir`, labels in the hub's order."""
    notes = [] if notes is None else notes
    if data_dir is None:
        files, where = _hub_files(spec), spec.hub_repo
    else:
        # "$MINIBERT_DATA/sst2" names the data portably: expanded to read, kept as written in the notes
        given, local = str(data_dir), Path(os.path.expandvars(str(data_dir)))
        if not local.is_dir():
            unset = "; is the variable set?" if "$" in str(local) else ""
            raise FileNotFoundError(f"--data-dir {data_dir} is not a folder{unset}")
        folder, files = _local_files(spec, local)
        where = given if folder == local else str(Path(given) / folder.relative_to(local))
    if spec.hidden_test and "test" in files:
        notes.append(f"ignoring {', '.join(p.name for p in files.pop('test'))}: GLUE test labels are hidden")
    splits = {}
    for split in (s for s in SPLIT_ORDER if s in files):
        parts = [_read_file(p, spec, f"{spec.name}/{split}", notes) for p in files[split]]
        parts = [p for p in parts if p is not None]
        if parts:
            splits[split] = _concat(parts, f"{spec.name}/{split}")
    notes.append(f"read {where}: " + ", ".join(f"{s} {len(v)}" for s, v in splits.items()))
    return splits


def read_file(path, name: str) -> Split:
    """One labelled file of dataset `name` on its own (e.g. a sample), labels mapped like a folder's."""
    path = Path(path)
    split = _read_file(path, get_spec(name), f"{name}/{path.stem}", [])
    if split is None:
        raise ValueError(f"{path}: every label is -1 (hidden); use a labelled file")
    return split


# ----------------------------------------------------------------------------------------------------
# The paper's split and the official one


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


def _missing(spec: DatasetSpec, splits: dict, pooled: bool) -> str | None:
    """What the labelled `splits` lack for the paper's pooled split (pooled) or the official one, or None."""
    if pooled:
        labelled = [s for s in SPLIT_ORDER if not (spec.hidden_test and s == "test")]
        return None if splits else f"--split paper needs a labelled {' or '.join(labelled)} file"
    if "train" in splits and {"validation", "test"} & set(splits):
        return None
    held = "validation" if spec.hidden_test else "test (or validation)"
    mode = "--split official" if spec.paper_train is not None else f"{spec.name} always uses its official splits and"
    return f"{mode} needs train and {held} files"


def load_dataset(name: str, data_dir=None, split: str = "paper", seed: int = 0, limit: int | None = None,
                 test_limit: int | None = None) -> Dataset:
    """Train and test Splits of dataset `name` from the hub (data_dir=None) or a local folder.

    split="paper": pool every labelled split, shuffle with `seed`, take Table 1's sizes (MRPC and RTE have
    none and use the official splits). split="official": the dataset's own train, evaluated on its test
    split when labelled, else validation. `limit` caps train and test at that many examples each,
    a seeded random subset, for quick runs; `test_limit` caps the test split instead (the seeded order is the
    same for every limit, so runs of one seed at several training sizes share one test set).
    """
    spec = get_spec(name)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use 'paper' or 'official'")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of examples, got {limit}")
    notes: list[str] = []
    splits = read_splits(spec, data_dir, notes)
    pooled = split == "paper" and spec.paper_train is not None
    if missing := _missing(spec, splits, pooled):
        where = f"--data-dir {data_dir}" if data_dir is not None else spec.hub_repo
        found = f"only {' and '.join(splits)}" if splits else "no labelled split"
        hidden = " (GLUE hides the test labels)" if spec.hidden_test else ""
        hint = "; --split paper pools what there is" if not pooled and spec.paper_train is not None and splits else ""
        raise ValueError(f"{where} has {found}{hidden}; {missing}{hint}")
    if pooled:
        pool = _concat([splits[s] for s in SPLIT_ORDER if s in splits], f"{name}/pool")
        train, test = paper_split(pool, spec.paper_train, spec.paper_test, seed, notes)
        notes.append(f"paper split (seed {seed}): {len(train)} train / {len(test)} test from {len(pool)} pooled")
    else:
        if split == "paper":
            notes.append(f"{name} has no Table 1 sizes: using the official splits")
        held_out = "test" if "test" in splits else "validation"
        train, test = splits["train"], splits[held_out]
        notes.append(f"official split: train {len(train)} / {held_out} {len(test)}")
        # official files are often sorted by label: cap with a seeded random subset
        if limit is not None or test_limit is not None:
            rng = np.random.default_rng(seed)
            train, test = (s.take(rng.permutation(len(s))) for s in (train, test))
    test_cap = test_limit if test_limit is not None else limit
    if limit is not None or test_cap is not None:
        train = train.take(range(min(limit or len(train), len(train))))
        test = test.take(range(min(test_cap or len(test), len(test))))
        notes.append(f"limit {limit}{f', test limit {test_limit}' if test_limit else ''}: using {len(train)} "
                     f"train / {len(test)} test")
    for s, what in ((train, "train"), (test, "test")):
        if len(s) == 0:
            raise ValueError(f"{name}: the {what} split is empty; add data or use the other --split mode")
    return Dataset(spec, train, test, notes)
