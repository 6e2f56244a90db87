"""Checkpoints: find the files, map Hugging Face's names onto ours, load strictly, save HF-compatibly.

A checkpoint is a directory exactly as the hub stores it: config.json + model.safetensors (or a legacy
pytorch_model.bin) + tokenizer.json / vocab.txt. `resolve()` turns a preset ("base", "large",
"distil"), a local directory or a hub repo id into such a directory, downloading with huggingface_hub
into weights/ when needed. The key map below is the single place where HF's names are translated.
"""
import os
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .config import PRESETS, BertConfig, read_json_object
from .files import atomic, check_room, nbytes, write_json
from .model import Bert

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json")
# Keys that real checkpoints carry and an encoder does not use: masked-LM / NSP heads (BERT), the
# masked-LM head (DistilBERT), a stale position-ids buffer, and the heads of a fine-tuned classifier.
IGNORED_PREFIXES = ("cls.", "vocab_transform.", "vocab_layer_norm.", "vocab_projector.",
                    "classifier.", "pre_classifier.")


def weights_dir() -> Path:
    """Where downloaded checkpoints live: $MINIBERT_WEIGHTS, else the checkout's weights/ folder (a clone), else
    ~/.cache/minibert/weights (an installed package, whose parent folder is site-packages' and not ours)."""
    if "MINIBERT_WEIGHTS" in os.environ:
        return Path(os.environ["MINIBERT_WEIGHTS"])
    checkout = Path(__file__).resolve().parent.parent / "weights"
    return checkout if checkout.is_dir() else Path.home() / ".cache" / "minibert" / "weights"


# ---- finding the files ---------------------------------------------------------------------

def _looks_like_path(name: str) -> bool:
    """Hub ids are 'name' or 'owner/name'; anything else with a slash, or under an existing folder, is a path."""
    return (name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name
            or ("/" in name and Path(name.split("/")[0]).is_dir()))


def resolve(name_or_path, need_weights: bool = True) -> Path:
    """A local checkpoint directory for a preset, a directory, or a hub repo id (downloading if needed)."""
    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        return _check_dir(path, need_weights)
    if isinstance(name_or_path, Path) or _looks_like_path(name) or path.exists():
        raise FileNotFoundError(f"checkpoint directory {path} not found; pass an existing directory, "
                                f"a preset ({', '.join(PRESETS)}) or a hub id such as bert-base-uncased")
    repo_id = PRESETS[name][0] if name in PRESETS else name
    for local in (local_dir_for(name), local_dir_for(repo_id)):  # weights/base or weights/bert-base-uncased
        if (local / "config.json").is_file() and (not need_weights or _has_weights(local)):
            return local
    # not fetched yet, or only the tokenizer was: download fills in what is missing
    return download(repo_id, local_dir_for(name), need_weights=need_weights)


def local_dir_for(name: str) -> Path:
    """Where a preset or hub id lives under weights/: weights/base, weights/<owner>--<name>."""
    return weights_dir() / name.replace("/", "--")


def _has_weights(path: Path) -> bool:
    return any((path / f).is_file() for f in WEIGHT_FILES)


def _check_dir(path: Path, need_weights: bool) -> Path:
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json; a checkpoint directory needs config.json and "
                                "model.safetensors as the hub stores them")
    if need_weights and not _has_weights(path):
        raise FileNotFoundError(f"{path} has no model.safetensors (or pytorch_model.bin); copy the weights "
                                "there or run `python -m minibert download`")
    return path


def download(repo_id: str, local_dir, need_weights: bool = True, progress: bool = True) -> Path:
    """Fetch only the files minibert needs from the hub into local_dir, and return it.

    Resumable: huggingface_hub keeps each finished file (and its etag under local_dir/.cache) and skips
    it on the next run, so an interrupted download picks up at the first missing file. A weights file
    that is there but does not load (cut short by a copy) is fetched again.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url, list_repo_files
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    local_dir = Path(local_dir)
    (enable_progress_bars if progress else disable_progress_bars)()
    weights = None
    try:
        # One quick request first: offline or with the hub unreachable it fails at once and quietly, where
        # listing or downloading would retry five times with growing waits (half a minute of warnings).
        get_hf_file_metadata(hf_hub_url(repo_id, "config.json"))  # no retries by default, unlike the rest
        available = set(list_repo_files(repo_id))
        wanted = ["config.json", *[f for f in TOKENIZER_FILES if f in available]]
        weights = next((f for f in WEIGHT_FILES if f in available), None)
        if need_weights and weights is not None:
            wanted.append(weights)
        for i, filename in enumerate(wanted, 1):
            if progress:
                print(f"{repo_id} [{i}/{len(wanted)}] {filename}", file=sys.stderr)
            hf_hub_download(repo_id, filename, local_dir=local_dir)
        if need_weights and weights is not None and not _loads(local_dir / weights):
            # huggingface_hub trusts a file whose etag it recorded, even if it was truncated since
            print(f"{repo_id}: {weights} does not load, fetching it again", file=sys.stderr)
            hf_hub_download(repo_id, weights, local_dir=local_dir, force_download=True)
    except Exception as e:  # offline, unreachable, unknown repo, auth: all end the same way for the user
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FileNotFoundError(
            f"could not fetch {repo_id!r} from the Hugging Face Hub ({type(e).__name__}: {reason[:200]}); "
            f"without internet, put config.json, model.safetensors and vocab.txt/tokenizer.json in "
            f"{local_dir}/ (see weights/README.md)") from None
    if need_weights and weights is None:
        raise FileNotFoundError(f"hub repo {repo_id} has neither model.safetensors nor pytorch_model.bin")
    return _check_dir(local_dir, need_weights)


def _loads(path: Path) -> bool:
    """Whether a downloaded weights file is whole. A safetensors header must account for every byte of the
    file, so opening it is enough (no full read of a 1.3 GB file); a .bin has to be unpickled."""
    try:
        if path.suffix == ".safetensors":
            with safe_open(str(path), "pt"):
                return True
        read_state_dict(path)
        return True
    except Exception:  # SafetensorError, or read_state_dict's ValueError
        return False


# ---- the key map ---------------------------------------------------------------------------

def key_map(config: BertConfig) -> dict[str, list[str]]:
    """minibert parameter name -> the HF names (unprefixed) whose tensors make it, concatenated on dim 0.

    Only the fused qkv projection takes three HF tensors (query, key, value in that order).
    """
    bert = config.flavour == "bert"
    modules = {
        "embeddings.word_embeddings": ["embeddings.word_embeddings"],
        "embeddings.position_embeddings": ["embeddings.position_embeddings"],
        "embeddings.norm": ["embeddings.LayerNorm"],
    }
    if config.type_vocab_size > 0:
        modules["embeddings.token_type_embeddings"] = ["embeddings.token_type_embeddings"]
    for i in range(config.num_hidden_layers):
        ours = f"layers.{i}."
        if bert:
            hf = f"encoder.layer.{i}."
            modules.update({
                ours + "attention.qkv": [hf + "attention.self.query", hf + "attention.self.key",
                                         hf + "attention.self.value"],
                ours + "attention.proj": [hf + "attention.output.dense"],
                ours + "attn_norm": [hf + "attention.output.LayerNorm"],
                ours + "ffn.up": [hf + "intermediate.dense"],
                ours + "ffn.down": [hf + "output.dense"],
                ours + "ffn_norm": [hf + "output.LayerNorm"],
            })
        else:
            hf = f"transformer.layer.{i}."
            modules.update({
                ours + "attention.qkv": [hf + "attention.q_lin", hf + "attention.k_lin", hf + "attention.v_lin"],
                ours + "attention.proj": [hf + "attention.out_lin"],
                ours + "attn_norm": [hf + "sa_layer_norm"],
                ours + "ffn.up": [hf + "ffn.lin1"],
                ours + "ffn.down": [hf + "ffn.lin2"],
                ours + "ffn_norm": [hf + "output_layer_norm"],
            })
    if bert:
        modules["pooler.dense"] = ["pooler.dense"]
    params = {}
    for ours, theirs in modules.items():
        suffixes = ("weight",) if ours.startswith("embeddings.") and not ours.endswith("norm") else ("weight", "bias")
        for s in suffixes:
            params[f"{ours}.{s}"] = [f"{t}.{s}" for t in theirs]
    return params


def _normalise(state: dict, config: BertConfig) -> tuple[dict, list[str]]:
    """Strip the model prefix, rename legacy LayerNorm.gamma/beta, and set aside the known extras."""
    prefix = "bert." if config.flavour == "bert" else "distilbert."
    out, ignored = {}, []
    for key, tensor in state.items():
        k = key[len(prefix):] if key.startswith(prefix) else key
        if k.startswith(IGNORED_PREFIXES) or k.endswith("position_ids"):
            ignored.append(key)
            continue
        if ".LayerNorm." in k or "layer_norm." in k:  # TF-era checkpoints (bert-base-uncased) say gamma/beta
            k = k.replace(".gamma", ".weight").replace(".beta", ".bias")
        out[k] = tensor
    return out, ignored


def read_state_dict(path) -> dict:
    """Tensors of a model.safetensors (or a pytorch_model.bin, loaded with weights_only=True)."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # safetensors, pickle and OS errors all mean: unreadable
        raise ValueError(f"{path} is not a readable checkpoint ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:160] if str(e) else 'empty'}); it may be truncated: "
                         "re-download it") from None


def load_state(model: Bert, state: dict) -> list[str]:
    """Copy an HF state dict into `model` strictly; returns the known-extra keys that were ignored."""
    state, ignored = _normalise(state, model.config)
    mapping = key_map(model.config)
    ours = model.state_dict()
    assert set(mapping) == set(ours), "key_map out of sync with model.py"  # a bug of ours, not the user's
    needed = {k for names in mapping.values() for k in names}
    missing = sorted(needed - set(state))
    unexpected = sorted(set(state) - needed)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_short(unexpected)}")
        raise ValueError(f"checkpoint does not match a {model.config.flavour} encoder: {'; '.join(parts)}; "
                         "is config.json the one that belongs to these weights?")
    mismatched = []
    with torch.no_grad():
        for name, hf_names in mapping.items():
            tensor = torch.cat([state[k] for k in hf_names], dim=0) if len(hf_names) > 1 else state[hf_names[0]]
            if tensor.shape != ours[name].shape:
                mismatched.append(f"{'+'.join(hf_names)}: checkpoint {tuple(tensor.shape)} vs "
                                  f"config {tuple(ours[name].shape)}")
                continue
            ours[name].copy_(tensor)
    if mismatched:
        raise ValueError(f"checkpoint shapes do not match config.json: {_short(mismatched)}; "
                         "the config and the weights come from different models")
    return ignored


def _short(items: list[str], n: int = 6) -> str:
    return ", ".join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


def load_pretrained(name_or_path, device=None, verbose: bool = False) -> Bert:
    """An encoder (eval mode) from a preset ('base'|'large'|'distil'), a local directory, or a hub id."""
    directory = resolve(name_or_path)
    config = BertConfig.from_json(directory / "config.json")
    weights = next(directory / f for f in WEIGHT_FILES if (directory / f).is_file())
    model = Bert(config)
    ignored = load_state(model, read_state_dict(weights))
    if verbose and ignored:
        print(f"minibert: ignored {len(ignored)} keys not used by the encoder: {_short(ignored)}")
    return model.to(device).eval() if device is not None else model.eval()


# ---- saving --------------------------------------------------------------------------------

def hf_state_dict(model: Bert, prefix: str = "") -> dict:
    """Our weights under HF's names (split qkv back into query/key/value)."""
    out = {}
    state = model.state_dict()
    for name, hf_names in key_map(model.config).items():
        pieces = state[name].chunk(len(hf_names), dim=0) if len(hf_names) > 1 else [state[name]]
        for hf, piece in zip(hf_names, pieces):
            out[prefix + hf] = piece.detach().contiguous().cpu()
    return out


def hf_classifier_state_dict(clf) -> dict:
    """A SequenceClassifier's weights under *ForSequenceClassification's names (bert./distilbert. + head)."""
    state = hf_state_dict(clf.encoder, prefix="bert." if clf.config.flavour == "bert" else "distilbert.")
    state.update(head_state_dict(clf))
    return state


def head_state_dict(clf) -> dict:
    """The head's own weights: classifier.* (and DistilBERT's pre_classifier.* for [CLS] pooling)."""
    return {name: tensor.detach().contiguous().cpu() for name, tensor in clf.state_dict().items()
            if name.startswith(("classifier.", "pre_classifier."))}


def _write_json(path: Path, obj: dict) -> None:
    write_json(path, obj)


def _write_safetensors(path: Path, state: dict) -> None:
    with atomic(path, size=nbytes(state)) as tmp:  # also gives the file the usual 0644, where safetensors makes it 0600
        save_file(state, str(tmp), metadata={"format": "pt"})


# A mean-pooled classifier's head: transformers has no class that pools this way, so the head lives in a
# file of minibert's own that transformers does not read, and config.json says it is a plain encoder.
HEAD_FILE = "minibert_head.safetensors"


def save_pretrained(model, directory, label_names: list[str] | None = None) -> Path:
    """Write HF-format config.json + model.safetensors (mode 0644, each written atomically).

    A `Bert` is saved as BertModel / DistilBertModel. A `SequenceClassifier` with [CLS] pooling is saved as
    *ForSequenceClassification: transformers loads it and computes the same logits. With mean pooling the
    encoder is saved as BertModel / DistilBertModel (transformers' AutoModel loads it exactly) and the head
    in minibert_head.safetensors, which only `load_classifier` reads: AutoModelForSequenceClassification
    reports its classifier as newly initialised rather than loading a [CLS]-pooled model with the trained
    head. config.json records `minibert_pooling` and the label names either way.
    """
    from .heads import SequenceClassifier

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # room for every file first: a full disk never leaves a new encoder beside an old head (mean pooling)
    check_room(directory, nbytes(model.state_dict()), directory / "model.safetensors")
    if not isinstance(model, SequenceClassifier):
        _write_safetensors(directory / "model.safetensors", hf_state_dict(model))
        _write_json(directory / "config.json", model.config.to_hf_dict())
        return directory
    cfg = model.encoder.config
    hf = cfg.to_hf_dict()
    labels = label_names or [f"LABEL_{i}" for i in range(model.num_labels)]
    hf.update(minibert_pooling=model.pooling, id2label={str(i): n for i, n in enumerate(labels)},
              label2id={n: i for i, n in enumerate(labels)})
    if model.pooling == "cls":
        hf["architectures"] = [f"{'Bert' if cfg.flavour == 'bert' else 'DistilBert'}ForSequenceClassification"]
        _write_safetensors(directory / "model.safetensors", hf_classifier_state_dict(model))
        (directory / HEAD_FILE).unlink(missing_ok=True)  # a stale one would override the head on loading
    else:
        _write_safetensors(directory / "model.safetensors", hf_state_dict(model.encoder))
        _write_safetensors(directory / HEAD_FILE, head_state_dict(model))
    _write_json(directory / "config.json", hf)
    return directory


def load_classifier(directory, device=None):
    """A SequenceClassifier from a directory written by save_pretrained (or by HF's *ForSequenceClassification)."""
    from .heads import SequenceClassifier

    directory = _check_dir(Path(directory), need_weights=True)
    config = BertConfig.from_json(directory / "config.json")
    hf = read_json_object(directory / "config.json")
    weights = next(directory / f for f in WEIGHT_FILES if (directory / f).is_file())
    state = read_state_dict(weights)
    # a mean-pooled classifier keeps its head beside the encoder (see save_pretrained)
    head = read_state_dict(directory / HEAD_FILE) if (directory / HEAD_FILE).is_file() else state
    head = {k: v for k, v in head.items() if k.startswith(("classifier.", "pre_classifier."))}
    if "classifier.weight" not in head:
        raise ValueError(f"{directory} holds no classifier head (no classifier.weight); it is an encoder "
                         "checkpoint: load it with load_pretrained and train a head")
    num_labels = head["classifier.weight"].shape[0]
    model = SequenceClassifier(Bert(config), num_labels, pooling=hf.get("minibert_pooling", "cls"))
    load_state(model.encoder, state)
    model.load_state_dict({**model.state_dict(), **head})
    names = hf.get("id2label")
    if names is not None and (not isinstance(names, dict) or set(names) != {str(i) for i in range(num_labels)}):
        given = len(names) if isinstance(names, dict) else type(names).__name__
        raise ValueError(f"{directory / 'config.json'}: id2label names {given} labels but the head has {num_labels} "
                         f"rows; give id2label one name per row (\"0\" to \"{num_labels - 1}\"), or remove it")
    model.label_names = [names[str(i)] for i in range(num_labels)] if names is not None else None
    return (model.to(device) if device is not None else model).eval()
