"""Unpadding: run the per-token layers on the real tokens of a padded batch only.

A batch of sentences is padded to its longest; on real text 30-70% of the (B, T) grid can be padding.
Linear layers, LayerNorm, GELU and dropout treat every token on its own, so they can run on the
(N, C) stack of the N real tokens instead, and padding costs nothing there. Attention is the one step
that needs each sequence's tokens side by side: it pads back to (B, T, C), attends with the key mask,
and unpads again. (MosaicBERT's bert_padding.py does the same with cu_seqlens for a varlen kernel.)

    unpadded = Unpadded(attention_mask)      # where the real tokens are
    x = unpadded.unpad(x)                    # (B, T, C) -> (N, C)
    x = unpadded.pad(x)                      # (N, C) -> (B, T, C), zeros at padding
"""
import torch


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
