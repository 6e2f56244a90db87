"""A thin wrapper over the `tokenizers` library that returns what the model eats.

`load_tokenizer(name_or_path)` reads `tokenizer.json` when the checkpoint has one, otherwise builds the
BERT WordPiece pipeline from `vocab.txt` (lower-casing as `tokenizer_config.json` says), which is what
Hugging Face's fast tokenizer does for old checkpoints. Calling the tokenizer pads to the longest
sequence in the batch and truncates pairs longest-first, like HF's defaults.
"""
import json
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from tokenizers.implementations import BertWordPieceTokenizer


def pad_batch(ids: list[list[int]], type_ids: list[list[int]] | None = None, pad_id: int = 0,
              length: int | None = None) -> dict:
    """Right-pad token id lists to `length` (default: the longest) -> dict of LongTensors input_ids,
    attention_mask, token_type_ids, each (B, T), and lengths (B,): each row's real tokens, which the model's
    fast path reads on the host instead of waiting for the GPU (padding.py; training.device.to_device leaves
    them on the host)."""
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    T = int(lengths.max()) if length is None else length
    input_ids = np.full((len(ids), T), pad_id, dtype=np.int64)
    token_type_ids = np.zeros((len(ids), T), dtype=np.int64)
    for row, x in enumerate(ids):
        input_ids[row, : len(x)] = x
        if type_ids is not None:
            token_type_ids[row, : len(x)] = type_ids[row]
    attention_mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.int64)  # (B, T)
    return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention_mask),
            "token_type_ids": torch.from_numpy(token_type_ids), "lengths": torch.from_numpy(lengths)}


class BertTokenizer:
    """Callable tokenizer: `tok(texts, text_pairs=None, max_length=512) -> dict of LongTensors`."""

    def __init__(self, tokenizer: Tokenizer, model_max_length: int = 512):
        self.tokenizer = tokenizer
        self.model_max_length = model_max_length
        self.pad_id = tokenizer.token_to_id("[PAD]")
        self.cls_id = tokenizer.token_to_id("[CLS]")
        self.sep_id = tokenizer.token_to_id("[SEP]")
        if None in (self.pad_id, self.cls_id, self.sep_id):
            raise ValueError("tokenizer has no [PAD]/[CLS]/[SEP] tokens: is this a BERT vocabulary?")

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, texts, text_pairs=None, max_length: int | None = None):
        """Token ids and token type ids per example, truncated but not padded (lists of lists)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if text_pairs is not None:
            text_pairs = [text_pairs] if isinstance(text_pairs, str) else list(text_pairs)
            if len(text_pairs) != len(texts):
                raise ValueError(f"got {len(texts)} texts but {len(text_pairs)} text_pairs; they must pair up")
        tk = self.tokenizer
        tk.no_padding()
        tk.enable_truncation(max_length or self.model_max_length, strategy="longest_first")
        inputs = texts if text_pairs is None else list(zip(texts, text_pairs))
        encodings = tk.encode_batch(inputs)
        return [e.ids for e in encodings], [e.type_ids for e in encodings]

    def pad(self, ids: list[list[int]], type_ids: list[list[int]] | None = None) -> dict:
        """Right-pad lists of ids to the longest one: input_ids, attention_mask, token_type_ids (B, T), lengths (B,)."""
        return pad_batch(ids, type_ids, self.pad_id)

    def __call__(self, texts, text_pairs=None, max_length: int | None = None) -> dict:
        ids, type_ids = self.encode(texts, text_pairs, max_length)
        return self.pad(ids, type_ids)

    def convert_ids_to_tokens(self, ids) -> list[str]:
        return [self.tokenizer.id_to_token(int(i)) for i in ids]


def load_tokenizer(name_or_path) -> BertTokenizer:
    """Tokenizer of a preset ('base'|'large'|'distil'), a local directory with the tokenizer files
    (config.json not needed), or a hub id."""
    from .checkpoint import resolve  # local import: checkpoint imports the model, which we don't need

    if Path(name_or_path).expanduser().is_dir():
        return tokenizer_from_dir(Path(name_or_path).expanduser())
    return tokenizer_from_dir(resolve(name_or_path, need_weights=False))


def tokenizer_from_dir(directory) -> BertTokenizer:
    """Build the tokenizer from `tokenizer.json`, or from `vocab.txt` when that is all there is."""
    directory = Path(directory)
    settings = {}
    if (directory / "tokenizer_config.json").is_file():
        settings = json.loads((directory / "tokenizer_config.json").read_text())
    max_len = settings.get("model_max_length", 512)
    if not isinstance(max_len, int) or max_len > 100_000:  # HF writes 1e30 for "unknown"
        max_len = 512
    if (directory / "tokenizer.json").is_file():
        try:
            tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
        except Exception as e:
            raise ValueError(f"{directory / 'tokenizer.json'} is not a valid tokenizer file ({e}); "
                             "delete it to fall back to vocab.txt, or re-download it") from None
    elif (directory / "vocab.txt").is_file():
        tok = BertWordPieceTokenizer(
            str(directory / "vocab.txt"),
            lowercase=settings.get("do_lower_case", True),
            strip_accents=settings.get("strip_accents"),
            handle_chinese_chars=settings.get("tokenize_chinese_chars", True),
            clean_text=True,
        )._tokenizer
    else:
        raise FileNotFoundError(f"{directory} has neither tokenizer.json nor vocab.txt; "
                                "copy them from the checkpoint's hub page or run `python -m minibert download`")
    return BertTokenizer(tok, model_max_length=max_len)
