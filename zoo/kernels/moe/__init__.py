"""Dropless MoE routing ops (MegaBlocks, Gale et al., arXiv 2211.15841): route, permute
(stable sort, histogram, gather), unpermute (weighted scatter) and the grouped expert matmul.

``permute``, ``unpermute`` and ``grouped_linear`` also have Triton kernels (``impl="triton"``, or
``auto`` on CUDA / under TRITON_INTERPRET=1 for the first two); routing stays in PyTorch.
"""

from __future__ import annotations

import torch

from zoo.kernels._dispatch import resolve_impl
from zoo.kernels.moe import reference
from zoo.kernels.moe.reference import grouped_mm_supported, grouped_mm_widths_aligned


def route(
    logits: torch.Tensor, top_k: int, renormalize: bool, bias: torch.Tensor | None = None, *, impl: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax (fp32) top-k routing: (weights fp32 ``[T, k]``, experts int64 ``[T, k]``)."""
    resolve_impl(impl, logits, op="moe_route", has_triton=False)  # a softmax and a topk: torch's own
    return reference.route(logits, top_k, renormalize, bias)


def permute(
    x: torch.Tensor, experts: torch.Tensor, n_experts: int, *, impl: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_sorted ``[T·k, D]``, order, tokens_per_expert int64 ``[E]``, end offsets int64 ``[E]``)."""
    if resolve_impl(impl, x, op="moe_permute", has_triton=True) == "triton":
        from zoo.kernels.moe import function

        # The sort and histogram stay in torch; the row movement is the kernel's.
        order, tokens_per_expert, offsets = reference.expert_order(experts, n_experts)
        return function.GatherRows.apply(x, order // experts.shape[1]), order, tokens_per_expert, offsets
    return reference.permute(x, experts, n_experts)


def unpermute(y_sorted: torch.Tensor, order: torch.Tensor, weights: torch.Tensor, n_tokens: int, *, impl: str = "auto") -> torch.Tensor:
    """Scatter back to ``[T, D]``, each row scaled by its routing weight and summed in fp32."""
    if resolve_impl(impl, y_sorted, op="moe_unpermute", has_triton=True) == "triton":
        from zoo.kernels.moe import function

        positions = torch.empty_like(order).scatter_(0, order, torch.arange(order.numel(), device=order.device))
        return function.Combine.apply(y_sorted, positions.reshape(n_tokens, -1), weights)
    return reference.unpermute(y_sorted, order, weights, n_tokens)


def grouped_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    tokens_per_expert: torch.Tensor,
    offsets: torch.Tensor,
    *,
    impl: str = "reference",
    sizes: list[int] | None = None,
) -> torch.Tensor:
    """``x[slice_e] · weight[e]ᵀ`` per expert; ``impl`` is ``reference`` (a loop over experts: the
    oracle), ``grouped_mm`` or ``triton``, the MoE backends' names.

    ``sizes`` (the counts on the host) saves the loop its one device-to-host copy.
    """
    if impl == "reference":
        return reference.grouped_linear_loop(x, weight, sizes if sizes is not None else tokens_per_expert.tolist())
    if impl == "grouped_mm":
        return reference.grouped_linear_mm(x, weight, offsets)
    if impl == "triton":
        resolve_impl("triton", x, op="moe_grouped_linear", has_triton=True)
        from zoo.kernels.moe import function

        return function.grouped_linear(x, weight, sizes if sizes is not None else tokens_per_expert.tolist())
    raise ValueError(f"grouped_linear: impl must be 'reference', 'grouped_mm' or 'triton', got {impl!r}")


__all__ = [
    "grouped_linear",
    "grouped_mm_supported",
    "grouped_mm_widths_aligned",
    "permute",
    "route",
    "unpermute",
]
