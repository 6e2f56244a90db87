"""The BERT / DistilBERT encoder, written out to be read top to bottom.

    tokens -> Embeddings -> Layer x L -> last_hidden_state (B, T, H)
                                      -> Pooler (BERT only): tanh(W h_[CLS] + b)

Each Layer is post-LN, the order of the original Transformer and of BERT (GPT-2 and later moved the
LayerNorm before each block):

    x = LayerNorm(x + SelfAttention(x))
    x = LayerNorm(x + FeedForward(x))

Deviations from the Hugging Face implementation, none of which changes a number:
- query, key and value are one fused (H -> 3H) projection; the checkpoint loader concatenates HF's
  three matrices into it (checkpoint.py).
- attention runs through F.scaled_dot_product_attention; the explicit softmax(QK^T / sqrt(d)) V is kept
  behind `explicit_attention(True)` because it is the formula a reader wants to see. Tests hold both to
  1e-5 of each other and of HF.
- DistilBERT is the same encoder without token type embeddings and without a pooler.

This file is the plain formula on the full (B, T) grid, padding included. What training and the heads run
is padding.py: these same modules and weights on the real tokens only, with a [CLS]-only last layer.

Shape letters, here and in padding.py: B sequences in the batch, T tokens per sequence (padded to the
longest), Tq queries (T, or 1 for [CLS] alone), H hidden size, nh attention heads, hs = H / nh the size
of one head, L layers, N real (not padding) tokens in the whole batch.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import BertConfig


@dataclass
class EncoderOutput:
    last_hidden_state: torch.Tensor  # (B, T, H)
    pooler_output: torch.Tensor | None = None  # (B, H); None for DistilBERT
    hidden_states: tuple | None = None  # L+1 tensors (B, T, H): embeddings, then each layer


def activation(name: str):
    """BERT uses the exact erf GELU; the tanh approximation differs by up to ~1e-3, too much for parity."""
    if name == "gelu":
        return nn.GELU()
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return nn.GELU(approximate="tanh")
    return nn.ReLU()


class Dropout(nn.Dropout):
    """nn.Dropout as one kernel each way on every device: torch.native_dropout, which F.dropout runs on CUDA. On a
    CPU F.dropout builds the mask from four ops (empty_like, bernoulli_, div_, mul) and a mul backward; this draws
    the same mask from the same random stream and gives the same bits, forward and backward."""

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        return torch.native_dropout(x, self.p, True)[0]


class Embeddings(nn.Module):
    """Token + position (+ token type) embeddings, summed, then LayerNorm and dropout."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        # DistilBERT dropped segment embeddings: it was distilled without next-sentence prediction.
        self.token_type_embeddings = (nn.Embedding(config.type_vocab_size, config.hidden_size)
                                      if config.type_vocab_size > 0 else None)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids=None):
        T = input_ids.shape[1]
        positions = torch.arange(T, device=input_ids.device)  # (T,), broadcast over the batch
        x = self.word_embeddings(input_ids)  # (B, T, H)
        if self.token_type_embeddings is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(input_ids)
            x = x + self.token_type_embeddings(token_type_ids)
        # HF's summation order; float addition is not associative and parity is checked to 1e-5
        x = x + self.position_embeddings(positions)
        return self.dropout(self.norm(x))


def attention_bias(attention_mask, dtype):
    """(B, T) 1/0 -> (B, 1, 1, T) additive mask: 0 where a key may be attended, -inf at padding.

    Built once per forward and shared by every layer and head (SDPA would otherwise turn a boolean mask
    into this same float one in every layer). It must have the dtype attention runs in: the autocast
    dtype under mixed precision, else the activations' (attention_dtype)."""
    bias = torch.zeros(attention_mask.shape, dtype=dtype, device=attention_mask.device)
    return bias.masked_fill_(attention_mask == 0, float("-inf"))[:, None, None, :]


def attention_dtype(x) -> torch.dtype:
    """The dtype q and k have inside a layer: autocast's (bf16/fp16) when it is on, else x's."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


def attention_probs(q, k, bias=None):
    """softmax(QK^T / sqrt(hs)): how much each query attends to each key; every row sums to 1.

    q (B, nh, Tq, hs), k (B, nh, T, hs); bias (B, 1, 1, T) from attention_bias, or None -> (B, nh, Tq, T)."""
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (B, nh, Tq, T)
    if bias is not None:
        if bias.dtype == torch.bool:  # added to the scores it would count as 0/1, silently wrong
            raise TypeError("attention bias must be additive (0 or -inf, from model.attention_bias), not boolean")
        scores = scores + bias  # -inf at padding keys: zero weight after the softmax
    return scores.softmax(dim=-1)


def attend(q, k, v, bias=None, dropout=0.0, explicit=False):
    """The attention core: each query's weighted average of the values, weighted by attention_probs.

    q (B, nh, Tq, hs), k and v (B, nh, T, hs), bias (B, 1, 1, T) or None -> (B, nh, Tq, hs). explicit: the
    formula written out; else the same in one fused kernel (F.scaled_dot_product_attention)."""
    if explicit:
        return F.dropout(attention_probs(q, k, bias), dropout, training=dropout > 0) @ v
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout)


class SelfAttention(nn.Module):
    """Multi-head self-attention: every token looks at every real (not padding) token, in both directions.

    forward is three steps, which padding.py also runs on the real tokens only: heads (project, split into
    heads), attend, output (merge the heads, project back)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.n_head = config.num_attention_heads
        self.head_dim = config.head_dim
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)  # query, key, value in one matmul
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.attn_dropout = config.attention_probs_dropout_prob  # on the attention weights, while training
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.explicit = False  # set by Bert.explicit_attention

    def forward(self, x, bias=None):
        """x (B, T, H); bias (B, 1, 1, T) from attention_bias, or None -> (B, T, H)."""
        q, k, v = self.heads(x)  # (B, nh, T, hs) each
        return self.output(self.attend(q, k, v, bias))  # (B, T, H)

    def heads(self, x, pad=None):
        """q, k, v (B, nh, T, hs) of x (B, T, H). pad: x is rows (N, H), and pad places their heads (N, 3, nh, hs)
        on the (3, B, nh, T, hs) grid, after the projection, so that it runs on those rows only (padding.py)."""
        qkv = self.qkv(x).unflatten(-1, (3, self.n_head, self.head_dim))  # (B, T, 3, nh, hs) or (N, 3, nh, hs)
        # each head attends on its own slice of the hidden dimension: heads go next to B. One copy makes q, k
        # and v contiguous at once; the attention kernels would otherwise copy each of them.
        qkv = qkv.permute(2, 0, 3, 1, 4).contiguous() if pad is None else pad(qkv)  # (3, B, nh, T, hs)
        return qkv.unbind(0)

    def attend(self, q, k, v, bias=None):
        """attend() with this module's dropout on the attention weights, while training -> (B, nh, Tq, hs)."""
        return attend(q, k, v, bias, self.attn_dropout if self.training else 0.0, self.explicit)

    def output(self, y, select=None):
        """y (B, nh, Tq, hs) -> (B, Tq, H): the heads side by side again, projected back. select: keep only some
        of the (B, Tq) positions of y instead, e.g. the real tokens' (N, nh, hs) (padding.py)."""
        y = y.transpose(1, 2) if select is None else select(y)  # (B, Tq, nh, hs) or (N, nh, hs)
        return self.dropout(self.proj(y.flatten(-2)))  # (..., H)


class FeedForward(nn.Module):
    """The position-wise MLP: H -> 4H -> H with GELU, applied to every token independently."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.up = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = activation(config.hidden_act)
        self.down = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, x):
        """x (B, T, H) -> (B, T, H)."""
        h = self.act(self.up(x))  # (B, T, 4H): intermediate_size, 4H in BERT
        return self.dropout(self.down(h))  # (B, T, H)


class Layer(nn.Module):
    """One transformer block, post-LN: the residual sum is normalised, not the block's input."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = SelfAttention(config)
        self.attn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn = FeedForward(config)
        self.ffn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x, bias=None):
        """x (B, T, H); bias (B, 1, 1, T) from attention_bias, or None -> (B, T, H)."""
        a = self.attention(x, bias)  # (B, T, H): the one step where tokens exchange information
        return self.residual(x, a)

    def residual(self, x, a):
        """The post-LN residual steps around attention's output a: x, a (B, T, H) -> (B, T, H).

        Each step here treats every token on its own, so they apply to any set of rows (padding.py's)."""
        x = self.attn_norm(x + a)  # (B, T, H): the sum is normalised, not x
        x = self.ffn_norm(x + self.ffn(x))  # (B, T, H): each token is transformed on its own
        return x


class Pooler(nn.Module):
    """BERT's next-sentence-prediction head, reused for classification: tanh(W h_[CLS] + b)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden):
        return torch.tanh(self.dense(hidden[:, 0]))  # (B, H), from the [CLS] position


class Bert(nn.Module):
    """The encoder. `layers` is an nn.ModuleList: corruption picks its blocks by index."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))
        self.pooler = Pooler(config) if config.flavour == "bert" else None
        self.apply(self._init_weights)

    def _init_weights(self, module):
        """HF's init (normal std 0.02, zero bias, LayerNorm 1/0): only matters for models built from scratch."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.config.initializer_range)
        if isinstance(module, nn.Linear):
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            nn.init.zeros_(module.weight[module.padding_idx])
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def explicit_attention(self, on: bool = True) -> "Bert":
        """Switch every layer to the written-out softmax(QK^T/sqrt(d))V path (for teaching and tests)."""
        for layer in self.layers:
            layer.attention.explicit = on
        return self

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, output_hidden_states=False, lengths=None):
        """input_ids, attention_mask, token_type_ids: (B, T) LongTensors. Returns an EncoderOutput equal to HF's,
        padding positions included. lengths (the tokenizer's) is accepted and not needed: see padding.py."""
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, H)
        # one mask for all layers, heads and queries
        bias = attention_bias(attention_mask, attention_dtype(x)) if attention_mask is not None else None
        hidden_states = [x] if output_hidden_states else None
        for layer in self.layers:
            x = layer(x, bias)
            if output_hidden_states:
                hidden_states.append(x)
        return EncoderOutput(
            last_hidden_state=x,
            pooler_output=self.pooler(x) if self.pooler is not None else None,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
        )

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
