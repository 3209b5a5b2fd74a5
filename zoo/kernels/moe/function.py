"""Autograd for the Triton MoE kernels. Grouped matmul: ``dX`` is the same grouped product with
each expert's weight transposed, ``dW_e = dY_eᵀ · X_e`` per expert (MegaBlocks' grouped backward).
Gather: the gradient is added back to the source rows. Combine: each sorted row gets its token's
gradient times its weight, each weight the dot product of its row with that gradient."""

from __future__ import annotations

import torch


class GroupedLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        from zoo.kernels.moe import _triton

        ctx.save_for_backward(x, weight)
        ctx.sizes = sizes
        return _triton.grouped_linear(x.contiguous(), weight.contiguous(), sizes)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        from zoo.kernels.moe import _triton

        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = _triton.grouped_linear(grad, weight.transpose(1, 2).contiguous(), ctx.sizes) if ctx.needs_input_grad[0] else None
        grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = torch.zeros_like(weight)
            for expert, (g, part) in enumerate(zip(grad.split(ctx.sizes), x.split(ctx.sizes))):
                if ctx.sizes[expert]:
                    grad_w[expert] = (g.t().float() @ part.float()).to(weight.dtype)
        return grad_x, grad_w, None


def grouped_linear(x: torch.Tensor, weight: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    return GroupedLinear.apply(x, weight, sizes)


class GatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
        from zoo.kernels.moe import _triton

        ctx.save_for_backward(src)
        ctx.n_rows = x.shape[0]
        return _triton.gather_rows(x, src)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (src,) = ctx.saved_tensors
        grad_x = grad.new_zeros(ctx.n_rows, grad.shape[1], dtype=torch.float32).index_add_(0, src, grad.float())
        return grad_x.to(grad.dtype), None


class Combine(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y_sorted: torch.Tensor, positions: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        from zoo.kernels.moe import _triton

        ctx.save_for_backward(y_sorted, positions, weights)
        return _triton.combine(y_sorted, positions, weights)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        y_sorted, positions, weights = ctx.saved_tensors
        top_k = weights.shape[1]
        grad32 = grad.float()
        grad_y = torch.zeros(y_sorted.shape, dtype=torch.float32, device=grad.device)
        grad_y.index_add_(0, positions.reshape(-1), (grad32.unsqueeze(1) * weights.float().unsqueeze(-1)).reshape(-1, grad.shape[1]))
        rows = y_sorted.float().index_select(0, positions.reshape(-1)).reshape(-1, top_k, grad.shape[1])
        grad_w = (rows * grad32.unsqueeze(1)).sum(-1)
        return grad_y.to(y_sorted.dtype), None, grad_w.to(weights.dtype)
