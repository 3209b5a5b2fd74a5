"""Ternary (BitNet b1.58, arXiv 2402.17764) linear on 2-bit packed weights, skipping the input
channels that Q-Sparse (arXiv 2407.10969) zeroed.

* :func:`ternary_linear` / :func:`ternary_accumulate`: ``y = x · (W_q·α)ᵀ`` on weights packed
  by :func:`zoo.kernels.pack_ternary`; Triton (a GEMV that reads only the packed rows of the
  channels non-zero in the batch) on CUDA or under the interpreter, else the torch reference.
* :func:`ternary_matmul`: the training/prefill form, ``F.linear(x, ternary_quantize(W))`` on the
  latent weight, with straight-through gradients (Triton: quantise+pack, then the packed kernel).
* :func:`latent_ternary_linear`: what a training-form projection calls (Triton opt-in, else torch).
* :func:`prepare_packed_ternary_linear` / :func:`prepare_sparse_projection`: the inference form's
  whole projection (input rule, matmul, rescale) chosen and checked once, then one compiled CPU call
  (:mod:`zoo.kernels.compiled`) or the reference per ``x``; :func:`packed_ternary_linear` /
  :func:`sparse_projection` are one such call.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from zoo.kernels import compiled
from zoo.kernels._dispatch import resolve_impl
from zoo.kernels.compiled import isa as cpu_kernel_isa
from zoo.kernels.pack import untile_ternary
from zoo.kernels.rule import InputRule
from zoo.kernels.ternary_matmul import reference
from zoo.kernels.ternary_matmul.reference import rms_norm

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
        return compiled.ternary_accumulate(x_q, packed, n_out)
    if chosen == "triton":
        from zoo.kernels.ternary_matmul import _triton

        if x_q.dtype != torch.int8:
            raise TypeError(f"ternary_accumulate: expected int8 activations, got {x_q.dtype}")
        # fp32 sums of int8·{-1,0,1} are exact integers while |acc| < 2**24 (K up to 132k)
        return _triton.ternary_gemv(x_q, packed, 1.0, n_out, accumulate_only=True).to(torch.int32)
    return reference.ternary_accumulate(x_q, packed, n_out)


def prepare_packed_ternary_linear(
    packed: torch.Tensor,
    alpha: torch.Tensor | float,
    n_out: int,
    bias: torch.Tensor | None = None,
    *,
    rule: InputRule,
    impl: str = "auto",
    norm: tuple[torch.Tensor, float] | None = None,
) -> Callable[[torch.Tensor], tuple[torch.Tensor, int | torch.Tensor]]:
    """The inference form's whole projection, chosen and checked once: a function of ``x`` returning
    ``(y fp32 [..., n_out], number of non-zero int8 inputs)``. [RMSNorm], ``rule`` (top-K / N:M,
    then int8: the packed GEMV multiplies int8 inputs, so the rule must have ``int8``), packed
    ternary GEMV, rescale by ``alpha`` (one scale, or a tensor of one per output row). ``packed`` is the canonical ``[K, nb]`` layout or its decoding tiles
    ``[ceil(nb/32), K, 32]`` (:func:`zoo.kernels.tile_ternary`), which the compiled kernel then holds
    without a copy.

    ``auto``: the compiled CPU kernel for CPU weights (one call), else the torch reference, equal to
    it bit for bit without ``norm``. ``triton`` (opt-in until a GPU run shows it faster): the Triton
    top-K/int8 and packed GEMV kernels; its count is a device tensor, so nothing waits for the GPU.
    ``norm = (gain, eps)``: the RMSNorm in front of the projection, fused (the compiled kernel sums
    squares in another order than torch, so with it the two agree to fp32 rounding, which can move
    an int8 value by one). The choice (and ``ZOO_KERNEL``) is read here, not per call.
    """
    if not rule.int8:
        raise ValueError(f"packed_ternary_linear: the packed ternary GEMV multiplies int8 inputs; got the rule {rule}")
    rule.check(packed.shape[-2 if packed.dim() == 3 else 0], "packed_ternary_linear")
    cpu = impl != "triton" and resolve_impl(impl, packed, op="packed_ternary_linear", has_triton=False, has_cpu=True) == "cpu"
    if cpu:  # either layout: the compiled kernel holds tiles
        return compiled.PackedLinear(packed, alpha, n_out, bias, rule, norm)
    if packed.dim() == 3:  # the tiled decoding layout: the torch and Triton paths read the canonical one
        packed = untile_ternary(packed, n_out)
    args = (packed, alpha, n_out, bias, rule, norm)
    if impl == "triton":
        return lambda x: _triton_packed_linear(x, *args)
    return lambda x: reference.packed_ternary_linear(x, *args)


def packed_ternary_linear(
    x: torch.Tensor, packed: torch.Tensor, alpha: torch.Tensor | float, n_out: int, bias: torch.Tensor | None = None, **choices
) -> tuple[torch.Tensor, int | torch.Tensor]:
    """One call of :func:`prepare_packed_ternary_linear` (same keyword choices) on ``x``."""
    return prepare_packed_ternary_linear(packed, alpha, n_out, bias, **choices)(x)


def _triton_packed_linear(x, packed, alpha, n_out, bias, rule: InputRule, norm):
    resolve_impl("triton", x, op="packed_ternary_linear", has_triton=True)
    from zoo.kernels import quant, topk
    from zoo.kernels.ternary_matmul import _triton

    rows = rms_norm(x.detach(), norm).to(x.dtype)
    if rule.sparsity == "topk":
        values, scale, _ = topk.topk_int8_quantize_raw(rows, rule.n_keep, impl="triton")
    else:
        if rule.sparsity == "block":
            rows = topk.block_topk_sparsify(rows, rule.n_keep, rule.block_size, impl="triton")
        values, scale = quant.int8_quantize_raw(rows, impl="triton")
    values = values.to(torch.int8)
    per_row = torch.is_tensor(alpha) and alpha.numel() > 1  # one scale per output: applied after the GEMV
    y = _triton.ternary_gemv(values, packed, 1.0 if per_row else alpha, n_out, scale)
    y = y * alpha.to(y) if per_row else y
    return (y + bias if bias is not None else y), (values != 0).sum()


def prepare_sparse_projection(
    weight_t: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    rule: InputRule,
    impl: str = "auto",
    norm: tuple[torch.Tensor, float] | None = None,
) -> Callable[[torch.Tensor], tuple[torch.Tensor, int]]:
    """The inference form of a full-precision Q-Sparse projection, chosen and checked once: a
    function of ``x`` returning ``(y fp32, kept non-zero inputs)`` for ``(x ⊙ M) · weight_t (+ b)``
    (``M``: the mask of ``rule``, which has no int8: the inputs stay full precision),
    after the RMSNorm ``norm = (gain, eps)`` in front of it when given.

    ``weight_t`` is the transposed weight ``[K, N]`` so each input channel is one row. ``auto``:
    the compiled CPU kernel for a CPU fp32 or bf16 weight (one call that reads only the rows of the
    kept channels; fp32 sums in another order than the reference, so equal to it within fp32
    rounding), else the reference.
    """
    if rule.int8:
        raise ValueError(f"sparse_projection: full-precision inputs only; got the rule {rule}")
    rule.check(weight_t.shape[0], "sparse_projection")
    chosen = resolve_impl(impl, weight_t, op="sparse_projection", has_triton=False, has_cpu=True)
    if chosen == "cpu" and (impl == "cpu" or weight_t.dtype in compiled.SPARSE_WEIGHT_DTYPES):
        return compiled.SparseLinear(weight_t, bias, rule, norm=norm)
    return lambda x: reference.sparse_projection(x, weight_t, bias, rule, norm)


def sparse_projection(x: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor | None = None, **choices) -> tuple[torch.Tensor, int]:
    """One call of :func:`prepare_sparse_projection` (same keyword choices) on ``x``."""
    return prepare_sparse_projection(weight_t, bias, **choices)(x)


def latent_ternary_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    impl: str = "auto",
    quantized: Callable[[], torch.Tensor] | None = None,
) -> torch.Tensor:
    """The training form of a ternary projection: ``F.linear(x, W_q·α, b)`` of the latent ``weight``
    ``[N, K]``, dX dense, dW to the latent weight (STE).

    ``triton`` (opt-in, not ``auto``: parity-tested under the interpreter, not yet shown faster on
    a GPU) quantises, packs and runs the packed Triton matmul. Otherwise torch: ``quantized()``
    when given (the caller's cache of ``W_q·α`` for frozen weights), else the reference quantiser.
    """
    if impl == "triton":
        y = ternary_matmul(x, weight, impl="triton")
        return y + bias if bias is not None else y
    resolve_impl(impl, x, op="latent_ternary_linear", has_triton=HAS_TRITON, has_cpu=True)  # validates the name
    from zoo.kernels.quant.reference import ternary_quantize

    return torch.nn.functional.linear(x, quantized() if quantized is not None else ternary_quantize(weight), bias)


def ternary_matmul(x: torch.Tensor, weight: torch.Tensor, *, impl: str = "auto") -> torch.Tensor:
    """``F.linear(x, W_q·α)`` of the latent ``weight`` ``[N, K]``; dX dense, dW to the latent weight (STE)."""
    if resolve_impl(impl, x, op="ternary_matmul", has_triton=HAS_TRITON) == "triton":
        from zoo.kernels.ternary_matmul import function

        return function.ternary_matmul(x, weight)
    from zoo.kernels.quant.reference import ternary_quantize

    return torch.nn.functional.linear(x, ternary_quantize(weight))


__all__ = [
    "cpu_kernel_isa",
    "packed_ternary_linear",
    "rms_norm",
    "latent_ternary_linear",
    "sparse_projection",
    "ternary_accumulate",
    "ternary_linear",
    "ternary_matmul",
]
