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
from zoo.kernels.ternary_matmul._compiled import PackedLinearScratch, SparseLinearScratch
from zoo.kernels.ternary_matmul._compiled import isa as cpu_kernel_isa
from zoo.kernels.ternary_matmul.reference import rms_norm
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
    """The exact integer accumulator ``x_q · W_qᵀ`` (int32) of int8 activations.

    ``cpu``: the compiled kernel, which reads only the packed rows of each row's non-zero channels.
    """
    chosen = resolve_impl(impl, x_q, op="ternary_accumulate", has_triton=HAS_TRITON, has_cpu=True)
    if chosen == "cpu":
        from zoo.kernels.ternary_matmul import _compiled

        return _compiled.ternary_accumulate(x_q, packed, n_out)
    if chosen == "triton":
        from zoo.kernels.ternary_matmul import _triton

        if x_q.dtype != torch.int8:
            raise TypeError(f"ternary_accumulate: expected int8 activations, got {x_q.dtype}")
        # fp32 sums of int8·{-1,0,1} are exact integers while |acc| < 2**24 (K up to 132k)
        return _triton.ternary_gemv(x_q, packed, 1.0, n_out, accumulate_only=True).to(torch.int32)
    return reference.ternary_accumulate(x_q, packed, n_out)


def _check_sparsity(op: str, sparsity: str) -> None:
    if sparsity not in ("none", "topk", "block"):
        raise ValueError(f"{op}: sparsity must be none, topk or block, got {sparsity!r}")


def packed_ternary_linear(
    x: torch.Tensor,
    packed: torch.Tensor,
    alpha: torch.Tensor,
    n_out: int,
    bias: torch.Tensor | None = None,
    *,
    sparsity: str = "none",
    n_keep: int = 0,
    block_size: int = 1,
    impl: str = "auto",
    scratch=None,
    norm: tuple[torch.Tensor, float] | None = None,
) -> tuple[torch.Tensor, int]:
    """The inference form's whole projection: [RMSNorm], top-K / N:M, int8, packed ternary GEMV, rescale.

    Returns ``(y fp32 [..., n_out], number of non-zero int8 inputs)``. ``cpu``: one call of the
    compiled kernel (``scratch``: a reusable :class:`_compiled.PackedLinearScratch`); ``torch``:
    the reference, equal to it bit for bit without ``norm``. ``norm = (gain, eps)``: the RMSNorm
    in front of the projection, fused (its sum of squares runs in another order than torch's, so
    with it the two agree to fp32 rounding, which can move an int8 value by one).
    """
    _check_sparsity("packed_ternary_linear", sparsity)
    if resolve_impl(impl, x, op="packed_ternary_linear", has_triton=False, has_cpu=True) == "cpu":
        from zoo.kernels.ternary_matmul import _compiled

        return _compiled.packed_linear(x, packed, float(alpha), n_out, bias, sparsity, n_keep, block_size, scratch, norm)
    return reference.packed_ternary_linear(x, packed, alpha, n_out, bias, sparsity, n_keep, block_size, norm)


def sparse_projection(
    x: torch.Tensor,
    weight_t: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    sparsity: str = "topk",
    n_keep: int = 0,
    block_size: int = 1,
    impl: str = "auto",
    scratch=None,
    norm: tuple[torch.Tensor, float] | None = None,
) -> tuple[torch.Tensor, int]:
    """The inference form of a full-precision Q-Sparse projection: ``(x ⊙ M) · weight_t (+ b)``,
    after the RMSNorm ``norm = (gain, eps)`` in front of it when given.

    ``weight_t`` is the transposed weight ``[K, N]`` (fp32 or bf16) so each input channel is one
    row; ``cpu`` reads only the rows of the kept channels (one compiled call, fp32 sums in another
    order than the reference: equal to it within fp32 rounding). Returns ``(y fp32, kept inputs)``.
    """
    _check_sparsity("sparse_projection", sparsity)
    if resolve_impl(impl, x, op="sparse_projection", has_triton=False, has_cpu=True) == "cpu":
        from zoo.kernels.ternary_matmul import _compiled

        return _compiled.sparse_linear(x, weight_t, bias, sparsity, n_keep, block_size, scratch, norm=norm)
    return reference.sparse_projection(x, weight_t, bias, sparsity, n_keep, block_size, norm)


def ternary_matmul(x: torch.Tensor, weight: torch.Tensor, *, impl: str = "auto") -> torch.Tensor:
    """``F.linear(x, W_q·α)`` of the latent ``weight`` ``[N, K]``; dX dense, dW to the latent weight (STE)."""
    if resolve_impl(impl, x, op="ternary_matmul", has_triton=HAS_TRITON) == "triton":
        from zoo.kernels.ternary_matmul import function

        return function.ternary_matmul(x, weight)
    from zoo.kernels.quant.reference import ternary_quantize

    return torch.nn.functional.linear(x, ternary_quantize(weight))


__all__ = [
    "PackedLinearScratch",
    "SparseLinearScratch",
    "cpu_kernel_isa",
    "packed_ternary_linear",
    "rms_norm",
    "sparse_projection", "sparse_input_linear", "sparse_ternary_linear", "ternary_accumulate", "ternary_linear", "ternary_matmul"]
