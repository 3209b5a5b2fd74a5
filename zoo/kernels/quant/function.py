"""Autograd wrappers of the BitNet b1.58 quantiser kernels (Ma et al., arXiv 2402.17764).

Both quantisers train with the straight-through estimator: the forward value is the fake
quantised tensor, the backward passes the incoming gradient unchanged. Nothing is saved for
backward, so the kernels add no activation memory.
"""

from __future__ import annotations

import torch

from zoo.kernels.quant import _triton
from zoo.kernels.quant.reference import absmean_scale


class Int8QuantizeSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        _, fake, _ = _triton.int8_rows(x, want_q=False, want_fake=True)
        return fake

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad


class TernaryQuantizeSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w: torch.Tensor, per_leading_dim: bool) -> torch.Tensor:
        _, fake = _triton.ternary(w, absmean_scale(w, per_leading_dim), want_q=False, want_fake=True)
        return fake

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def int8_quantize(x: torch.Tensor) -> torch.Tensor:
    return Int8QuantizeSTE.apply(x)


def int8_quantize_raw(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    q, _, scale = _triton.int8_rows(x.detach(), want_q=True, want_fake=False)
    return q, scale


def ternary_quantize(w: torch.Tensor, per_leading_dim: bool = False) -> torch.Tensor:
    return TernaryQuantizeSTE.apply(w, per_leading_dim)


def ternary_quantize_raw(w: torch.Tensor, per_leading_dim: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    alpha = absmean_scale(w, per_leading_dim)
    q, _ = _triton.ternary(w.detach(), alpha, want_q=True, want_fake=False)
    return q, alpha


def ternary_dequantize(w: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``W_q·α`` in w's dtype for a given ``α`` (no gradient): the dense ternary weight that a
    backward multiplies by, without reducing ``α`` again."""
    return _triton.ternary(w.detach(), alpha, want_q=False, want_fake=True)[1]
