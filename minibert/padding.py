"""The fast path: model.py's modules and weights run on the real tokens only, what heads and training use.

A batch of sentences is padded to its longest; on real text 30-70% of the (B, T) grid can be padding.
Linear layers, LayerNorm, GELU and dropout treat every token on its own, so they can run on the
(N, C) stack of the N real tokens instead, and padding costs nothing there. Attention is the one step
that needs each sequence's tokens side by side: it pads back to (B, T, C), attends with the key mask,
and unpads again. (MosaicBERT's bert_padding.py does the same with cu_seqlens for a varlen kernel.)
A head that reads only [CLS] also lets the last layer ask one query instead of T.

model.py stays the plain formula; every trick lives here. attention() is SelfAttention.forward's steps
with the module's own weights, on the rows above; Layer.after_attention (the post-LN residual steps, which
treat every token on its own) runs unchanged on them. When nothing is padded, no mask is passed at all:
SDPA then keeps its fastest kernels. Finding that out, and unpadding, costs a sync with the host per batch.

    unpadded = Unpadded(attention_mask)      # where the real tokens are
    x = unpadded.unpad(x)                    # (B, T, C) -> (N, C)
    x = unpadded.pad(x)                      # (N, C) -> (B, T, C), zeros at padding

    out = encode(bert, **batch, cls_only=True)   # Bert.forward's numbers wherever a head reads them

tests/test_padding.py holds encode() equal to Bert.forward on outputs and gradients.
"""
import torch
import torch.nn.functional as F

from .model import Bert, EncoderOutput, attention_probs


class Unpadded:
    """The positions of the real tokens of a (B, T) attention mask (1 = real token, 0 = padding)."""

    def __init__(self, attention_mask: torch.Tensor):
        self.B, self.T = attention_mask.shape
        real = attention_mask.flatten().bool()  # (B*T,)
        self.index = real.nonzero().squeeze(1)  # (N,) positions of the real tokens in the flattened batch
        # row of each sequence's first token (its [CLS]) in the (N, C) stack: how many real tokens precede it
        self.first = (real.cumsum(0) - 1).view(self.B, self.T)[:, 0]  # (B,); valid where that token is real

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (N, C): the rows of the real tokens. index_select's backward is an index_add."""
        return x.flatten(0, 1).index_select(0, self.index)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C) -> (B, T, C) with zeros at the padding positions."""
        out = x.new_zeros(self.B * self.T, x.shape[-1]).index_copy(0, self.index, x)  # (B*T, C)
        return out.view(self.B, self.T, -1)


def attention(attn, x, mask, unpadded: Unpadded | None, cls_only: bool):
    """SelfAttention.forward on x (N, H) real tokens (or (B, T, H) when unpadded is None), with attn's weights.

    cls_only: only position 0 ([CLS]) asks a query, over every key; returns (B, H)."""
    qkv = attn.qkv(x)  # (N, 3H) or (B, T, 3H): the projection runs on the real tokens only
    if unpadded is not None:
        qkv = unpadded.pad(qkv)  # (B, T, 3H): attention needs each sequence's tokens side by side
    B, T, _ = qkv.shape
    q, k, v = (t.view(B, T, attn.n_head, attn.head_dim).transpose(1, 2) for t in qkv.chunk(3, dim=-1))  # (B, nh, T, hs)
    if cls_only:
        q = q[:, :, :1]  # (B, nh, 1, hs): one query, still over the keys and values of every token
    if attn.explicit:
        y = F.dropout(attention_probs(q, k, mask), attn.attn_dropout, attn.training) @ v  # (B, nh, Tq, hs)
    else:
        p = attn.attn_dropout if attn.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (B, nh, Tq, hs)
    y = y.transpose(1, 2).flatten(2)  # (B, Tq, H)
    if cls_only:
        y = y[:, 0]  # (B, H)
    elif unpadded is not None:
        y = unpadded.unpad(y)  # (N, H): back to the real tokens
    return attn.dropout(attn.proj(y))


def layer_forward(layer, x, mask, unpadded: Unpadded | None, cls_only: bool):
    """Layer.forward on the fast path's rows; with cls_only only [CLS]'s residual stream goes on: (B, H)."""
    a = attention(layer.attention, x, mask, unpadded, cls_only)
    if cls_only:
        x = x[:, 0] if unpadded is None else x[unpadded.first]  # (B, H)
    return layer.after_attention(x, a)  # model.py's post-LN steps, on these rows


def encode(bert: Bert, input_ids, attention_mask=None, token_type_ids=None, output_hidden_states=False,
           cls_only=False, unpad=True) -> EncoderOutput:
    """Bert.forward's outputs, equal wherever a head reads them, computed on the real tokens only.

    unpad: the layers run on the real tokens; outputs are zero at padding positions (where a head never
    reads). cls_only: the last layer runs for position 0 ([CLS]) alone; last_hidden_state is (B, 1, H).
    Unpadding needs no particular padding side, but with cls_only it needs [CLS] real at position 0 in
    every row (a left-padded batch has padding there, which Bert.forward computes), else it steps aside.
    """
    if cls_only and output_hidden_states:
        raise ValueError("cls_only computes the last layer for [CLS] alone: no full hidden states to return")
    mask = attention_mask.bool()[:, None, None, :] if attention_mask is not None else None  # (B, 1, 1, T)
    if torch.compiler.is_compiling():
        unpad = False  # torch.compile wants fixed shapes and no branch on the data: always mask, never unpad
    else:
        if mask is not None and bool(attention_mask.all()):
            mask = None  # nothing is padded: with no mask at all SDPA keeps its fastest kernels (so does HF)
        unpad = unpad and mask is not None and (not cls_only or bool(attention_mask[:, 0].all()))
    x = bert.embeddings(input_ids, token_type_ids)  # (B, T, H)
    unpadded = Unpadded(attention_mask) if unpad else None
    if unpadded is not None:
        x = unpadded.unpad(x)  # (N, H)
    hidden_states = [x] if output_hidden_states else None
    for i, layer in enumerate(bert.layers):
        x = layer_forward(layer, x, mask, unpadded, cls_only=cls_only and i == len(bert.layers) - 1)
        if output_hidden_states:
            hidden_states.append(x)
    if cls_only:
        x = x[:, None]  # (B, 1, H)
    elif unpadded is not None:
        x = unpadded.pad(x)  # (B, T, H)
        hidden_states = [unpadded.pad(h) for h in hidden_states] if output_hidden_states else None
    return EncoderOutput(
        last_hidden_state=x,
        pooler_output=bert.pooler(x) if bert.pooler is not None else None,
        hidden_states=tuple(hidden_states) if output_hidden_states else None,
    )
