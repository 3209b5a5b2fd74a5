"""BitNet b1.58 quantisers (arXiv 2402.17764): absmean ternary weights, absmax int8 activations."""
from __future__ import annotations

import torch

from zoo.kernels._dispatch import resolve_impl
from zoo.kernels.quant import reference
from zoo.kernels.quant.reference import absmean_scale, int8_quantize_raw, ternary_quantize_raw

HAS_TRITON = False


def int8_quantize(x: torch.Tensor, *, impl: str = "auto") -> torch.Tensor:
    """Per-token absmax int8 fake quantisation (round half to even), STE gradient."""
    resolve_impl(impl, x, op="int8_quantize", has_triton=HAS_TRITON)
    return reference.int8_quantize(x)


def ternary_quantize(w: torch.Tensor, per_leading_dim: bool = False, *, impl: str = "auto") -> torch.Tensor:
    """Absmean ternary fake quantisation ``W_q·α``, STE gradient; one α per tensor or per leading slice."""
    resolve_impl(impl, w, op="ternary_quantize", has_triton=HAS_TRITON)
    return reference.ternary_quantize(w, per_leading_dim)


__all__ = ["absmean_scale", "int8_quantize", "int8_quantize_raw", "ternary_quantize", "ternary_quantize_raw"]
