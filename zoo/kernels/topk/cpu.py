"""The compiled CPU path of Q-Sparse's input transform (arXiv 2407.10969), with BitNet b1.58's
int8 activations (arXiv 2402.17764) fused in: one C pass per row instead of torch's kthvalue,
tie cumsum and elementwise passes (most of the extra cost of a sparse training step on a CPU).

Trains with the straight-through estimator like the reference: the gradient reaches every
input channel unchanged, so nothing is saved for the backward.
"""

from __future__ import annotations

import torch

from zoo.kernels import compiled
from zoo.kernels.rule import InputRule


class _CompiledTransformSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, rule: InputRule) -> torch.Tensor:
        return compiled.topk_rows(x, rule)[0]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def input_transform(x: torch.Tensor, rule: InputRule) -> torch.Tensor:
    """``Q_x(S(x))`` (``S``: top-K, N:M or none; ``Q_x``: int8 fake quantisation or none), STE gradient."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _CompiledTransformSTE.apply(x, rule)
    return compiled.topk_rows(x, rule)[0]
