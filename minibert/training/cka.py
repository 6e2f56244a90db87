"""Linear CKA: how alike two representations of the same examples are, layer by layer.

    linear_cka(x, y)                          # similarity of two (n, d) representations; debiased by default
    layer_features(encoder, enc, pad_id)      # every hidden state of an encoder, pooled: one (n, H) per layer

Linear CKA (Kornblith et al. 2019, "Similarity of Neural Network Representations Revisited") compares
representations through their (n, n) Gram matrices K = XX^T and L = YY^T of the same n examples:

    CKA(X, Y) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))

It is 1 for representations that differ by an orthogonal transform and an isotropic scale, and it
compares layers of different widths. With the plain (biased) HSIC estimator, tr(KHLH)/(n-1)^2, the
value for unrelated representations is far from 0 when n is not much larger than the width: two
independent Gaussian feature sets of n=256, d=768 score about 0.75. The default is therefore the
debiased estimator (Nguyen, Raghu & Kornblith 2021, "Do Wide and Deep Networks Learn the Same Things?",
using the unbiased HSIC of Song et al. 2012), whose expectation for independent features is 0; it can be
slightly negative. shuffled_floor() gives what "unrelated" scores for given features: the CKA with the rows
of one side shuffled (no example matched to itself).

dynamics.py measures a run's CKA with the clean encoder every epoch; the healing analysis across two runs
(`python -m minibert cka`) is minibert/study/layer_cka.py.
"""
import numpy as np
import torch

from ..data.encoding import batch_indices, batches
from ..heads import mean_pool


def _hsic_unbiased(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """Song et al. (2012)'s unbiased HSIC estimator of two (n, n) Gram matrices, up to the common factor
    1/(n(n-3)), which cancels in CKA: tr(K~L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1,
    where K~, L~ are K, L with their diagonals set to 0."""
    n = k.shape[0]
    k, l = k - torch.diag(torch.diag(k)), l - torch.diag(torch.diag(l))
    k_sum, l_sum = k.sum(0), l.sum(0)  # (n,): 1'K~ and 1'L~ (the matrices are symmetric)
    return ((k * l).sum() + k_sum.sum() * l_sum.sum() / ((n - 1) * (n - 2)) - 2 / (n - 2) * (k_sum @ l_sum))


def linear_cka(x, y, debiased: bool = True) -> float:
    """Linear CKA of two representations of the same n examples: x (n, d1), y (n, d2).

    debiased=True (default): the unbiased-HSIC estimator, 0 in expectation for unrelated features at any n
    (needs n >= 4; can be slightly below 0). debiased=False: Kornblith et al.'s original, in [0, 1], which
    for unrelated features stays well above 0 unless n is much larger than the width. Computed in float64.
    """
    x, y = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"linear_cka needs (n, d1) and (n, d2) with the same n, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] < (4 if debiased else 2):
        raise ValueError(f"linear_cka needs at least {4 if debiased else 2} examples")
    x, y = x - x.mean(0), y - y.mean(0)
    if not debiased:  # with centred columns: ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F), cheap (d, d) products
        cross = (y.T @ x).square().sum()
        norm = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    else:
        k, l = x @ x.T, y @ y.T  # (n, n) Gram matrices
        cross = _hsic_unbiased(k, l)
        norm = (_hsic_unbiased(k, k) * _hsic_unbiased(l, l)).clamp(min=0).sqrt()
    if norm == 0:
        raise ValueError("linear_cka: a representation is constant over the examples")
    return float(cross / norm)


def shuffled_floor(x, y, seed: int = 0, debiased: bool = True) -> float:
    """CKA of x against y with y's rows shuffled (seeded): the score of the same features with no example
    matched to itself, i.e. what 'unrelated' reads as for this estimator, n and these feature distributions."""
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    return linear_cka(x, torch.as_tensor(y)[perm], debiased)


@torch.no_grad()
def layer_features(encoder, enc, pad_id: int, batch_size: int = 32, device="cpu",
                   pooling: str = "mean") -> list[torch.Tensor]:
    """Pooled hidden states of every example of `enc` (an Encoded), one (n, H) float64 tensor per hidden
    state (L+1: embeddings, then each layer), row i for example i. pooling="mean": the mean over real tokens,
    [CLS] excluded (heads.mean_pool); "cls": the hidden state at [CLS] (no pooler: that exists for the last layer only)."""
    if pooling not in ("mean", "cls"):
        raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
    encoder.eval().to(device)
    per_layer = []
    for batch in batches(enc, batch_size, shuffle=False, pad_id=pad_id):
        b = {k: v.to(device) for k, v in batch.items() if k != "labels"}
        out = encoder(b["input_ids"], b["attention_mask"], b["token_type_ids"], output_hidden_states=True)
        pool = (lambda h: mean_pool(h.float(), b["attention_mask"])) if pooling == "mean" else (lambda h: h[:, 0].float())
        per_layer.append([pool(h).double().cpu() for h in out.hidden_states])
    # batches() runs longest first; put the rows back in the examples' order
    order = torch.from_numpy(np.concatenate(batch_indices(enc.lengths, batch_size, shuffle=False)))
    unsorted = []
    for rows in map(torch.cat, zip(*per_layer)):
        layer = torch.empty_like(rows)
        layer[order] = rows
        unsorted.append(layer)
    return unsorted
