"""Reference quantisers of BitNet b1.58 (Ma et al., arXiv 2402.17764).

Weights: per-tensor absmean ternary, ``α = mean|W|`` (clamped ≥ 1e-5),
``W_q = RoundClip(W/α, −1, 1)``, used as ``W_q·α``. Stacked expert weights ``[E, ...]`` take one
α per expert (``per_leading_dim=True``).

Activations: per-token absmax int8, ``s = 127/max|x|`` (clamped so max|x| ≥ 1e-5),
``x_q = RoundClip(x·s, −128, 127)``, used as ``x_q/s``. ``torch.round`` rounds half to even;
every kernel must do the same.

Both train with the straight-through estimator.
"""

from __future__ import annotations

import torch

from zoo.kernels._ste import straight_through

EPS = 1e-5


def int8_quantize_values(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(integer-valued tensor in x's float dtype, per-row scale ``127/max|x|``), computed in fp32."""
    x32 = x.detach().float()
    scale = 127.0 / x32.abs().amax(dim=-1, keepdim=True).clamp(min=EPS)
    return (x32 * scale).round().clamp(-128, 127), scale


def int8_quantize_raw(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 values, fp32 per-row scale); dequantise as ``values.float() / scale``."""
    values, scale = int8_quantize_values(x)
    return values.to(torch.int8), scale


def int8_quantize(x: torch.Tensor) -> torch.Tensor:
    """Per-token absmax int8 fake quantisation with the straight-through gradient."""
    with torch.no_grad():
        values, scale = int8_quantize_values(x)
        fake = (values / scale).to(x.dtype)
    return straight_through(x, fake)


def absmean_scale(w: torch.Tensor, per_leading_dim: bool = False) -> torch.Tensor:
    """α = mean|W| in fp32, per tensor (a 0-d tensor) or per slice of the first dimension."""
    magnitude = w.detach().float().abs()
    if per_leading_dim:
        return magnitude.mean(dim=tuple(range(1, w.dim())), keepdim=True).clamp(min=EPS)
    return magnitude.mean().clamp(min=EPS)


def ternary_quantize_raw(w: torch.Tensor, per_leading_dim: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 tensor with values in {-1, 0, 1}, fp32 α); the weight is ``values * α``."""
    alpha = absmean_scale(w, per_leading_dim)
    return (w.detach().float() / alpha).round().clamp(-1, 1).to(torch.int8), alpha


def ternary_quantize(w: torch.Tensor, per_leading_dim: bool = False) -> torch.Tensor:
    """Absmean ternary fake quantisation ``W_q·α`` with the straight-through gradient."""
    with torch.no_grad():
        values, alpha = ternary_quantize_raw(w, per_leading_dim)
        fake = (values.float() * alpha).to(w.dtype)
    return straight_through(w, fake)
