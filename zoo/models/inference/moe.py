"""A dropless MoE FFN (MegaBlocks semantics, Gale et al., arXiv 2211.15841) in inference form:
each expert's projections converted like every other projection (BitNet b1.58 packed ternary,
Q-Sparse sparse-input, or plain), and a token reads only the weights of the experts its router
chose."""

from __future__ import annotations

import torch
from torch import nn

from zoo.kernels import moe as moe_ops
from zoo.models.ffn import glu_activation
from zoo.models.inference.layers import PreparedProjection, inference_projection
from zoo.models.linear import ZooLinear
from zoo.models.moe import ExpertBank, MoEFeedForward


class InferenceMoE(nn.Module):
    """A dropless MoE FFN (MegaBlocks semantics) for inference: each expert's two projections in
    inference form, and a token reads only the weights of the experts its router chose."""

    def __init__(self, source: MoEFeedForward) -> None:
        super().__init__()
        self.dim, self.n_experts, self.top_k, self.act = source.dim, source.n_experts, source.top_k, source.act
        self.renormalize = source.renormalize
        self.router = source.router
        usage = source.top_k / source.n_experts  # each expert is read by this share of tokens, on average
        self.gate_up = nn.ModuleList(expert_projection(source.w_gate_up, e, usage) for e in range(source.n_experts))
        self.down = nn.ModuleList(expert_projection(source.w_down, e, usage) for e in range(source.n_experts))
        self.sub_norm = source.sub_norm  # per-expert gains, applied to each expert's rows
        if self.sub_norm is not None and all(isinstance(p, PreparedProjection) for p in self.down):
            for expert, projection in enumerate(self.down):  # folded into each expert's down projection
                projection.fuse_norm(self.sub_norm.weight[expert], self.sub_norm.eps)
            self.sub_norm = None
        self.shared = source.shared
        self.register_buffer("selection_bias", None if source.selection_bias is None else source.selection_bias.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.dim)
        weights, experts = moe_ops.route(self.router(flat), self.top_k, self.renormalize, self.selection_bias)
        if flat.shape[0] == 1:  # decoding one token: no grouping needed, k experts in turn
            return self._one_token(flat, weights[0].tolist(), experts[0].tolist()).reshape(x.shape)
        out = torch.zeros_like(flat, dtype=torch.float32)
        for expert in experts.unique().tolist():
            rows, choice = (experts == expert).nonzero(as_tuple=True)
            gate, up = self.gate_up[expert](flat.index_select(0, rows)).chunk(2, dim=-1)
            h = glu_activation(gate, up, self.act)
            if self.sub_norm is not None:
                h = self.sub_norm(h, torch.full_like(rows, expert))
            y = self.down[expert](h).float() * weights[rows, choice].unsqueeze(-1)
            out.index_add_(0, rows, y)
        out = out.to(x.dtype)
        if self.shared is not None:
            out = out + self.shared(flat)
        return out.reshape(x.shape)

    def _one_token(self, flat: torch.Tensor, weights: list[float], experts: list[int]) -> torch.Tensor:
        # Routing read back as Python numbers (two small copies) rather than indexed tensor by
        # tensor: at decode widths each torch op costs as much as a tiny expert's GEMV.
        out = None
        for weight, expert in zip(weights, experts):
            gate, up = self.gate_up[expert](flat).chunk(2, dim=-1)
            h = glu_activation(gate, up, self.act)
            if self.sub_norm is not None:
                h = self.sub_norm(h, torch.tensor([expert]))
            y = self.down[expert](h).float()
            out = y * weight if out is None else torch.add(out, y, alpha=weight)
        out = out.to(flat.dtype)
        return out + self.shared(flat) if self.shared is not None else out

    def extra_repr(self) -> str:
        return f"experts={self.n_experts}, top_k={self.top_k}, reads only the chosen experts"


def expert_projection(bank: ExpertBank, expert: int, usage: float) -> nn.Module:
    """Expert ``expert`` of a stacked bank as one projection, in inference form where one exists."""
    single = ZooLinear(
        bank.in_features, bank.out_features, site=bank.site, weight_quant=bank.weight_quant, rule=bank.rule, kernel=bank.kernel
    )
    single.input_transform = bank.input_transform  # every expert keeps the bank's rule, and counts into it
    single.weight = nn.Parameter(bank.weight.detach()[expert].clone(), requires_grad=False)
    projection = inference_projection(single) or single
    projection.usage = usage
    return projection
