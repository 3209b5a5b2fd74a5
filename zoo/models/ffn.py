"""Gated feed-forward blocks: SwiGLU (Shazeer 2020, Llama) and the squared-ReLU GLU that Q-Sparse
(arXiv 2407.10969) trains from scratch, ``W_down((x·W_upᵀ) ⊙ ReLU(x·W_gateᵀ)²)``.

Q-Sparse sites 3 and 4 live here: the FFN input (shared by gate and up, which are one fused
projection) and the down-projection input, which is after the activation, so a SiLU model that
is continue-trained keeps its activation and gets top-K after it. With ternary weights BitNet
b1.58 (arXiv 2402.17764) adds a sub-norm before the down projection.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.models.config import ModelConfig
from zoo.models.linear import ZooLinear
from zoo.models.norm import RMSNorm


def glu_activation(gate: torch.Tensor, up: torch.Tensor, kind: str) -> torch.Tensor:
    """The gated hidden activation of the FFN: ``silu(gate)·up`` or ``relu(gate)²·up``."""
    if kind == "swiglu":
        return F.silu(gate) * up
    if kind == "relu2":
        return F.relu(gate).square() * up
    raise ValueError(f"ffn_act must be 'swiglu' or 'relu2', got {kind!r}")


class GatedFeedForward(nn.Module):
    """Dense gated FFN; ``w_gate_up`` holds gate then up stacked on the output dimension."""

    def __init__(self, config: ModelConfig, hidden_dim: int | None = None) -> None:
        super().__init__()
        hidden = hidden_dim or config.ffn_dim
        self.hidden_dim = hidden
        self.act = config.ffn_act
        self.w_gate_up = ZooLinear.from_config(config, config.dim, 2 * hidden, site="ffn_in")
        self.sub_norm = RMSNorm(hidden, config.norm_eps, config.kernel) if config.has_sub_norm else nn.Identity()
        self.w_down = ZooLinear.from_config(config, hidden, config.dim, site="ffn_down")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w_gate_up(x).chunk(2, dim=-1)
        return self.w_down(self.sub_norm(glu_activation(gate, up, self.act)))
