"""BertConfig: one dataclass for BERT and DistilBERT, read from and written to HF `config.json`.

The two families name the same quantities differently (hidden_size vs dim, num_hidden_layers vs
n_layers, ...). We keep BERT's names and translate DistilBERT's at the boundary.
"""
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

# Sizes a config.json may ask for: positive integers, at most these (bert-large: 24 layers, hidden 1024).
# Each bound is far above any BERT; they stop a typo from building a million layers before memory runs out.
SIZE_LIMITS = {"vocab_size": 10_000_000, "hidden_size": 65_536, "num_hidden_layers": 1_000,
               "num_attention_heads": 1_024, "intermediate_size": 262_144, "max_position_embeddings": 1_048_576}


@dataclass
class BertConfig:
    flavour: str = "bert"  # "bert" | "distilbert"
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2  # 0 for DistilBERT: it has no token type embeddings
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    classifier_dropout: float | None = None  # None: use hidden_dropout_prob (BERT) / seq_classif_dropout
    seq_classif_dropout: float = 0.2  # DistilBERT's classification head dropout
    hidden_act: str = "gelu"
    pad_token_id: int = 0
    initializer_range: float = 0.02

    def __post_init__(self):
        """Check types and ranges before anything is built: a bad config is one line, never a traceback."""
        if self.flavour not in ("bert", "distilbert"):
            raise ValueError(f"flavour must be 'bert' or 'distilbert', got {self.flavour!r}")
        for name, limit in SIZE_LIMITS.items():
            value = getattr(self, name)
            if type(value) is not int or not 0 < value <= limit:  # bool is an int subclass: refused too
                raise ValueError(f"{name} must be an integer from 1 to {limit:,}, got {value!r}")
        for name in ("type_vocab_size", "pad_token_id"):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if self.pad_token_id >= self.vocab_size:
            raise ValueError(f"pad_token_id {self.pad_token_id} is not below vocab_size {self.vocab_size}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "seq_classif_dropout",
                     "classifier_dropout", "layer_norm_eps", "initializer_range"):
            value = getattr(self, name)
            if value is None and name == "classifier_dropout":
                continue
            top = 1.0 if "dropout" in name else float("inf")
            if type(value) not in (int, float) or not 0 <= value < top or (name == "layer_norm_eps" and value == 0):
                raise ValueError(f"{name} must be a number in {'[0, 1)' if top == 1 else '(0, inf)'}, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by "
                             f"num_attention_heads {self.num_attention_heads}")
        if self.hidden_act not in ("gelu", "relu", "gelu_new", "gelu_pytorch_tanh"):
            raise ValueError(f"unsupported activation {self.hidden_act!r}: use gelu or relu")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def num_parameters(self) -> int:
        """The parameter count of the encoder this config builds, computed without building it."""
        H, I, L = self.hidden_size, self.intermediate_size, self.num_hidden_layers
        embeddings = (self.vocab_size + self.max_position_embeddings + self.type_vocab_size) * H + 2 * H
        layer = (3 * H * H + 3 * H) + (H * H + H) + (H * I + I) + (I * H + H) + 2 * (2 * H)  # qkv, proj, ffn, 2 norms
        pooler = H * H + H if self.flavour == "bert" else 0
        return embeddings + L * layer + pooler

    # ---- HF config.json ------------------------------------------------------------------

    @classmethod
    def from_hf_dict(cls, d: dict) -> "BertConfig":
        """Translate a HF `config.json` dict (model_type bert or distilbert)."""
        if not isinstance(d, dict):
            raise ValueError(f"config.json must hold a JSON object, got a {type(d).__name__}")
        model_type = d.get("model_type")
        if model_type == "distilbert":
            missing = [k for k in ("vocab_size", "dim", "n_layers", "n_heads", "hidden_dim") if k not in d]
            if missing:
                raise ValueError(f"a distilbert config.json needs {', '.join(missing)}")
            return cls(
                flavour="distilbert",
                vocab_size=d["vocab_size"],
                hidden_size=d["dim"],
                num_hidden_layers=d["n_layers"],
                num_attention_heads=d["n_heads"],
                intermediate_size=d["hidden_dim"],
                max_position_embeddings=d.get("max_position_embeddings", 512),
                type_vocab_size=0,
                layer_norm_eps=1e-12,  # hard-coded in HF's modeling_distilbert
                hidden_dropout_prob=d.get("dropout", 0.1),
                attention_probs_dropout_prob=d.get("attention_dropout", 0.1),
                seq_classif_dropout=d.get("seq_classif_dropout", 0.2),
                hidden_act=d.get("activation", "gelu"),
                pad_token_id=d.get("pad_token_id", 0),
                initializer_range=d.get("initializer_range", 0.02),
            )
        if model_type == "bert" or (model_type is None and "num_hidden_layers" in d):
            if d.get("position_embedding_type", "absolute") != "absolute":
                raise ValueError(f"position_embedding_type {d['position_embedding_type']!r} is not supported "
                                 "(minibert implements BERT's absolute position embeddings)")
            names = {f.name for f in fields(cls)}
            return cls(flavour="bert", **{k: v for k, v in d.items() if k in names})
        raise ValueError(f"unknown model_type {model_type!r} in config.json: minibert loads 'bert' and 'distilbert'")

    def to_hf_dict(self) -> dict:
        """The HF `config.json` that `transformers` loads into BertModel / DistilBertModel."""
        if self.flavour == "distilbert":
            return {
                "architectures": ["DistilBertModel"],
                "model_type": "distilbert",
                "vocab_size": self.vocab_size,
                "dim": self.hidden_size,
                "n_layers": self.num_hidden_layers,
                "n_heads": self.num_attention_heads,
                "hidden_dim": self.intermediate_size,
                "max_position_embeddings": self.max_position_embeddings,
                "dropout": self.hidden_dropout_prob,
                "attention_dropout": self.attention_probs_dropout_prob,
                "seq_classif_dropout": self.seq_classif_dropout,
                "activation": self.hidden_act,
                "pad_token_id": self.pad_token_id,
                "initializer_range": self.initializer_range,
                "sinusoidal_pos_embds": False,
                "tie_weights_": True,
            }
        d = {k: v for k, v in asdict(self).items() if k not in ("flavour", "seq_classif_dropout")}
        return {"architectures": ["BertModel"], "model_type": "bert", "position_embedding_type": "absolute", **d}

    @classmethod
    def from_json(cls, path) -> "BertConfig":
        """A checked config from a HF config.json: every error names the file, and a config whose weights
        would not fit in this machine's memory is refused before anything is allocated."""
        path = Path(path)
        d = read_json_object(path)
        try:
            if d.get("model_type") == "distilbert" and d.get("sinusoidal_pos_embds"):
                raise ValueError("sinusoidal position embeddings are not supported")
            config = cls.from_hf_dict(d)
        except ValueError as e:
            raise ValueError(f"{path}: {e}; fix it or re-download the checkpoint's config.json") from None
        check_fits_in_memory(config, path)
        return config


def read_json_object(path) -> dict:
    """The JSON object in `path`, or a one-line ValueError naming the file."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); re-download the checkpoint's config.json") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text; re-download the checkpoint's config.json") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path} must hold a JSON object, not a {type(d).__name__}; "
                         "re-download the checkpoint's config.json")
    return d


def available_memory() -> int | None:
    """Bytes of memory this machine can still give: MemAvailable on Linux, else all physical memory, else None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the file says kB
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): no check
        return None


def check_fits_in_memory(config: BertConfig, path) -> None:
    """Refuse a config whose fp32 weights alone exceed the memory available, before building the model."""
    need = 4 * config.num_parameters()
    have = available_memory()
    if have is not None and need > have:
        raise ValueError(f"{path} describes a model of {config.num_parameters():.3g} parameters ({need / 2**30:,.1f} "
                         f"GiB in fp32), more than the {have / 2**30:,.1f} GiB of memory available here; "
                         "check hidden_size, num_hidden_layers, intermediate_size and vocab_size")


# The paper's three models, as their hub configs define them.
PRESETS = {
    "base": ("bert-base-uncased", BertConfig()),
    "large": ("bert-large-uncased", BertConfig(hidden_size=1024, num_hidden_layers=24,
                                               num_attention_heads=16, intermediate_size=4096)),
    "distil": ("distilbert-base-uncased", BertConfig(flavour="distilbert", num_hidden_layers=6, type_vocab_size=0)),
}
