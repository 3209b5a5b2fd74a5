"""Autograd ternary linear for training and prefill: BitNet b1.58 (Ma et al., arXiv 2402.17764)
weights, Q-Sparse (Wang et al., arXiv 2407.10969) inputs.

Forward: the latent weight is absmean-ternarised and packed in one Triton pass, then multiplied
by the (already sparsified) input with the packed kernel, which skips the channels no token of
a tile kept. Backward, straight through the weight quantiser:

* ``dX = dY · (W_q·α)``: dense, from the dense ternary weight (the STE of the input sparsifier
  upstream passes it to every channel);
* ``dW = dYᵀ · X_s``: from the sparse input, reaching the latent full-precision weight.

The ternary weight is recomputed in backward rather than saved: it is one pass over W, and
saving it would cost a weight-sized buffer per layer for the whole step.
"""

from __future__ import annotations

import torch

from zoo.kernels.pack import quantize_pack_ternary
from zoo.kernels.quant.function import ternary_dequantize
from zoo.kernels.ternary_matmul import _triton


class TernaryLinearSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        packed, alpha = quantize_pack_ternary(weight.detach(), impl="triton")  # one pass: ternarise and pack
        ctx.save_for_backward(x, weight, alpha)
        return _triton.ternary_gemv(x.detach(), packed, alpha, weight.shape[0])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight, alpha = ctx.saved_tensors
        grad_x = grad_w = None
        grad2 = grad.reshape(-1, grad.shape[-1])
        if ctx.needs_input_grad[0]:
            fake = ternary_dequantize(weight, alpha)
            grad_x = (grad2 @ fake.to(grad.dtype)).reshape(*grad.shape[:-1], weight.shape[1]).to(x.dtype)
        if ctx.needs_input_grad[1]:
            grad_w = (grad2.t() @ x.reshape(-1, x.shape[-1]).to(grad.dtype)).to(weight.dtype)
        return grad_x, grad_w


def ternary_matmul(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``F.linear(x, ternary_quantize(weight))`` with the packed Triton kernel and STE gradients."""
    return TernaryLinearSTE.apply(x, weight)
