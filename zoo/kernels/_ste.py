"""The straight-through estimator shared by every quantiser and sparsifier.

Q-Sparse (arXiv 2407.10969) and BitNet b1.58 (arXiv 2402.17764) both train through a
non-differentiable forward by passing the incoming gradient through unchanged:
``x + (f(x) - x).detach()``. A custom Function gives the same values and gradient without
keeping the two temporaries the detach form allocates.
"""

from __future__ import annotations

import torch


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, transformed: torch.Tensor) -> torch.Tensor:
        return transformed

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def straight_through(x: torch.Tensor, transformed: torch.Tensor) -> torch.Tensor:
    """Forward value ``transformed`` (computed without grad from ``x``), gradient w.r.t. ``x`` the identity."""
    if not (torch.is_grad_enabled() and x.requires_grad):
        return transformed
    return _StraightThrough.apply(x, transformed.detach())
