"""Dropless MoE routing ops (MegaBlocks, Gale et al., arXiv 2211.15841): route, permute
(stable sort, histogram, gather), unpermute (weighted scatter) and the grouped expert matmul.

Only the PyTorch reference exists so far; a Triton kernel issue adds ``_triton.py`` beside it.
"""
from __future__ import annotations

import torch

from zoo.kernels._dispatch import resolve_impl
from zoo.kernels.moe import reference
from zoo.kernels.moe.reference import grouped_mm_supported, grouped_mm_widths_aligned

HAS_TRITON = False


def _check(op: str, impl: str, x: torch.Tensor) -> None:
    if resolve_impl(impl, x, op=op, has_triton=HAS_TRITON) == "triton":  # pragma: no cover - kernel issue
        raise NotImplementedError(op)


def route(
    logits: torch.Tensor, top_k: int, renormalize: bool, bias: torch.Tensor | None = None, *, impl: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax (fp32) top-k routing: (weights fp32 ``[T, k]``, experts int64 ``[T, k]``)."""
    _check("moe_route", impl, logits)
    return reference.route(logits, top_k, renormalize, bias)


def permute(
    x: torch.Tensor, experts: torch.Tensor, n_experts: int, *, impl: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_sorted ``[T·k, D]``, order, tokens_per_expert int64 ``[E]``, end offsets int64 ``[E]``)."""
    _check("moe_permute", impl, x)
    return reference.permute(x, experts, n_experts)


def unpermute(
    y_sorted: torch.Tensor, order: torch.Tensor, weights: torch.Tensor, n_tokens: int, *, impl: str = "auto"
) -> torch.Tensor:
    """Scatter back to ``[T, D]``, each row scaled by its routing weight and summed in fp32."""
    _check("moe_unpermute", impl, y_sorted)
    return reference.unpermute(y_sorted, order, weights, n_tokens)


def grouped_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    tokens_per_expert: torch.Tensor,
    offsets: torch.Tensor,
    *,
    impl: str = "loop",
    sizes: list[int] | None = None,
) -> torch.Tensor:
    """``x[slice_e] · weight[e]ᵀ`` per expert; ``impl`` is ``loop`` (the oracle) or ``grouped_mm``.

    ``sizes`` (the counts on the host) saves the loop its one device-to-host copy.
    """
    if impl == "loop":
        return reference.grouped_linear_loop(x, weight, sizes if sizes is not None else tokens_per_expert.tolist())
    if impl == "grouped_mm":
        return reference.grouped_linear_mm(x, weight, offsets)
    raise ValueError(f"grouped_linear: impl must be 'loop' or 'grouped_mm', got {impl!r}")


__all__ = [
    "grouped_linear",
    "grouped_mm_supported",
    "grouped_mm_widths_aligned",
    "permute",
    "route",
    "unpermute",
]
