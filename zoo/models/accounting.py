"""Parameter and weight-traffic accounting for sparse, ternary and routed models.

Activated parameters follow Q-Sparse (arXiv 2407.10969, §3.6):
``N_a = Σ_linear (1 − s_in) · params(linear)`` over non-embedding linear weights, where ``s_in``
is the measured fraction of zero inputs of that projection (embeddings and the LM head are
excluded). Routed experts (MegaBlocks-style MoE) additionally count with the fraction of tokens
routed to them, so only k of E experts are active per token.

Weight bytes read per token count what a decode step must read: every activated weight at
16 bits (bf16) or 2 bits (packed BitNet b1.58 ternary, arXiv 2402.17764) plus its scales, the
LM head at 16 bits, and one embedding row.

Everything works on a model built on the meta device, so a Mistral-7B-shaped config is
accounted without allocating its weights.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from torch import nn

from zoo.models.counts import BF16_BITS, LinearAccount
from zoo.models.protocols import Accounted, ZeroCounting


@dataclass(frozen=True)
class Accounting:
    total_params: int
    non_embedding_params: int
    activated_params: float
    weight_bytes_per_token: float
    input_sparsity: dict[str, float]  # per site, parameter-weighted over its projections
    basis: str  # "measured" on data, or "nominal" from k_ratio

    def to_dict(self) -> dict:
        return asdict(self)


def accounted_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module, LinearAccount]]:
    """Every :class:`~zoo.models.protocols.Accounted` module (projections, expert banks, routers)."""
    for name, module in model.named_modules():
        if isinstance(module, Accounted):
            yield name, module, module.accounting_entry()


def count_params(model: nn.Module) -> tuple[int, int]:
    """(total, non-embedding) parameter counts; a tied LM head is counted once, an untied one is embedding."""
    seen: set[int] = set()
    total = embedding = 0
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
        if name.startswith(("tok_embeddings.", "lm_head.")):
            embedding += param.numel()
    return total, total - embedding


def nominal_input_sparsity(model: nn.Module) -> dict[str, float]:
    """Per-module zero fraction implied by the configured top-K alone (exactly 1 − K/D per row)."""
    return {name: m.nominal_input_sparsity for name, m, _ in accounted_modules(model)}


@contextmanager
def recording_input_zeros(model: nn.Module) -> Iterator[None]:
    """Within the block, every projection's input transform counts the zeros it produces."""
    modules = [m for m in model.modules() if isinstance(m, ZeroCounting)]
    for module in modules:
        module.start_recording()
    try:
        yield
    finally:
        for module in modules:
            module.stop_recording()


def recorded_input_sparsity(model: nn.Module) -> dict[str, float]:
    """Per accounted module, the zero fraction its input transform recorded (0 where none was)."""
    return {name: m.input_sparsity or 0.0 for name, m, _ in accounted_modules(model)}


@torch.no_grad()
def measure_input_sparsity(model: nn.Module, batches: Iterable[torch.Tensor]) -> dict[str, float]:
    """Per-module measured fraction of zero inputs over ``batches`` of token ids (``[B, T]``)."""
    was_training = model.training
    model.eval()
    try:
        with recording_input_zeros(model):
            for tokens in batches:
                model(tokens)
            return recorded_input_sparsity(model)
    finally:
        model.train(was_training)


def _lm_head_bytes(model: nn.Module) -> float:
    head = getattr(model, "lm_head", None)
    embed = getattr(model, "tok_embeddings", None)
    head_bytes = head.weight.numel() * BF16_BITS / 8 if head is not None else 0.0
    row_bytes = embed.weight.shape[1] * BF16_BITS / 8 if embed is not None else 0.0
    return head_bytes + row_bytes


def account(
    model: nn.Module,
    sparsity: Mapping[str, float] | None = None,
    *,
    batches: Iterable[torch.Tensor] | None = None,
) -> Accounting:
    """Counts for ``model``; input sparsity measured on ``batches``, given per module/site, or nominal.

    ``sparsity`` keys may be module names (``layers.0.attn.wqkv``) or sites (``attn_in``,
    ``attn_out``, ``ffn_in``, ``ffn_down``); a module name wins over its site.
    """
    if batches is not None:
        per_module, basis = measure_input_sparsity(model, batches), "measured"
    elif sparsity is not None:
        per_module, basis = {}, "given"
    else:
        per_module, basis = nominal_input_sparsity(model), "nominal"
    sparsity = dict(sparsity or {})

    total, non_embedding = count_params(model)
    activated = weight_bytes = 0.0
    site_zero_params: dict[str, float] = {}
    site_params: dict[str, float] = {}
    for name, _, entry in accounted_modules(model):
        s = per_module.get(name, sparsity.get(name, sparsity.get(entry.site, 0.0)))
        if not 0.0 <= s <= 1.0:
            raise ValueError(f"input sparsity of {name} ({entry.site}) must be in [0, 1], got {s}")
        used = entry.params * entry.usage
        activated += (1.0 - s) * used
        weight_bytes += (1.0 - s) * used * entry.bits_per_weight / 8 + entry.scale_bytes * entry.usage
        site_zero_params[entry.site] = site_zero_params.get(entry.site, 0.0) + s * entry.params
        site_params[entry.site] = site_params.get(entry.site, 0.0) + entry.params
    weight_bytes += _lm_head_bytes(model)
    by_site = {site: site_zero_params[site] / site_params[site] for site in site_params if site_params[site]}
    return Accounting(total, non_embedding, activated, weight_bytes, by_site, basis)
