"""Autograd wrappers of the Q-Sparse top-K kernels (Wang et al., arXiv 2407.10969).

Q-Sparse trains through the mask with the straight-through estimator: the gradient reaches
every input channel unchanged, kept or not (without it the paper sees gradient norms collapse
in the lower layers). So the backward is the identity and nothing is saved for it.
"""

from __future__ import annotations

import torch

from zoo.kernels.topk import _triton


class TopKSparsifySTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, k: int, width: int) -> torch.Tensor:
        return _triton.topk_rows(x, k, width)[0]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None, None


class TopKInt8QuantizeSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, k: int) -> torch.Tensor:
        return _triton.topk_rows(x, k, quant=True)[0]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def topk_sparsify(x: torch.Tensor, k: int) -> torch.Tensor:
    if k == x.shape[-1]:
        return x
    return TopKSparsifySTE.apply(x, k, x.shape[-1])


def block_topk_sparsify(x: torch.Tensor, n_keep: int, block: int) -> torch.Tensor:
    if n_keep == block:
        return x
    return TopKSparsifySTE.apply(x, n_keep, block)


def topk_int8_quantize(x: torch.Tensor, k: int) -> torch.Tensor:
    return TopKInt8QuantizeSTE.apply(x, k)


def topk_int8_quantize_raw(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _, q, scale, mask = _triton.topk_rows(x.detach(), k, quant=True, want_out=False, want_q=True, want_mask=True)
    return q, scale, mask


def topk_mask(x: torch.Tensor, k: int) -> torch.Tensor:
    return _triton.topk_rows(x.detach(), k, want_out=False, want_mask=True)[3]


def block_topk_mask(x: torch.Tensor, n_keep: int, block: int) -> torch.Tensor:
    return _triton.topk_rows(x.detach(), n_keep, block, want_out=False, want_mask=True)[3]
