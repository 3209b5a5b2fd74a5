"""The one weight initialisation of every zoo model: GPT-2's scheme (Radford et al. 2019), normal
weights with ``init_std`` and the projections that end a residual branch (attention's output, the
FFN's down projection, routed experts' and shared experts' alike) shrunk by ``1/sqrt(2·n_layers)``
so the residual stream's variance does not grow with depth.

BitNet b1.58 (arXiv 2402.17764) and Q-Sparse (arXiv 2407.10969) train their latent weights from the
same initialisation as the full-precision model; norms start at one and the MoE selection bias
(DeepSeek-V3, arXiv 2412.19437) at zero.

Layers allocate their parameters and leave them to this function, so one rule covers a whole
decoder and any part built on its own (a test's MoE layer), and the rule for a residual output is
the projection's ``site``, not a name pattern.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from zoo.models.config import ModelConfig
from zoo.models.linear import SparseProjection, ZooLinear
from zoo.models.moe import ExpertRMSNorm, MoEFeedForward
from zoo.models.norm import RMSNorm

RESIDUAL_OUTPUT_SITES = ("attn_out", "ffn_down")


@torch.no_grad()
def init_weights(model: nn.Module, config: ModelConfig) -> None:
    """Initialises every parameter and balancing buffer of ``model`` (a decoder or any of its parts)."""
    if any(p.is_meta for p in model.parameters()):
        # No storage to fill (accounting builds meta models of every entry); meta normal_()
        # still runs torch's decompositions and cost `zoo list` about 6 s.
        return
    std = config.init_std
    residual_std = std / math.sqrt(2 * config.n_layers)
    for module in model.modules():
        if isinstance(module, SparseProjection):  # ZooLinear [out, in] and expert banks [E, out, in]
            nn.init.normal_(module.weight, std=residual_std if module.site in RESIDUAL_OUTPUT_SITES else std)
            if isinstance(module, ZooLinear) and module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, (nn.Linear, nn.Embedding)):  # token embeddings, routers, the LM head
            nn.init.normal_(module.weight, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, (RMSNorm, ExpertRMSNorm)):
            module.weight.fill_(1.0)
        elif isinstance(module, MoEFeedForward) and module.selection_bias is not None:
            module.selection_bias.zero_()
