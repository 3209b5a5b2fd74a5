"""Dropless mixture-of-experts FFN with MegaBlocks semantics (Gale et al., arXiv 2211.15841),
whose experts take the same projection choices as every other linear of the zoo: Q-Sparse top-K
inputs (arXiv 2407.10969), int8 activations and BitNet b1.58 ternary weights (arXiv 2402.17764).

``y_t = shared(x_t) + Σ_{e ∈ topk(p_t)} w_te · E_e(x_t)``, every token keeps all of its k experts
(no capacity factor, nothing dropped, nothing padded). The tokens are permuted into
expert-contiguous order (stable sort, histogram, cumulative sum), each expert runs on its slice,
and the outputs are scattered back scaled by their routing weights in fp32.

Expert weights are stacked, ``w_gate_up [E, 2F, D]`` (gate rows, then up rows, as in the dense
:class:`~zoo.models.ffn.GatedFeedForward`) and ``w_down [E, D, F]``, each ternarised with one
absmean scale per expert. Every backend (``moe_impl``, a name of the registry in
:mod:`zoo.models.moe_backends`) shares these parameters and state-dict keys.

Auxiliary losses (Switch-style load balancing, ST-MoE router z-loss) and the token counts of the
last forward stay on the module as ``last_aux_losses`` and ``tokens_per_expert``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

import zoo.kernels as kernels
from zoo.kernels import moe as moe_ops
from zoo.kernels.norm.reference import rms_norm as reference_rms_norm
from zoo.models.config import ModelConfig
from zoo.models.counts import BF16_BITS, SCALE_BYTES, TERNARY_PACKED_BITS, LinearAccount
from zoo.models.ffn import GatedFeedForward, glu_activation
from zoo.models.linear import SparseProjection, frozen_cache
from zoo.models.moe_backends import (
    MOE_BACKENDS,
    ExpertGroups,
    ExpertShapes,
    MoEBackend,
    MoEBackendUnavailable,
    megablocks_ops,
    resolve_moe_backend,
)
from zoo.models.protocols import Accounted, ExpertRouting

__all__ = ["ExpertBank", "ExpertGroups", "MoEBackendUnavailable", "MoEFeedForward", "Router", "from_megablocks", "to_megablocks"]


class Router(Accounted, nn.Linear):
    """``D → E`` logits in fp32. Routers stay full precision and dense in every zoo entry: a
    ternary or sparsified router would flip expert choices, and it is a tiny ``E·D`` matrix."""

    def __init__(self, dim: int, n_experts: int) -> None:
        super().__init__(dim, n_experts, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # fp32 logits: softmax over experts and the z-loss are sensitive to bf16 rounding.
        return F.linear(x.float(), self.weight.float())

    def accounting_entry(self) -> LinearAccount:
        return LinearAccount(self.weight.numel(), "router", BF16_BITS)


class ExpertBank(SparseProjection):
    """``E`` stacked projections ``[E, out, in]`` with the projection choices of :class:`ZooLinear`.

    The input transform is per token (top-K, N:M and int8 all act row by row), so it commutes with
    the permutation: the caller applies :meth:`transform_input` wherever it is cheapest, then
    :meth:`forward` multiplies each expert's contiguous slice by that expert's weight.
    """

    def __init__(self, n_experts: int, in_features: int, out_features: int, *, usage: float = 1.0, **choices) -> None:
        super().__init__((n_experts, out_features, in_features), in_features, out_features, **choices)
        self.n_experts = n_experts
        self.usage = usage  # mean fraction of tokens routed to one expert: top_k / n_experts

    @classmethod
    def from_config(cls, config: ModelConfig, in_features: int, out_features: int, site: str) -> ExpertBank:
        usage = config.top_k / config.n_experts
        return cls(config.n_experts, in_features, out_features, site=site, usage=usage, **cls.choices(config, in_features))

    def effective_weight(self) -> torch.Tensor:
        if self.weight_quant == "ternary":
            # One absmean scale per expert: experts are separate matrices that happen to be stacked.
            return frozen_cache(self, "ternary", lambda: kernels.ternary_quantize(self.weight, per_leading_dim=True, impl=self.kernel))
        return self.weight

    def forward(self, x: torch.Tensor, groups: ExpertGroups) -> torch.Tensor:
        """``x[slice_e] · W_eᵀ`` for every expert; ``x`` is permuted and already transformed."""
        return MOE_BACKENDS[groups.backend].grouped_linear(x, self.effective_weight(), groups)

    def accounting_entry(self) -> LinearAccount:
        if self.weight_quant == "ternary":
            return LinearAccount(self.weight.numel(), self.site, TERNARY_PACKED_BITS, SCALE_BYTES * self.n_experts, self.usage)
        return LinearAccount(self.weight.numel(), self.site, BF16_BITS, 0, self.usage)

    def extra_repr(self) -> str:
        return f"experts={self.n_experts}, " + super().extra_repr()


class ExpertRMSNorm(nn.Module):
    """BitNet's sub-norm before each expert's down projection, one gain vector per expert."""

    def __init__(self, n_experts: int, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n_experts, dim))

    def forward(self, x: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
        # RMSNorm's reference arithmetic with each row's expert gain, so one expert reproduces the
        # dense FFN's torch path exactly.
        return reference_rms_norm(x, self.weight.index_select(0, experts), self.eps)


class MoEFeedForward(ExpertRouting, nn.Module):
    """Dropless top-k MoE FFN: router → permute → experts on contiguous slices → weighted unpermute.

    ``ModelConfig.balance_bias_rate > 0`` turns on DeepSeek-V3's auxiliary-loss-free balancing
    (arXiv 2412.19437, §2.1.2): a buffer added to the logits for expert *selection* only, moved by
    ``rate · sign(mean load − load)`` once per optimizer step (:meth:`update_selection_bias`, which
    the training loop calls before each step), on the expert loads summed over every micro-batch of
    the step and, under data parallelism, over every rank: so gradient accumulation and DDP move the
    bias exactly as one large batch would.
    """

    def __init__(self, config: ModelConfig, *, balance_bias_rate: float | None = None) -> None:
        super().__init__()
        if config.n_experts < 1:
            raise ValueError(f"MoEFeedForward: ModelConfig.n_experts must be >= 1, got {config.n_experts}")
        if not 1 <= config.top_k <= config.n_experts:
            raise ValueError(f"MoEFeedForward: ModelConfig.top_k must be in [1, n_experts={config.n_experts}], got {config.top_k}")
        balance_bias_rate = config.balance_bias_rate if balance_bias_rate is None else balance_bias_rate
        if not balance_bias_rate >= 0:
            raise ValueError(f"MoEFeedForward: balance_bias_rate must be >= 0, got {balance_bias_rate}")
        self.dim, self.n_experts, self.top_k = config.dim, config.n_experts, config.top_k
        self.hidden_dim = hidden = config.hidden_dim
        self.act = config.ffn_act
        self.renormalize = config.renormalize_router
        self.moe_impl = config.moe_impl
        self.aux_loss_coef, self.z_loss_coef = config.aux_loss_coef, config.z_loss_coef
        self.balance_bias_rate = balance_bias_rate

        self.router = Router(config.dim, config.n_experts)
        self.w_gate_up = ExpertBank.from_config(config, config.dim, 2 * hidden, site="ffn_in")
        self.sub_norm = ExpertRMSNorm(config.n_experts, hidden, config.norm_eps) if config.has_sub_norm else None
        self.w_down = ExpertBank.from_config(config, hidden, config.dim, site="ffn_down")
        self.shared = GatedFeedForward(config, hidden_dim=config.n_shared_experts * hidden) if config.n_shared_experts else None
        if balance_bias_rate > 0:
            self.register_buffer("selection_bias", torch.zeros(config.n_experts))
            # loads of the training forwards since the last bias update; not saved (a resumed run
            # starts its step afresh)
            self.register_buffer("pending_load", torch.zeros(config.n_experts), persistent=False)
        else:
            self.selection_bias = self.pending_load = None

        self.last_aux_losses: dict[str, torch.Tensor] = {}
        self.tokens_per_expert: torch.Tensor | None = None

    # Backend choice ------------------------------------------------------------------------------
    def backend(self, x: torch.Tensor) -> str:
        """The name of the backend (see :mod:`zoo.models.moe_backends`) that ``moe_impl`` gives for
        an input like ``x``; raises :class:`MoEBackendUnavailable` if the named one cannot run."""
        return self._backend(x).name

    def _backend(self, x: torch.Tensor) -> MoEBackend:
        return resolve_moe_backend(self.moe_impl, x, ExpertShapes(self.dim, self.hidden_dim))

    # Forward -------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        backend = self._backend(x)
        logits = self.router(x)
        weights, experts = moe_ops.route(logits, self.top_k, self.renormalize, self.selection_bias)
        # Top-K and int8 are per token, so the expert input is transformed once per token rather
        # than once per token-expert assignment.
        h = self.w_gate_up.transform_input(x)
        if backend.routing == "megablocks":
            out, tokens_per_expert = self._megablocks_experts(h, weights, experts)
        else:
            ops_impl = backend.routing  # torch or triton
            h_sorted, order, tokens_per_expert, offsets = moe_ops.permute(h, experts, self.n_experts, impl=ops_impl)
            groups = ExpertGroups(tokens_per_expert, offsets, experts.reshape(-1).index_select(0, order), backend.name)
            out = moe_ops.unpermute(self._experts(h_sorted, groups), order, weights, x.shape[0], impl=ops_impl)
        if self.shared is not None:
            out = out + self.shared(x)
        self._after_forward(logits, tokens_per_expert)
        return out.reshape(shape)

    def _experts(self, h: torch.Tensor, groups: ExpertGroups) -> torch.Tensor:
        """Every expert's gated FFN on its contiguous slice of the permuted (transformed) tokens."""
        gate, up = self.w_gate_up(h, groups).chunk(2, dim=-1)
        h = glu_activation(gate, up, self.act)
        if self.sub_norm is not None:
            h = self.sub_norm(h, groups.sorted_experts)
        h = self.w_down.transform_input(h)
        return self.w_down(h, groups)

    def _megablocks_experts(self, h: torch.Tensor, weights: torch.Tensor, experts: torch.Tensor):
        ops = megablocks_ops()
        flat = experts.reshape(-1).int()
        end_bit = max(int(math.ceil(math.log2(self.n_experts))), 1)
        bin_ids, indices = ops.sort(flat, end_bit)
        tokens_per_expert = ops.histogram(flat, self.n_experts)
        bins = ops.inclusive_cumsum(tokens_per_expert, 0)
        bins = bins.view(1) if bins.dim() == 0 else bins
        groups = ExpertGroups(tokens_per_expert, bins, bin_ids.long(), "megablocks")
        y = self._experts(ops.gather(h.contiguous(), indices, bin_ids, bins, self.top_k), groups)
        # megablocks' scatter takes the weights in the activation dtype (its own router's dtype).
        out = ops.scatter(y, indices, bin_ids, weights.reshape(-1).to(y.dtype), bins, self.top_k)
        return out, tokens_per_expert.long()

    def _after_forward(self, logits: torch.Tensor, tokens_per_expert: torch.Tensor) -> None:
        counts = tokens_per_expert.detach()
        self.tokens_per_expert = counts
        self.last_aux_losses = self.compute_aux_losses(logits, counts)
        if self.pending_load is not None and self.training:
            self.pending_load.add_(counts.float())

    @torch.no_grad()
    def update_selection_bias(self) -> None:
        """One balancing step on the loads gathered since the last one (all ranks summed), then
        starts gathering afresh; nothing happens without balancing or without gathered loads."""
        if self.pending_load is None:
            return
        load = self.pending_load
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(load)
        if load.sum() > 0:
            self.selection_bias.add_(self.balance_bias_rate * torch.sign(load.mean() - load))
        load.zero_()

    def compute_aux_losses(self, logits: torch.Tensor, tokens_per_expert: torch.Tensor) -> dict[str, torch.Tensor]:
        """Switch load balancing ``c·E·Σ_e f_e·p_e`` and router z-loss ``c·mean(logsumexp(logits)²)``.

        ``f_e``: fraction of the ``T·k`` assignments routed to ``e`` (not differentiable);
        ``p_e``: mean router probability of ``e``, through which the loss trains the router.
        A term whose coefficient is 0 is left out.
        """
        losses: dict[str, torch.Tensor] = {}
        logits = logits.float()
        if self.aux_loss_coef > 0:
            fraction = tokens_per_expert.float() / tokens_per_expert.sum().clamp(min=1)
            mean_prob = torch.softmax(logits, dim=-1).mean(dim=0)
            losses["load_balance"] = self.aux_loss_coef * self.n_experts * (fraction * mean_prob).sum()
        if self.z_loss_coef > 0:
            losses["router_z"] = self.z_loss_coef * torch.logsumexp(logits, dim=-1).square().mean()
        return losses

    def extra_repr(self) -> str:
        parts = [f"experts={self.n_experts}", f"top_k={self.top_k}", f"hidden={self.hidden_dim}", f"impl={self.moe_impl}"]
        if self.shared is not None:
            parts.append(f"shared_hidden={self.shared.hidden_dim}")
        return ", ".join(parts)


def to_megablocks(moe: MoEFeedForward) -> dict[str, torch.Tensor]:
    """The expert weights in megablocks' dMoE GLU layout (``w1``, ``v1``, ``w2``, each ``[E·F, D]``)."""
    e, f = moe.n_experts, moe.hidden_dim
    gate_up = moe.w_gate_up.weight.detach()
    return {
        "router.layer.weight": moe.router.weight.detach(),
        "experts.mlp.w1": gate_up[:, :f].reshape(e * f, moe.dim),
        "experts.mlp.v1": gate_up[:, f:].reshape(e * f, moe.dim),
        # megablocks keeps w2 as [F, D] per expert (x·w2), ours is [D, F] per expert (x·w_downᵀ).
        "experts.mlp.w2": moe.w_down.weight.detach().transpose(1, 2).reshape(e * f, moe.dim),
    }


def from_megablocks(state: dict[str, torch.Tensor], n_experts: int) -> dict[str, torch.Tensor]:
    """Inverse of :func:`to_megablocks`: our ``router.weight``, ``w_gate_up.weight``, ``w_down.weight``."""
    w1, v1, w2 = state["experts.mlp.w1"], state["experts.mlp.v1"], state["experts.mlp.w2"]
    dim = w1.shape[1]
    gate = w1.reshape(n_experts, -1, dim)
    up = v1.reshape(n_experts, -1, dim)
    return {
        "router.weight": state["router.layer.weight"],
        "w_gate_up.weight": torch.cat([gate, up], dim=1),
        "w_down.weight": w2.reshape(n_experts, -1, dim).transpose(1, 2).contiguous(),
    }
