"""BitNet b1.58 quantisers (arXiv 2402.17764): absmean ternary weights, absmax int8 activations."""

from __future__ import annotations

import torch

from zoo.kernels._dispatch import resolve_impl
from zoo.kernels.quant import reference
from zoo.kernels.quant.reference import absmean_scale

HAS_TRITON = True


def _triton_path(impl: str, x: torch.Tensor, op: str) -> bool:
    return resolve_impl(impl, x, op=op, has_triton=HAS_TRITON) == "triton"


def int8_quantize(x: torch.Tensor, *, impl: str = "auto") -> torch.Tensor:
    """Per-token absmax int8 fake quantisation (round half to even), STE gradient."""
    if _triton_path(impl, x, "int8_quantize"):
        from zoo.kernels.quant import function

        return function.int8_quantize(x)
    return reference.int8_quantize(x)


def int8_quantize_raw(x: torch.Tensor, *, impl: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 values, fp32 per-row scale ``[..., 1]``); dequantise as ``values.float() / scale``."""
    if _triton_path(impl, x, "int8_quantize_raw"):
        from zoo.kernels.quant import function

        return function.int8_quantize_raw(x)
    return reference.int8_quantize_raw(x)


def ternary_quantize(w: torch.Tensor, per_leading_dim: bool = False, *, impl: str = "auto") -> torch.Tensor:
    """Absmean ternary fake quantisation ``W_q·α``, STE gradient; one α per tensor or per leading slice."""
    if _triton_path(impl, w, "ternary_quantize"):
        from zoo.kernels.quant import function

        return function.ternary_quantize(w, per_leading_dim)
    return reference.ternary_quantize(w, per_leading_dim)


def ternary_quantize_raw(w: torch.Tensor, per_leading_dim: bool = False, *, impl: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 tensor with values in {-1, 0, 1}, fp32 α); the weight is ``values * α``."""
    if _triton_path(impl, w, "ternary_quantize_raw"):
        from zoo.kernels.quant import function

        return function.ternary_quantize_raw(w, per_leading_dim)
    return reference.ternary_quantize_raw(w, per_leading_dim)


__all__ = ["absmean_scale", "int8_quantize", "int8_quantize_raw", "ternary_quantize", "ternary_quantize_raw"]
