"""The fast path: model.py's modules and weights run on the real tokens only, what heads and training use.

A batch of sentences is padded to its longest; on real text 30-70% of the (B, T) grid can be padding.
Linear layers, LayerNorm, GELU and dropout treat every token on its own, so they can run on the
(N, H) stack of the N real tokens instead, and padding costs nothing there. Attention is the one step
that needs each sequence's tokens side by side: SelfAttention.heads places the projected rows on the
(B, T) grid, attention runs with the key mask, and SelfAttention.output keeps the real tokens' rows again.
(MosaicBERT's bert_padding.py does the same with cu_seqlens for a varlen kernel.) A head that reads only
[CLS] also lets the last layer ask one query instead of T.

model.py stays the plain formula; every trick lives here. Where the real tokens are is worked out on the
host, from the lengths the tokenizer and the trainer's batcher send with every batch: the GPU never waits
for the CPU inside a step (a batch without lengths costs one copy of its mask to the host). When nothing
is padded, no mask is passed at all: SDPA then keeps its fastest kernels.

    rows = Unpadded.of(attention_mask, lengths)   # where the real tokens are
    x = rows.unpad(x)                             # (B, T, H) -> (N, H)
    x = rows.pad(x)                               # (N, H) -> (B, T, H), zeros at padding

    out = encode(bert, **batch, cls_only=True)    # Bert.forward's numbers wherever a head reads them

tests/test_padding.py holds encode() equal to Bert.forward on outputs and gradients.
"""
import numpy as np
import torch

from .model import Bert, EncoderOutput, attention_bias, attention_dtype


class Unpadded:
    """The positions of a batch's real tokens, computed on the host and sent to the device once.

    real: (B, T) bool numpy array, True at real tokens (any padding side)."""

    def __init__(self, real: np.ndarray, device):
        self.B, self.T = real.shape
        batch, position = np.nonzero(real)  # (N,) each, in row-major order: sequence by sequence
        self.full = bool(real.all())  # nothing is padded
        self.cls_real = bool(real[:, 0].all())  # every sequence has a real token at position 0 ([CLS])
        # row of each sequence's first token (its [CLS]) in the (N, H) stack: how many real tokens precede it
        first = real.flatten().cumsum().reshape(self.B, self.T)[:, 0] - 1  # (B,); valid where that token is real
        self.batch, self.position, self.first = (torch.from_numpy(a).to(device, non_blocking=True)
                                                 for a in (batch, position, first))

    @classmethod
    def of(cls, attention_mask: torch.Tensor, lengths: torch.Tensor | None = None) -> "Unpadded":
        """From the tokenizer's lengths (B,) of right-padded rows, kept on the host: no sync. Without them,
        from the mask itself, which must come to the host first (on a GPU, a wait for the device)."""
        B, T = attention_mask.shape
        if lengths is not None:
            real = np.arange(T)[None, :] < lengths.cpu().numpy()[:, None]  # (B, T)
        else:
            real = attention_mask.cpu().numpy().astype(bool)
        return cls(real, attention_mask.device)

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, ...) -> (N, ...): the rows of the real tokens."""
        return x[self.batch, self.position]

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C) -> (B, T, C) with zeros at the padding positions."""
        return x.new_zeros(self.B, self.T, x.shape[-1]).index_put_((self.batch, self.position), x)

    def pad_heads(self, qkv: torch.Tensor) -> torch.Tensor:
        """(N, 3, nh, hs) -> (3, B, nh, T, hs): the rows' queries, keys and values on the grid attention needs,
        zeros at padding, written straight into the layout of SelfAttention.heads (no copy after)."""
        grid = qkv.new_zeros(3, self.B, qkv.shape[2], self.T, qkv.shape[3])
        grid[:, self.batch, :, self.position] = qkv  # (N, 3, nh, hs): indices apart put the N rows first
        return grid

    def unpad_heads(self, y: torch.Tensor) -> torch.Tensor:
        """(B, nh, T, hs) -> (N, nh, hs): attention's output at the real tokens, heads still apart."""
        return y[self.batch, :, self.position]


def layer_forward(layer, x, bias, rows: Unpadded | None, cls_only: bool):
    """Layer.forward on the fast path's rows: x (N, H), or (B, T, H) when rows is None. With cls_only only
    [CLS]'s residual stream goes on: (B, H)."""
    attention = layer.attention
    q, k, v = attention.heads(x, pad=rows.pad_heads if rows is not None else None)  # (B, nh, T, hs) each
    if cls_only:
        q = q[:, :, :1]  # (B, nh, 1, hs): one query, still over the keys and values of every token
    y = attention.attend(q, k, v, bias)  # (B, nh, Tq, hs)
    if cls_only:
        a = attention.output(y, select=lambda y: y[:, :, 0])  # (B, H)
        x = x[:, 0] if rows is None else x[rows.first]  # (B, H)
    else:
        a = attention.output(y, select=rows.unpad_heads if rows is not None else None)  # (N, H) or (B, T, H)
    return layer.residual(x, a)  # model.py's post-LN steps, on these rows


def encode(bert: Bert, input_ids, attention_mask=None, token_type_ids=None, lengths=None,
           output_hidden_states=False, cls_only=False, unpad=True) -> EncoderOutput:
    """Bert.forward's outputs, equal wherever a head reads them, computed on the real tokens only.

    lengths: each sequence's real tokens (B,), on the host, as the tokenizer returns them; without them the
    mask is read on the host (one sync). unpad: the layers run on the real tokens; outputs are zero at
    padding positions (where a head never reads). cls_only: the last layer runs for position 0 ([CLS])
    alone; last_hidden_state is (B, 1, H). Unpadding needs no particular padding side, but with cls_only
    it needs [CLS] real at position 0 in every row (a left-padded batch has padding there, which
    Bert.forward computes), else it steps aside. Under torch.compile nothing depends on the data: the
    layers run on the whole (B, T) grid with the mask.
    """
    if cls_only and output_hidden_states:
        raise ValueError("cls_only computes the last layer for [CLS] alone: no full hidden states to return")
    rows = None
    if attention_mask is not None and not torch.compiler.is_compiling():
        rows = Unpadded.of(attention_mask, lengths)
        if rows.full:
            attention_mask = None  # nothing is padded: with no mask at all SDPA keeps its fastest kernels (so does HF)
        if rows.full or not unpad or (cls_only and not rows.cls_real):
            rows = None
    x = bert.embeddings(input_ids, token_type_ids)  # (B, T, H)
    bias = attention_bias(attention_mask, attention_dtype(x)) if attention_mask is not None else None
    if rows is not None:
        x = rows.unpad(x)  # (N, H)
    hidden_states = [x] if output_hidden_states else None
    for i, layer in enumerate(bert.layers):
        x = layer_forward(layer, x, bias, rows, cls_only=cls_only and i == len(bert.layers) - 1)
        if output_hidden_states:
            hidden_states.append(x)
    if cls_only:
        x = x[:, None]  # (B, 1, H)
    elif rows is not None:
        x = rows.pad(x)  # (B, T, H)
        hidden_states = [rows.pad(h) for h in hidden_states] if output_hidden_states else None
    return EncoderOutput(
        last_hidden_state=x,
        pooler_output=bert.pooler(x) if bert.pooler is not None else None,
        hidden_states=tuple(hidden_states) if output_hidden_states else None,
    )
