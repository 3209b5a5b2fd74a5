"""The compiled CPU RMSNorm (``zoo.kernels.compiled``, ``rms_norm.c``) with its own backward: one
pass each way instead of torch's chain of elementwise ops (arXiv 1910.07467)."""

from __future__ import annotations

import torch

from zoo.kernels import compiled


class _CompiledRMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        y, rstd = compiled.rms_norm_forward(x, weight, eps)
        ctx.save_for_backward(x, weight, rstd)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight, rstd = ctx.saved_tensors
        dx, dw = compiled.rms_norm_backward(x, weight, rstd, grad)
        return dx, dw if ctx.needs_input_grad[1] else None, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return _CompiledRMSNorm.apply(x, weight, eps)
    return compiled.rms_norm_forward(x, weight, eps)[0]
