"""RMSNorm (Zhang & Sennrich, 2019), the normalisation of Llama and of BitNet b1.58's sub-norms."""

from __future__ import annotations

import torch
from torch import nn

from zoo.kernels.norm import rms_norm


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x²) + eps) · w``, normalised in fp32 so bf16 activations do not lose the
    small-variance channels; ``kernel`` is the zoo's kernel choice (the compiled CPU kernel under
    ``auto``, see :func:`zoo.kernels.norm.rms_norm`)."""

    def __init__(self, dim: int, eps: float = 1e-5, kernel: str = "auto") -> None:
        super().__init__()
        self.eps, self.kernel = eps, kernel
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps, impl=self.kernel)
