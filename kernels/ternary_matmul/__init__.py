"""Ternary (BitNet b1.58, arXiv 2402.17764) linear on 2-bit packed weights, skipping the input
channels that Q-Sparse (arXiv 2407.10969) zeroed.

* :func:`ternary_linear` / :func:`ternary_accumulate`: ``y = x · (W_q·α)ᵀ`` on weights packed
  by :func:`zoo.kernels.pack_ternary`; Triton (a GEMV that reads only the packed rows of the
  channels non-zero in the batch) on CUDA or under the interpreter, else the torch reference.
* :func:`ternary_matmul`: the training/prefill form, ``F.linear(x, ternary_quantize(W))`` on the
  latent weight, with straight-through gradients (Triton: quantise+pack, then the packed kernel).
* :func:`sparse_input_linear` / :func:`sparse_ternary_linear`: the CPU decode path (torch only),
  reading only the weight rows of the kept channels.
"""
from __future__ import annotations

import torch

from zoo.kernels._dispatch import resolve_impl
from zoo.kernels.ternary_matmul import reference
from zoo.kernels.ternary_matmul.cpu import sparse_input_linear, sparse_ternary_linear

HAS_TRITON = True


def ternary_linear(
    x: torch.Tensor,
    packed: torch.Tensor,
    alpha: torch.Tensor | float,
    n_out: int,
    x_scale: torch.Tensor | None = None,
    *,
    impl: str = "auto",
) -> torch.Tensor:
    """``y = x · (unpack(packed)·α)ᵀ``; int8 ``x`` with per-row ``x_scale`` gives ``acc / x_scale · α`` in fp32."""
    if resolve_impl(impl, x, op="ternary_linear", has_triton=HAS_TRITON) == "triton":
        from zoo.kernels.ternary_matmul import _triton

        return _triton.ternary_gemv(x, packed, alpha, n_out, x_scale)
    return reference.ternary_linear(x, packed, alpha, n_out, x_scale)


def ternary_accumulate(x_q: torch.Tensor, packed: torch.Tensor, n_out: int, *, impl: str = "auto") -> torch.Tensor:
    """The exact integer accumulator ``x_q · W_qᵀ`` (int32) of int8 activations."""
    if resolve_impl(impl, x_q, op="ternary_accumulate", has_triton=HAS_TRITON) == "triton":
        from zoo.kernels.ternary_matmul import _triton

        if x_q.dtype != torch.int8:
            raise TypeError(f"ternary_accumulate: expected int8 activations, got {x_q.dtype}")
        # fp32 sums of int8·{-1,0,1} are exact integers while |acc| < 2**24 (K up to 132k)
        return _triton.ternary_gemv(x_q, packed, 1.0, n_out, accumulate_only=True).to(torch.int32)
    return reference.ternary_accumulate(x_q, packed, n_out)


def ternary_matmul(x: torch.Tensor, weight: torch.Tensor, *, impl: str = "auto") -> torch.Tensor:
    """``F.linear(x, W_q·α)`` of the latent ``weight`` ``[N, K]``; dX dense, dW to the latent weight (STE)."""
    if resolve_impl(impl, x, op="ternary_matmul", has_triton=HAS_TRITON) == "triton":
        from zoo.kernels.ternary_matmul import function

        return function.ternary_matmul(x, weight)
    from zoo.kernels.quant.reference import ternary_quantize

    return torch.nn.functional.linear(x, ternary_quantize(weight))


__all__ = ["sparse_input_linear", "sparse_ternary_linear", "ternary_accumulate", "ternary_linear", "ternary_matmul"]
