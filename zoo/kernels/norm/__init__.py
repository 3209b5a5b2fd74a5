"""RMSNorm (Zhang & Sennrich, arXiv 1910.07467), as Llama and BitNet b1.58's sub-norms use it."""

from __future__ import annotations

import torch

from zoo.kernels import compiled
from zoo.kernels._dispatch import resolve_impl
from zoo.kernels.norm import reference


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, *, impl: str = "auto") -> torch.Tensor:
    """``x / sqrt(mean(x²) + eps) · weight`` over the last dimension.

    ``auto`` takes the compiled CPU kernel for fp32 CPU tensors (one pass forward, one backward;
    equal to the reference within fp32 rounding, its sums run in double), else the reference.
    """
    chosen = resolve_impl(impl, x, op="rms_norm", has_triton=False, has_cpu=True)
    if chosen == "cpu" and (impl == "cpu" or compiled.rms_norm_supported(x, weight)):
        from zoo.kernels.norm import cpu

        return cpu.rms_norm(x, weight, eps)
    return reference.rms_norm(x, weight, eps)


__all__ = ["rms_norm"]
