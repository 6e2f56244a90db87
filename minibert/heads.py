"""Pooling and the sequence classification head, mirroring Hugging Face's heads exactly.

pooling="cls" is what BertForSequenceClassification / DistilBertForSequenceClassification do:
    BERT:        pooler (tanh(W h_[CLS] + b), pre-trained) -> dropout -> linear
    DistilBERT:  h_[CLS] -> pre_classifier (new) -> ReLU -> dropout -> linear
pooling="mean" is the paper's section 4.3: the average of the last hidden states of every real token
except [CLS] -> dropout -> linear.
"""
import torch
import torch.nn as nn

from .model import Bert, Dropout
from .padding import encode


def mean_pool(hidden, attention_mask):
    """Mean of hidden (B, T, H) over real (unpadded) tokens, [CLS] excluded -> (B, H)."""
    keep = attention_mask.clone()
    keep[:, 0] = 0  # drop [CLS]
    keep = keep.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    # clamp: a sequence of [CLS] alone has nothing to average; it gets a zero vector, not a NaN
    return (hidden * keep).sum(1) / keep.sum(1).clamp(min=1.0)


class SequenceClassifier(nn.Module):
    """encoder + pooling + a linear classifier. `features()` returns the pooled vector before dropout."""

    def __init__(self, encoder: Bert, num_labels: int, pooling: str = "cls"):
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
        if num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {num_labels}")
        cfg = encoder.config
        self.encoder = encoder
        self.pooling = pooling
        self.num_labels = num_labels
        # DistilBERT's [CLS] head adds a dense layer, as HF does; BERT's uses the encoder's own pooler.
        self.pre_classifier = (nn.Linear(cfg.hidden_size, cfg.hidden_size)
                               if pooling == "cls" and cfg.flavour == "distilbert" else None)
        if cfg.flavour == "distilbert" and pooling == "cls":
            p = cfg.seq_classif_dropout
        else:
            p = cfg.classifier_dropout if cfg.classifier_dropout is not None else cfg.hidden_dropout_prob
        self.dropout = Dropout(p)
        self.classifier = nn.Linear(cfg.hidden_size, num_labels)
        for layer in (self.pre_classifier, self.classifier):
            if layer is not None:
                nn.init.normal_(layer.weight, std=cfg.initializer_range)
                nn.init.zeros_(layer.bias)

    @property
    def config(self):
        return self.encoder.config

    def pool(self, out, attention_mask):
        """The pooled vector (B, H) from an EncoderOutput, before the classifier's dropout."""
        if self.pooling == "mean":
            if attention_mask is None:
                attention_mask = torch.ones(out.last_hidden_state.shape[:2], dtype=torch.long,
                                            device=out.last_hidden_state.device)
            return mean_pool(out.last_hidden_state, attention_mask)
        if self.pre_classifier is not None:
            return torch.relu(self.pre_classifier(out.last_hidden_state[:, 0]))
        return out.pooler_output

    def features(self, input_ids, attention_mask=None, token_type_ids=None, lengths=None):
        """Pooled features (B, H): what a linear probe trains on and what t-SNE plots. lengths: the tokenizer's,
        which spare the GPU a wait for the host (padding.py)."""
        # The head reads only [CLS] (or the real tokens) of the last layer, so the encoder may skip the
        # padding and, for [CLS], run its last layer for that one position: same numbers, less work.
        out = encode(self.encoder, input_ids, attention_mask, token_type_ids, lengths, cls_only=self.pooling == "cls")
        return self.pool(out, attention_mask)

    def frozen_features(self, input_ids, attention_mask=None, token_type_ids=None, lengths=None):
        """What a frozen encoder hands the trainable head (B, H), which a linear probe caches: the pooled
        vector (through BERT's pre-trained pooler, or the mean), or for DistilBERT's [CLS] head the [CLS]
        state itself, since HF's head (pre_classifier + classifier) trains whole."""
        if self.pre_classifier is None:
            return self.features(input_ids, attention_mask, token_type_ids, lengths)
        out = encode(self.encoder, input_ids, attention_mask, token_type_ids, lengths, cls_only=True)
        return out.last_hidden_state[:, 0]

    def trainable_head(self, x):
        """Logits (B, num_labels) from frozen_features: DistilBERT's pre_classifier + ReLU, then head()."""
        return self.head(torch.relu(self.pre_classifier(x)) if self.pre_classifier is not None else x)

    def head(self, features):
        """Logits (B, num_labels) from pooled features."""
        return self.classifier(self.dropout(features))

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, lengths=None):
        """Logits (B, num_labels); takes every key the tokenizer returns: clf(**tok(texts))."""
        return self.head(self.features(input_ids, attention_mask, token_type_ids, lengths))
