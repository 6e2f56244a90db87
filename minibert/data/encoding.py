"""Tokenising once (cached on disk) and fast batching; the datasets themselves are in datasets.py.

    ds = load_dataset("sst2", data_dir=None, split="paper", seed=0)     # datasets.py: -> Dataset(train, test, notes)
    enc = encode(ds.train, tokenizer, ds.spec.max_length, cache_dir)   # tokenise once, cached on disk
    for batch in batches(enc, 32, shuffle=True, seed=0, epoch=e): ... # dynamic padding, length grouping

A token cache file is written atomically (a temporary file renamed into place), so a killed run never
leaves half a file; a damaged one (truncated, empty, garbage) is discarded and rebuilt with a note.

`python -m minibert data <name>` prints splits, class balance, token lengths and padding fractions.
"""
import hashlib
import json
import os
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..cli import Parser, main_wrapper
from ..files import atomic
from ..tokenizer import load_tokenizer, pad_batch
from .datasets import DATASETS, SPLITS, Split, load_dataset
from .readers import progress

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


TOKENIZE_CHUNK = 4096  # examples per call to the (multi-threaded) tokenizer: small enough for a moving bar


def _tokenize(split: Split, tokenizer, max_length: int) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids and types of every example, in chunks so that a large split shows a progress bar."""
    ids, type_ids = [], []
    with progress(total=len(split), desc=f"tokenising {split.name}", unit=" examples") as bar:
        for start in range(0, len(split), TOKENIZE_CHUNK):
            end = start + TOKENIZE_CHUNK
            pairs = None if split.pairs is None else split.pairs[start:end]
            chunk_ids, chunk_types = tokenizer.encode(split.texts[start:end], pairs, max_length=max_length)
            ids += chunk_ids
            type_ids += chunk_types
            bar.update(len(chunk_ids))
    return ids, type_ids


def _read_cache(path: Path, n: int) -> tuple[list, list, np.ndarray] | None:
    """ids, type_ids and lengths from a cache file of `n` examples; None (with a note) when it is damaged."""
    try:
        with np.load(path) as z:  # allow_pickle stays off: a cache file never holds objects
            lengths, flat_ids, flat_types = z["lengths"].astype(np.int64), z["ids"], z["type_ids"]
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        # our own words: numpy's would suggest loading the file with pickles allowed
        reason = ("an empty file" if path.stat().st_size == 0 else f"no {e} array" if isinstance(e, KeyError)
                  else f"truncated or not an .npz archive ({type(e).__name__})")
    else:
        if len(lengths) == n and len(flat_ids) == len(flat_types) == lengths.sum():
            cuts = np.cumsum(lengths)[:-1]
            return ([a.tolist() for a in np.split(flat_ids, cuts)], [a.tolist() for a in np.split(flat_types, cuts)],
                    lengths)
        reason = f"{len(lengths)} examples and {len(flat_ids)} tokens where the split has {n} examples"
    print(f"note: token cache {path} was damaged ({reason}); rebuilding", file=sys.stderr)
    return None


def _write_cache(path: Path, ids, type_ids, lengths: np.ndarray):
    """Write to a temporary file in the same folder, then rename it into place: readers (other ranks, a
    rerun after a kill) see the whole file or none of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, ids=np.fromiter((t for x in ids for t in x), np.int32),
                 type_ids=np.fromiter((t for x in type_ids for t in x), np.int8), lengths=lengths)
        f.flush()
        os.fsync(f.fileno())  # the bytes are on disk before the name points at them


def encode(split: Split, tokenizer, max_length: int, cache_dir=None) -> Encoded:
    """Tokenise a Split once (truncating to max_length, pairs longest-first). With `cache_dir`, the result
    is stored there keyed by tokenizer + dataset + content + max_length and reused next time."""
    path = None
    if cache_dir is not None:
        tag = split.name.replace("/", "-") or "split"
        path = Path(cache_dir) / f"{tag}-{max_length}-{_cache_key(split, tokenizer, max_length)}.npz"
        cached = _read_cache(path, len(split)) if path.is_file() else None
        if cached is not None:
            return Encoded(cached[0], cached[1], list(split.labels), cached[2])
    ids, type_ids = _tokenize(split, tokenizer, max_length)
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    if path is not None:
        _write_cache(path, ids, type_ids, lengths)
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
            seed: int = 0, epoch: int = 0, pad_id: int = 0, multiple_of: int = 1, max_length: int | None = None):
    """Yield dicts of LongTensors input_ids, attention_mask, token_type_ids (B, T) padded to the batch's
    longest example rounded up to a multiple of `multiple_of` (but not past max_length), and lengths and
    labels (B,). Every example appears exactly once per epoch.

    multiple_of=8 keeps a GPU's tensor cores and attention kernels on aligned shapes; a coarser one (16,
    32) bounds how many shapes torch.compile meets in a run, each of which it compiles once."""
    labels = np.asarray(enc.labels, dtype=np.int64)
    for index in batch_indices(enc.lengths, batch_size, shuffle, group_by_length, seed, epoch):
        longest = int(enc.lengths[index].max())
        T = max(longest, min(-(-longest // multiple_of) * multiple_of, max_length or longest * multiple_of))
        batch = pad_batch([enc.ids[i] for i in index], [enc.type_ids[i] for i in index], pad_id, length=T)
        batch["labels"] = torch.from_numpy(labels[index])
        yield batch


def padding_fraction(enc: Encoded, batch_size: int, **batch_kwargs) -> float:
    """Fraction of all batch slots (B * T summed over batches) that are padding, for `batches(...)`'s order."""
    batch_kwargs.pop("pad_id", None)  # padding is counted, its id doesn't matter
    index = batch_indices(enc.lengths, batch_size, **batch_kwargs)
    slots = sum(len(i) * int(enc.lengths[i].max()) for i in index)
    return 1.0 - float(enc.lengths.sum()) / slots


# ----------------------------------------------------------------------------------------------------
# CLI: python -m minibert data sst2 --data-dir ../shared/data/sst2


def _balance(split: Split) -> str:
    n = max(len(split), 1)
    return ", ".join(f"{k} {v} ({100 * v / n:.1f}%)" for k, v in split.class_balance().items())


@main_wrapper
def main(argv=None) -> int:
    p = Parser(prog="python -m minibert data",
               description="A dataset's splits, class balance, token lengths and padding fractions.")
    p.add_argument("name", help=f"dataset: {', '.join(DATASETS)}")
    p.add_argument("--data-dir", default=None, help="local folder with the dataset's files (default: the hub)")
    p.add_argument("--split", default="paper", choices=SPLITS, help="Table 1 split or official")
    p.add_argument("--seed", type=int, default=0, help="seed of the paper split")
    p.add_argument("--limit", type=int, default=None, help="cap train and test at this many examples")
    p.add_argument("--model", default="base", help="tokenizer: preset, checkpoint folder or hub id")
    p.add_argument("--max-length", type=int, default=None, help="truncation length (default: the dataset's)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size for the padding fractions")
    p.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "minibert" / "tokens"),
                   help="where tokenised data is cached")
    args = p.parse_args(argv)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
