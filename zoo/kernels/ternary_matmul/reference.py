"""Reference ternary linear on 2-bit packed weights (BitNet b1.58, arXiv 2402.17764), the oracle
of the sparse-input decode kernels of Q-Sparse (arXiv 2407.10969).

``y = x · (W_q·α)ᵀ`` with ``W_q = unpack(packed)`` in {-1, 0, 1}. With int8 activations
``x_q`` and their per-token scale ``s = 127/max|x|`` the product is accumulated in integers,
``acc = x_q · W_qᵀ``, and rescaled once, ``y = acc / s · α`` (the paper's
``(x_q · W_q) / (s · 1/α)``). Float activations accumulate in fp32 and are scaled by α last,
which is what a kernel that adds ±x does.
"""

from __future__ import annotations

import torch

from zoo.kernels.norm.reference import rms_norm as reference_rms_norm
from zoo.kernels.pack.reference import unpack_ternary
from zoo.kernels.rule import InputRule


def ternary_accumulate(x_q: torch.Tensor, packed: torch.Tensor, n_out: int) -> torch.Tensor:
    """Integer accumulator ``x_q · W_qᵀ`` (int32) of int8 activations ``[..., K]``."""
    if x_q.dtype != torch.int8:
        raise TypeError(f"ternary_accumulate: expected int8 activations, got {x_q.dtype}")
    weight = unpack_ternary(packed, n_out)
    if x_q.shape[-1] != weight.shape[1]:
        raise ValueError(f"ternary_accumulate: {x_q.shape[-1]} input channels for a weight of {weight.shape[1]}")
    # int64 matmul is exact and supported on every device's torch; the result fits int32
    acc = x_q.reshape(-1, x_q.shape[-1]).to(torch.int64) @ weight.t().to(torch.int64)
    return acc.to(torch.int32).reshape(*x_q.shape[:-1], n_out)


def ternary_linear(
    x: torch.Tensor, packed: torch.Tensor, alpha: torch.Tensor | float, n_out: int, x_scale: torch.Tensor | None = None
) -> torch.Tensor:
    """``y = x · (unpack(packed)·α)ᵀ``.

    ``x``: float activations ``[..., K]`` (result in x's dtype), or int8 values with their
    per-row ``x_scale`` ``[..., 1]`` (result fp32: ``acc / x_scale · α``).
    """
    alpha = torch.as_tensor(alpha, dtype=torch.float32, device=packed.device)
    if x_scale is not None:
        acc = ternary_accumulate(x, packed, n_out)
        return acc.float() / x_scale.float() * alpha
    if x.dtype == torch.int8:
        raise ValueError("ternary_linear: int8 activations need their x_scale")
    weight = unpack_ternary(packed, n_out).float()
    return (torch.nn.functional.linear(x.float(), weight) * alpha).to(x.dtype)


def rms_norm(x: torch.Tensor, norm: tuple[torch.Tensor, float] | None) -> torch.Tensor:
    """``x / sqrt(mean(x²) + eps) · g`` in fp32 for ``norm = (g, eps)``; ``x`` unchanged for None."""
    if norm is None:
        return x
    weight, eps = norm
    return reference_rms_norm(x.float(), weight.float(), eps)


def packed_ternary_linear(
    x: torch.Tensor,
    packed: torch.Tensor,
    alpha: torch.Tensor,
    n_out: int,
    bias: torch.Tensor | None,
    rule: InputRule,
    norm: tuple[torch.Tensor, float] | None = None,
) -> tuple[torch.Tensor, int]:
    """(``y`` fp32, non-zero inputs): ``x`` sparsified by ``rule`` (top-K per row or N:M, exactly ``n_keep``),
    absmax int8 quantised per row, the exact integer product with the packed ternary weight, then
    ``y = acc · (α / s) (+ b)``: the inference form of a BitNet b1.58 + Q-Sparse projection.
    ``norm``: the RMSNorm in front of the projection, applied first."""
    from zoo.kernels.quant.reference import int8_quantize_values
    from zoo.kernels.topk.reference import block_topk_mask, topk_mask

    x32 = rms_norm(x.detach(), norm).float()
    values, scale = int8_quantize_values(x32)
    if rule.sparsity == "topk":
        values = values * topk_mask(x32, rule.n_keep)
    elif rule.sparsity == "block":
        values = values * block_topk_mask(x32, rule.n_keep, rule.block_size)
    q = values.to(torch.int8)
    alpha = torch.as_tensor(alpha, dtype=torch.float32, device=x.device)
    y = ternary_accumulate(q, packed, n_out).to(torch.float32) * (alpha / scale)
    if bias is not None:
        y = y + bias.float()
    return y, int((q != 0).sum())


def sparse_projection(
    x: torch.Tensor,
    weight_t: torch.Tensor,
    bias: torch.Tensor | None,
    rule: InputRule,
    norm: tuple[torch.Tensor, float] | None = None,
) -> tuple[torch.Tensor, int]:
    """(``y`` fp32, kept non-zero inputs): ``(x ⊙ M) · weight_t (+ b)`` with M the top-K (or N:M)
    mask of Q-Sparse and ``weight_t`` the transposed ``[K, N]`` weight, summed in fp32."""
    from zoo.kernels.topk.reference import block_topk_mask, topk_mask

    x32 = rms_norm(x.detach(), norm).float()
    if rule.sparsity == "topk":
        x32 = x32 * topk_mask(x32, rule.n_keep)
    elif rule.sparsity == "block":
        x32 = x32 * block_topk_mask(x32, rule.n_keep, rule.block_size)
    y = x32 @ weight_t.float()
    if bias is not None:
        y = y + bias.float()
    return y, int((x32 != 0).sum())
