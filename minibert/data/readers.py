"""The data schema (a dataset's `DatasetSpec` and the `Layout`s its files may have) and reading one data file:
its format, the declared Layout it matches, and its labels as the hub's ids.

    texts, pairs, labels = read_labelled(path, spec, notes)   # None when every label is -1 (hidden)

Formats: parquet, CSV, TSV, `;`-separated .txt and JSONL, all UTF-8. The columns a file may use are
declared per dataset (a `Layout` in `datasets.DATASETS`); a file is never read by guessing which of
its columns look like text. Every user mistake here (unknown layout, missing names file, unknown label,
not UTF-8) is a one-line ValueError or FileNotFoundError that names the file.
"""
from __future__ import annotations

import csv
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

EXTENSIONS = (".parquet", ".csv", ".tsv", ".txt", ".jsonl")


def progress(iterable=None, **kwargs):
    """A tqdm bar on stderr that appears only after a second of work and only on a terminal (logs stay clean)."""
    return tqdm(iterable, delay=1.0, disable=None, leave=False, **kwargs)


@dataclass(frozen=True)
class Layout:
    """One declared way a dataset's files are laid out: the columns that hold the text, the second segment
    and the label, and what a label id means. A file matches when it has every column named here."""
    text: tuple[str, ...]             # joined with " " (AG News / DBPedia title + body)
    label: str = "label"
    pair: tuple[str, ...] = ()        # the second segment of a sentence-pair task
    columns: tuple[str, ...] = ()     # a header-less CSV: all its columns in file order; () = it has a header
    first_id: int = 0                 # 1: ids 1..K in the hub's order (Zhang et al.'s CSVs)
    names_file: str | None = None     # ids mean the names this file beside the data gives them (required)

    def needs(self) -> tuple[str, ...]:
        return self.text + self.pair + (self.label,)

    def describe(self) -> str:
        return f"header-less {','.join(self.columns)}" if self.columns else ",".join(self.needs())


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: where it lives on the hub, how its files are laid out, and the paper's split sizes."""
    name: str
    hub_repo: str
    hub_files: tuple[tuple[str, str], ...]   # (split, path in the hub repo); labelled splits only
    label_names: tuple[str, ...]             # the hub's order: label i means label_names[i]
    layouts: tuple[Layout, ...]              # the hub's first, then known local mirrors
    paper_train: int | None = None           # Table 1; None = official splits in both modes
    paper_test: int | None = None
    max_length: int = 128                    # >= 99.9% of examples untruncated (uncased WordPiece); IMDB: BERT's 512
    label_aliases: tuple[tuple[str, str], ...] = ()  # other spellings of label names
    hidden_test: bool = False                # GLUE: test labels are withheld, never read the test split
    revision: str | None = None              # hub revision to pin; None = the repo's default branch

    @property
    def pair(self) -> bool:
        """A sentence-pair task (token types 0 and 1)."""
        return bool(self.layouts[0].pair)


def _norm(name) -> str:
    """Compare names loosely: 'EducationalInstitution' == 'educational institution', 'Sci/Tech' == 'scitech'."""
    return re.sub(r"[^0-9a-z]", "", str(name).lower())


def _not_utf8(path: Path, e: UnicodeDecodeError) -> ValueError:
    byte = e.object[e.start:e.start + 1].hex()
    return ValueError(f"{path}: not UTF-8 text (byte 0x{byte}: {e.reason}); save the file as UTF-8")


def _layout_error(path: Path, spec: DatasetSpec, found: list[str]) -> ValueError:
    """Say which declared column is missing, or that the file matches none of the dataset's layouts."""
    shown = ", ".join(found)
    expected = " or ".join(layout.describe() for layout in spec.layouts)
    if not {c for layout in spec.layouts for c in layout.needs()} & set(found):
        return ValueError(f"{path}: not a {spec.name} file (found columns: {shown}; expected {expected})")
    with_header = [layout for layout in spec.layouts if not layout.columns]
    parts = (("text", lambda l: l.text), ("second-sentence", lambda l: l.pair), ("label", lambda l: (l.label,)))
    for what, part in parts:
        alternatives = list(dict.fromkeys(part(layout) for layout in with_header if part(layout)))
        if alternatives and not any(set(a) <= set(found) for a in alternatives):
            wanted = " or ".join("+".join(a) for a in alternatives)
            return ValueError(f"{path}: no {what} column (looked for {wanted}; found columns: {shown})")
    return ValueError(f"{path}: columns {shown} mix {spec.name}'s layouts; expected {expected}")


def _match(path: Path, spec: DatasetSpec, columns: dict[str, list]) -> Layout:
    """The first declared layout (with a header) whose columns the file has."""
    for layout in spec.layouts:
        if not layout.columns and set(layout.needs()) <= set(columns):
            return layout
    raise _layout_error(path, spec, list(columns))


# csv's own limit is 131,072 characters a field; a long document (a whole article in one cell) is data, not an
# error: the tokenizer truncates it to --max-length like any other. The largest a C long holds on every platform.
FIELD_LIMIT = 2**31 - 1


def _delimited_rows(path: Path) -> list[list[str]]:
    """The non-empty rows of a CSV, TSV or ';'-separated text file (UTF-8; a byte-order mark is dropped)."""
    csv.field_size_limit(FIELD_LIMIT)
    with open(path, encoding="utf-8-sig", newline="") as f:  # utf-8-sig drops GLUE's byte-order mark
        first = f.readline()
        f.seek(0)
        if path.suffix == ".csv":
            reader = csv.reader(f)
        else:
            # GLUE TSVs hold unbalanced quotes ('"The foodservice ...'), so quotes are plain characters here
            delimiter = "\t" if "\t" in first else ";" if ";" in first else None
            if delimiter is None:
                raise ValueError(f"{path}: cannot tell the column separator (expected tabs or ';' in the first line)")
            reader = csv.reader(f, delimiter=delimiter, quoting=csv.QUOTE_NONE)
        try:
            return [r for r in progress(reader, desc=f"reading {path.name}", unit=" rows") if r]
        except csv.Error as e:  # a field over FIELD_LIMIT, a NUL byte: the file is not what its name says
            raise ValueError(f"{path}, line {reader.line_num}: {e}; is it a {path.suffix[1:].upper()} file?") from None


def _read_delimited(path: Path, spec: DatasetSpec) -> tuple[dict[str, list], Layout]:
    rows = _delimited_rows(path)
    if not rows:
        raise ValueError(f"{path}: the file is empty; the split it names has no rows")
    header = [c.strip().lower() for c in rows[0]]
    if {c for layout in spec.layouts for c in layout.needs()} & set(header):
        rows, layout = rows[1:], None
    else:  # header-less mirrors (Zhang et al.'s CSVs): the declared layout of that many columns
        layout = next((l for l in spec.layouts if len(l.columns) == len(header)), None)
        if layout is None:
            raise _layout_error(path, spec, header)
        header = list(layout.columns)
    for i, r in enumerate(rows):
        if len(r) != len(header):
            raise ValueError(f"{path}: row {i + 1} has {len(r)} fields but the header has {len(header)}")
    columns = {c: [r[j] for r in rows] for j, c in enumerate(header)}
    return columns, layout or _match(path, spec, columns)


def _read_jsonl(path: Path) -> dict[str, list]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(progress(f, desc=f"reading {path.name}", unit=" rows")):
            try:
                rows += [json.loads(line)] if line.strip() else []
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {i + 1} is not JSON ({e.msg}); "
                                 "write one JSON object per line") from None
    keys = dict.fromkeys(k for r in rows for k in r)  # first-seen order, so messages list them the same way
    return {k.strip().lower(): [r.get(k) for r in rows] for k in keys}


def read_columns(path, spec: DatasetSpec) -> tuple[dict[str, list], Layout]:
    """A data file as ({lower-case column name: values}, the Layout it matches); parquet, CSV, TSV,
    ';'-separated .txt or JSONL. A file that matches none of `spec.layouts` is a ValueError."""
    path = Path(path)
    try:
        if path.suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq
            try:
                table = pq.read_table(path).to_pydict()
            except pa.ArrowException as e:
                raise ValueError(f"{path}: not a readable parquet file ({e})") from None
            columns = {c.strip().lower(): v for c, v in table.items()}
        elif path.suffix == ".jsonl":
            columns = _read_jsonl(path)
        elif path.suffix in (".csv", ".tsv", ".txt"):
            return _read_delimited(path, spec)
        else:
            raise ValueError(f"{path}: unsupported file type; use one of {', '.join(EXTENSIONS)}")
    except UnicodeDecodeError as e:
        raise _not_utf8(path, e) from None
    return columns, _match(path, spec, columns)


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
    try:
        lines = [l.strip() for l in Path(path).read_text(encoding="utf-8-sig").splitlines()]
    except UnicodeDecodeError as e:
        raise _not_utf8(Path(path), e) from None
    lines = [l for l in lines if l and not l.startswith("#")]
    numbered = [re.fullmatch(r"(\d+)\s*[:\t]\s*(.+)", l) for l in lines]
    if lines and all(numbered):
        return {int(m[1]): m[2].strip() for m in numbered}
    return lines


def _id_map(spec: DatasetSpec, layout: Layout, path: Path, by_name: dict, notes: list[str]) -> dict[int, int]:
    """What each id in a file of this layout means, as a hub id: by name through the layout's names
    file (a local id never means its position), else the hub's order counted from layout.first_id."""
    K = len(spec.label_names)
    if layout.names_file is None:
        if layout.first_id:
            last = K - 1 + layout.first_id
            _note(notes, f"labels {layout.first_id}..{last} of {path.name} read as ids in the hub's order")
        return {i + layout.first_id: i for i in range(K)}
    names_path = path.parent / layout.names_file
    if not names_path.is_file():
        raise FileNotFoundError(f"{path}: its label ids are defined by {layout.names_file}, which is not beside it; "
                                f"add it ('N: Name' per line) or write the labels as names")
    names = read_label_names(names_path)
    if isinstance(names, list):
        names = {layout.first_id + i: n for i, n in enumerate(names)}
    unknown = [n for n in names.values() if _norm(n) not in by_name]
    if unknown:
        raise ValueError(f"{names_path}: label names {unknown} are not {spec.name}'s ({', '.join(spec.label_names)})")
    _note(notes, f"label ids mapped by name through {names_path.name}")
    return {i: by_name[_norm(n)] for i, n in names.items()}


def map_labels(values: list, spec: DatasetSpec, layout: Layout, path: Path, notes: list[str]) -> list[int]:
    """A file's raw labels (ids as its layout declares them, or names) as the hub's ids."""
    K = len(spec.label_names)
    by_name = {_norm(n): i for i, n in enumerate(spec.label_names)}
    by_name.update({_norm(a): by_name[_norm(n)] for a, n in spec.label_aliases})
    id_map = _id_map(spec, layout, path, by_name, notes)
    mapped = [id_map.get(v) if isinstance(v, int) else by_name.get(_norm(v)) for v in values]
    bad = [(i + 1, v) for i, (m, v) in enumerate(zip(mapped, values)) if m is None][:5]
    if bad:
        shown = ", ".join(f"row {i}: {v!r}" for i, v in bad)
        ids = f"{min(id_map)}..{max(id_map)}" if layout.names_file else f"{layout.first_id}..{K - 1 + layout.first_id}"
        raise ValueError(f"{path}: labels outside {spec.name}'s {K} classes, e.g. {shown}; "
                         f"expected ids {ids} or names {', '.join(spec.label_names)}")
    return mapped


def _note(notes: list[str], note: str):
    if note not in notes:  # one note per fact, however many files share it
        notes.append(note)


def read_labelled(path: Path, spec, notes: list[str]) -> tuple[list[str], list[str] | None, list[int]] | None:
    """Texts, second segments (pair tasks, else None) and hub label ids of one file of dataset `spec`.
    None when every label is -1 (a GLUE-style test file whose labels are withheld). Rows whose text is
    empty are dropped with a note: an empty input carries no evidence for its label."""
    columns, layout = read_columns(path, spec)
    if not next(iter(columns.values()), []):
        raise ValueError(f"{path}: no rows; the split it names has no examples (the {spec.name} split is empty)")

    def joined(fields):
        parts = [[("" if v is None else str(v)).strip() for v in columns[c]] for c in fields]
        return [" ".join(p for p in ps if p) for ps in zip(*parts)]

    raw = [_as_id(v) for v in columns[layout.label]]
    if all(v == -1 for v in raw):
        notes.append(f"{path.name}: every label is -1 (hidden), skipped")
        return None
    texts, pairs = joined(layout.text), joined(layout.pair) if spec.pair else None
    labels = map_labels(raw, spec, layout, path, notes)
    keep = [i for i, t in enumerate(texts) if t and (pairs is None or pairs[i])]
    if len(keep) < len(texts):
        note = f"dropped {len(texts) - len(keep)} of {len(texts)} rows of {path} whose text is empty"
        notes.append(note)
        print(f"note: {note}", file=sys.stderr)  # training prints no dataset notes: say it where it is seen
        texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
        pairs = None if pairs is None else [pairs[i] for i in keep]
    return texts, pairs, labels
