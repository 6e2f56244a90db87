"""BertConfig: one dataclass for BERT and DistilBERT, read from and written to HF `config.json`.

The two families name the same quantities differently (hidden_size vs dim, num_hidden_layers vs
n_layers, ...). We keep BERT's names and translate DistilBERT's at the boundary.
"""
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path


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
        if self.flavour not in ("bert", "distilbert"):
            raise ValueError(f"flavour must be 'bert' or 'distilbert', got {self.flavour!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by "
                             f"num_attention_heads {self.num_attention_heads}")
        if self.hidden_act not in ("gelu", "relu", "gelu_new", "gelu_pytorch_tanh"):
            raise ValueError(f"unsupported activation {self.hidden_act!r}: use gelu or relu")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    # ---- HF config.json ------------------------------------------------------------------

    @classmethod
    def from_hf_dict(cls, d: dict) -> "BertConfig":
        """Translate a HF `config.json` dict (model_type bert or distilbert)."""
        model_type = d.get("model_type")
        if model_type == "distilbert":
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
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON ({e}); re-download the checkpoint's config.json") from None
        if d.get("model_type") == "distilbert" and d.get("sinusoidal_pos_embds"):
            raise ValueError(f"{path}: sinusoidal position embeddings are not supported")
        return cls.from_hf_dict(d)

    def to_json(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_hf_dict(), indent=2) + "\n")


# The paper's three models, as their hub configs define them.
PRESETS = {
    "base": ("bert-base-uncased", BertConfig()),
    "large": ("bert-large-uncased", BertConfig(hidden_size=1024, num_hidden_layers=24,
                                               num_attention_heads=16, intermediate_size=4096)),
    "distil": ("distilbert-base-uncased", BertConfig(flavour="distilbert", num_hidden_layers=6, type_vocab_size=0)),
}
