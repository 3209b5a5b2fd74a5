"""Top-K activation sparsity (Q-Sparse, arXiv 2407.10969): per token, N:M block, and fused with int8.

:func:`input_transform` is the whole input rule of a projection, ``Q_x(S(x))``, in one call: the
compiled CPU kernel (one pass per row), the Triton kernels, or the torch references composed.
"""

from __future__ import annotations

import torch

from zoo.kernels._dispatch import resolve_impl
from zoo.kernels.rule import InputRule
from zoo.kernels.topk import reference

HAS_TRITON = True


def _triton_path(impl: str, x: torch.Tensor, op: str) -> bool:
    return resolve_impl(impl, x, op=op, has_triton=HAS_TRITON) == "triton"


def topk_sparsify(x: torch.Tensor, k: int, *, impl: str = "auto") -> torch.Tensor:
    """Keep the ``k`` largest-magnitude entries of each row (ties: lower index), STE gradient."""
    if _triton_path(impl, x, "topk_sparsify"):
        from zoo.kernels.topk import function

        return function.topk_sparsify(x, k)
    return reference.topk_sparsify(x, k)


def block_topk_sparsify(x: torch.Tensor, n_keep: int, block: int, *, impl: str = "auto") -> torch.Tensor:
    """Keep ``n_keep`` of every ``block`` consecutive channels by magnitude, STE gradient."""
    if _triton_path(impl, x, "block_topk_sparsify"):
        from zoo.kernels.topk import function

        return function.block_topk_sparsify(x, n_keep, block)
    return reference.block_topk_sparsify(x, n_keep, block)


def topk_int8_quantize(x: torch.Tensor, k: int, *, impl: str = "auto") -> torch.Tensor:
    """Per-token top-K then absmax int8 fake quantisation, STE gradient.

    The Triton path returns x's dtype; the reference returns fp32 for half-precision inputs
    (its integer values are divided by an fp32 scale). The values agree after a cast.
    """
    if _triton_path(impl, x, "topk_int8_quantize"):
        from zoo.kernels.topk import function

        return function.topk_int8_quantize(x, k)
    return reference.topk_int8_quantize(x, k)


def topk_int8_quantize_raw(x: torch.Tensor, k: int, *, impl: str = "auto") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(integer values with zeros off the mask, fp32 per-row scale ``[..., 1]``, bool mask).

    The Triton path gives the values as int8; the reference gives them as integer-valued fp32.
    """
    if _triton_path(impl, x, "topk_int8_quantize_raw"):
        from zoo.kernels.topk import function

        return function.topk_int8_quantize_raw(x, k)
    return reference.topk_int8_quantize_raw(x, k)


def topk_mask(x: torch.Tensor, k: int, *, impl: str = "auto") -> torch.Tensor:
    """Boolean mask with exactly ``k`` True per row: the largest |x|, lower index wins ties."""
    if _triton_path(impl, x, "topk_mask"):
        from zoo.kernels.topk import function

        return function.topk_mask(x, k)
    return reference.topk_mask(x, k)


def block_topk_mask(x: torch.Tensor, n_keep: int, block: int, *, impl: str = "auto") -> torch.Tensor:
    """N:M mask: exactly ``n_keep`` of every ``block`` consecutive channels."""
    if _triton_path(impl, x, "block_topk_mask"):
        from zoo.kernels.topk import function

        return function.block_topk_mask(x, n_keep, block)
    return reference.block_topk_mask(x, n_keep, block)


def input_transform(x: torch.Tensor, rule: InputRule, *, impl: str = "auto") -> torch.Tensor:
    """A projection's input rule (:class:`~zoo.kernels.rule.InputRule`): top-K (``n_keep`` of the
    row) or N:M (``n_keep`` of every ``block_size``) or none, then per-token int8 fake quantisation
    when ``int8``; straight-through gradient. Every path gives the reference's values bit for bit
    (the Triton one in x's dtype, see :func:`topk_int8_quantize`)."""
    if rule.identity:
        return x
    rule.check(x.shape[-1], "input_transform")
    chosen = resolve_impl(impl, x, op="input_transform", has_triton=HAS_TRITON, has_cpu=True)
    if chosen == "cpu":
        from zoo.kernels.topk import cpu

        return cpu.input_transform(x, rule)
    if rule.sparsity == "topk" and rule.int8:
        # One pass: the row max is always kept, so mask and scale come from the same row.
        return topk_int8_quantize(x, rule.n_keep, impl=chosen)
    if rule.sparsity == "topk":
        x = topk_sparsify(x, rule.n_keep, impl=chosen)
    elif rule.sparsity == "block":
        x = block_topk_sparsify(x, rule.n_keep, rule.block_size, impl=chosen)
    if rule.int8:
        from zoo.kernels.quant import int8_quantize

        x = int8_quantize(x, impl=chosen)
    return x


__all__ = [
    "input_transform",
    "block_topk_mask",
    "block_topk_sparsify",
    "topk_int8_quantize",
    "topk_int8_quantize_raw",
    "topk_mask",
    "topk_sparsify",
]
