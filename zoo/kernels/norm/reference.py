"""Reference RMSNorm (Zhang & Sennrich, arXiv 1910.07467), the norm of Llama and of BitNet b1.58's
sub-norms (arXiv 2402.17764): ``y = x / sqrt(mean(x²) + eps) · w``, normalised in fp32 so that
bf16 activations keep their small-variance channels, then cast back and scaled."""

from __future__ import annotations

import torch


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    x32 = x.float()
    normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return normed.to(x.dtype) * weight
