"""Top-K activation sparsity (Q-Sparse, arXiv 2407.10969): per token, N:M block, and fused with int8."""
from __future__ import annotations

import torch

from zoo.kernels._dispatch import resolve_impl
from zoo.kernels.topk import reference

HAS_TRITON = False


def _run(op: str, impl: str, x: torch.Tensor, reference_fn, *args):
    if resolve_impl(impl, x, op=op, has_triton=HAS_TRITON) == "triton":  # pragma: no cover - kernel issue
        raise NotImplementedError(op)
    return reference_fn(x, *args)


def topk_sparsify(x: torch.Tensor, k: int, *, impl: str = "auto") -> torch.Tensor:
    """Keep the ``k`` largest-magnitude entries of each row (ties: lower index), STE gradient."""
    return _run("topk_sparsify", impl, x, reference.topk_sparsify, k)


def block_topk_sparsify(x: torch.Tensor, n_keep: int, block: int, *, impl: str = "auto") -> torch.Tensor:
    """Keep ``n_keep`` of every ``block`` consecutive channels by magnitude, STE gradient."""
    return _run("block_topk_sparsify", impl, x, reference.block_topk_sparsify, n_keep, block)


def topk_int8_quantize(x: torch.Tensor, k: int, *, impl: str = "auto") -> torch.Tensor:
    """Per-token top-K then absmax int8 fake quantisation, STE gradient."""
    return _run("topk_int8_quantize", impl, x, reference.topk_int8_quantize, k)


topk_mask = reference.topk_mask
block_topk_mask = reference.block_topk_mask

__all__ = ["block_topk_mask", "block_topk_sparsify", "topk_int8_quantize", "topk_mask", "topk_sparsify"]
