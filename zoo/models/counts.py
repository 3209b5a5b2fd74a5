"""Parameter counts and weight bytes a token, from a :class:`ModelConfig` by arithmetic alone (no
torch, no module built): what ``zoo list`` prints in well under a second.

The quantities are those of :func:`zoo.models.accounting.account` with the nominal input sparsity
(activated parameters after Q-Sparse, arXiv 2407.10969, §3.6: ``N_a = Σ (1 − s) · params · usage``
over the non-embedding projections; bytes read a token at 2 bits for packed BitNet b1.58 ternary
weights, arXiv 2402.17764, at 16 bits otherwise, plus the LM head and one embedding row). A test
holds the two equal for every registered entry, so a new layer that forgets this file fails there.
"""

from __future__ import annotations

from dataclasses import dataclass

from zoo.models.config import ModelConfig

BF16_BITS = 16
TERNARY_PACKED_BITS = 2
SCALE_BYTES = 4  # one fp32 absmean scale per ternary tensor (or per expert)


@dataclass(frozen=True)
class LinearAccount:
    """What a projection contributes to the count: its weights, how often it is used, how it is stored."""

    params: int
    site: str  # attn_in | attn_out | ffn_in | ffn_down | router | ...
    bits_per_weight: int
    scale_bytes: int = 0
    usage: float = 1.0  # mean fraction of a token's forward that reads this weight (k/E for routed experts)


def projection(config: ModelConfig, in_features: int, out_features: int, site: str, copies: int = 1, usage: float = 1.0):
    """(account, nominal input sparsity) of ``copies`` stacked projections (an expert bank when > 1)."""
    params = copies * in_features * out_features
    sparsity = config.input_rule(in_features).nominal_sparsity(in_features)
    if config.weight_quant == "ternary":
        return LinearAccount(params, site, TERNARY_PACKED_BITS, SCALE_BYTES * copies, usage), sparsity
    return LinearAccount(params, site, BF16_BITS, 0, usage), sparsity


def gated_ffn(config: ModelConfig, hidden: int, copies: int = 1, usage: float = 1.0):
    """The gate/up and down projections of a gated FFN of width ``hidden`` (or of ``copies`` experts)."""
    return [
        projection(config, config.dim, 2 * hidden, "ffn_in", copies, usage),
        projection(config, hidden, config.dim, "ffn_down", copies, usage),
    ]


def layer_projections(config: ModelConfig) -> list[tuple[LinearAccount, float]]:
    """Every accounted weight of one block, with its nominal input sparsity."""
    qkv_out = (config.n_heads + 2 * config.kv_heads) * config.head_dim
    found = [projection(config, config.dim, qkv_out, "attn_in"), projection(config, config.dim, config.dim, "attn_out")]
    if not config.is_moe:
        return found + gated_ffn(config, config.ffn_dim)
    router = (LinearAccount(config.dim * config.n_experts, "router", BF16_BITS), 0.0)  # dense, full precision
    experts = gated_ffn(config, config.hidden_dim, config.n_experts, config.top_k / config.n_experts)
    shared = gated_ffn(config, config.n_shared_experts * config.hidden_dim) if config.n_shared_experts else []
    return found + [router] + experts + shared


def layer_other_params(config: ModelConfig) -> int:
    """A block's parameters outside the projections' weights: norms, sub-norms, q/k/v biases."""
    count = 2 * config.dim  # attention and FFN norms
    if config.qkv_bias:
        count += (config.n_heads + 2 * config.kv_heads) * config.head_dim
    if config.has_sub_norm:
        count += config.dim  # before the output projection
        if config.is_moe:
            count += config.n_experts * config.hidden_dim
            count += config.n_shared_experts * config.hidden_dim if config.n_shared_experts else 0
        else:
            count += config.ffn_dim
    return count


@dataclass(frozen=True)
class ConfigCounts:
    total_params: int
    non_embedding_params: int
    activated_params: float
    weight_bytes_per_token: float


def config_counts(config: ModelConfig) -> ConfigCounts:
    """What ``account(Decoder.on_meta(config))`` gives, computed from the config's numbers."""
    projections = layer_projections(config)
    per_layer = sum(entry.params for entry, _ in projections) + layer_other_params(config)
    non_embedding = config.n_layers * per_layer + config.dim  # + the final norm
    table = config.vocab_size * config.dim
    embedding = table if config.tie_embeddings else 2 * table
    activated = config.n_layers * sum((1 - s) * e.params * e.usage for e, s in projections)
    weight_bytes = config.n_layers * sum(
        (1 - s) * e.params * e.usage * e.bits_per_weight / 8 + e.scale_bytes * e.usage for e, s in projections
    )
    weight_bytes += (table + config.dim) * BF16_BITS / 8  # the LM head and one embedding row
    return ConfigCounts(non_embedding + embedding, non_embedding, activated, weight_bytes)
