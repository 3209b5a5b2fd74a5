"""Reference top-K activation sparsity from Q-Sparse (Wang et al., arXiv 2407.10969).

For every token (row of the last dimension) keep exactly the K entries of largest magnitude
and zero the rest: ``Y = (X ⊙ M)·Wᵀ``. Ties are broken towards the lower channel index so that
exactly K survive and every implementation agrees bit for bit. Training uses the
straight-through estimator: the gradient passes to every entry, masked or not.

Block (N:M) Q-Sparse applies the same rule independently inside each block of ``block``
consecutive channels, keeping ``n_keep`` per block.

The int8 variant quantises the kept values per token: ``Q(X) = RoundClip(127/(γ+ε)·X, −128, 127)``
with ``γ = max|X|``. The row maximum is always kept, so γ is the same before and after masking.
"""

from __future__ import annotations

import torch

from zoo.kernels._ste import straight_through
from zoo.kernels.quant.reference import int8_quantize_values


def topk_mask(x: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask with exactly ``k`` True per row (last dim): the largest |x|, lower index wins ties."""
    d = x.shape[-1]
    if not 1 <= k <= d:
        raise ValueError(f"topk: k must be in [1, {d}] for rows of {d} channels, got {k}")
    if k == d:
        return torch.ones_like(x, dtype=torch.bool)
    magnitude = x.detach().abs()
    # The k-th largest magnitude is the (d-k+1)-th smallest; everything strictly above it is kept,
    # and the remaining slots go to entries equal to it, first come first served.
    threshold = magnitude.kthvalue(d - k + 1, dim=-1, keepdim=True).values
    above = magnitude > threshold
    tied = magnitude == threshold
    slots_left = k - above.sum(dim=-1, keepdim=True)
    return above | (tied & (tied.cumsum(dim=-1) <= slots_left))


def block_topk_mask(x: torch.Tensor, n_keep: int, block: int) -> torch.Tensor:
    """N:M mask: exactly ``n_keep`` of every ``block`` consecutive channels."""
    d = x.shape[-1]
    if block < 1 or d % block:
        raise ValueError(f"block_topk: block must divide the {d} channels, got block={block}")
    grouped = x.reshape(*x.shape[:-1], d // block, block)
    return topk_mask(grouped, n_keep).reshape(x.shape)


def topk_sparsify(x: torch.Tensor, k: int) -> torch.Tensor:
    """Per-token top-K by magnitude with the straight-through gradient."""
    if k == x.shape[-1]:
        return x
    return straight_through(x, x * topk_mask(x, k))


def block_topk_sparsify(x: torch.Tensor, n_keep: int, block: int) -> torch.Tensor:
    """Block (N:M) top-K with the straight-through gradient."""
    if n_keep == block:
        return x
    return straight_through(x, x * block_topk_mask(x, n_keep, block))


def topk_int8_quantize_raw(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Integer form of the quantised variant: (int8 values with zeros off the mask, per-row scale, mask).

    The dequantised activation is ``values / scale``.
    """
    mask = topk_mask(x, k)
    values, scale = int8_quantize_values(x)
    return values * mask, scale, mask


def topk_int8_quantize(x: torch.Tensor, k: int) -> torch.Tensor:
    """Top-K then per-token absmax int8 fake quantisation, straight-through: ``Q(X) ⊙ M``."""
    with torch.no_grad():
        values, scale, _ = topk_int8_quantize_raw(x, k)
        fake = (values / scale).to(x.dtype)
    return straight_through(x, fake)
