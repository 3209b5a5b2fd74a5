"""One configuration for every zoo architecture: a Llama-style decoder whose projections may be
sparse (Q-Sparse, arXiv 2407.10969), ternary (BitNet b1.58, arXiv 2402.17764) and whose FFN may be
a dropless mixture of experts (MegaBlocks, Gale et al. 2022).

Every field is validated in ``__post_init__``; an invalid value raises ``ValueError`` naming the
field and what is allowed, so a typo in a YAML file fails before any weight is allocated.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from zoo.kernels.rule import InputRule

WEIGHT_QUANTS = ("none", "ternary")
ACT_QUANTS = ("none", "int8")
SPARSITIES = ("none", "topk", "block")
FFN_ACTS = ("swiglu", "relu2")
KERNELS = ("auto", "torch", "triton")
MOE_IMPLS = ("auto", "reference", "grouped_mm", "megablocks", "triton")
ROPE_SCALINGS = ("none", "llama3")


def kept_channels(k_ratio: float, width: int) -> int:
    """Q-Sparse's K for a site of ``width`` inputs: floor(k_ratio · width)."""
    # The tiny epsilon keeps e.g. 0.7 * 10 from flooring to 6 through binary rounding.
    return int(math.floor(k_ratio * width + 1e-9))


def _fail(field: str, allowed: str, value: Any) -> None:
    raise ValueError(f"ModelConfig.{field} must be {allowed}, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # True is an int to Python, not to a config


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# What each annotation admits; checked before any range so that ``rope_theta: abc`` or
# ``k_ratio: true`` in a YAML file is named, not met later as a TypeError or read as 1.0.
_TYPE_CHECKS = {
    "int": (_is_int, "an integer"),
    "float": (_is_number, "a number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "str": (lambda v: isinstance(v, str), "a string"),
}


@dataclass
class ModelConfig:
    """Hyper-parameters of the zoo decoder. Sizes count channels; ratios are kept fractions."""

    vocab_size: int = 256
    dim: int = 256
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int | None = None  # None: same as n_heads (plain multi-head attention)
    ffn_dim: int = 768  # hidden width of the gated FFN (and of each expert unless expert_ffn_dim)
    max_seq_len: int = 256
    rope_theta: float = 10000.0
    # Llama 3's RoPE scaling ("llama3"): low frequencies divided by rope_factor, high ones kept,
    # a smooth blend between; the wavelength bounds come from the original context length.
    rope_scaling: str = "none"  # none | llama3
    rope_factor: float = 8.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_seq_len: int = 8192
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    qkv_bias: bool = False  # biases on q, k, v (Qwen2); every other projection has none
    init_std: float = 0.02

    # Projections: which of BitNet's and Q-Sparse's choices every non-embedding linear applies.
    weight_quant: str = "none"  # none | ternary (absmean, STE)
    act_quant: str = "none"  # none | int8 (per-token absmax, STE)
    sparsity: str = "none"  # none | topk (per token) | block (N:M)
    k_ratio: float = 1.0  # kept fraction of input channels, in (0, 1]
    block_size: int = 32  # M of N:M block sparsity; N = floor(k_ratio * M)
    ffn_act: str = "swiglu"  # swiglu | relu2 (squared-ReLU GLU, Q-Sparse's choice from scratch)
    sub_norm: bool | None = None  # BitNet sub-norms before o_proj and down_proj; None: on iff ternary
    kernel: str = "auto"  # auto | torch | triton; never changes parameters or state-dict keys

    # Mixture of experts: n_experts = 0 keeps a dense FFN.
    n_experts: int = 0
    top_k: int = 2
    n_shared_experts: int = 0
    expert_ffn_dim: int | None = None
    renormalize_router: bool = True
    moe_impl: str = "auto"
    aux_loss_coef: float = 0.01
    z_loss_coef: float = 0.001
    # DeepSeek-V3's auxiliary-loss-free balancing: the selection bias moves by this much per optimizer step (0: off)
    balance_bias_rate: float = 0.0

    def __post_init__(self) -> None:
        for spec in dataclasses.fields(self):
            annotation = str(spec.type)  # a string ("int", "int | None"): the module defers annotations
            optional = annotation.endswith(" | None")
            check, allowed = _TYPE_CHECKS[annotation.removesuffix(" | None")]
            value = getattr(self, spec.name)
            if not (check(value) or (optional and value is None)):
                _fail(spec.name, allowed + (" or null" if optional else ""), value)
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "ffn_dim", "max_seq_len", "block_size"):
            value = getattr(self, name)
            if value < 1:
                _fail(name, "a positive integer", value)
        if self.n_kv_heads is not None and self.n_kv_heads < 1:
            _fail("n_kv_heads", "a positive integer or null (null: same as n_heads)", self.n_kv_heads)
        if self.dim % self.n_heads:
            _fail("dim", f"divisible by n_heads={self.n_heads}", self.dim)
        if self.n_heads % self.kv_heads:
            _fail("n_kv_heads", f"a divisor of n_heads={self.n_heads}", self.n_kv_heads)
        if (self.dim // self.n_heads) % 2:
            _fail("dim", "such that dim/n_heads is even (RoPE rotates channel pairs)", self.dim)
        for name in ("rope_theta", "norm_eps", "init_std", "rope_factor", "rope_low_freq_factor", "rope_original_max_seq_len"):
            if not getattr(self, name) > 0:
                _fail(name, "> 0", getattr(self, name))
        if self.rope_high_freq_factor <= self.rope_low_freq_factor:
            _fail("rope_high_freq_factor", f"> rope_low_freq_factor={self.rope_low_freq_factor}", self.rope_high_freq_factor)
        for name, allowed in (
            ("weight_quant", WEIGHT_QUANTS),
            ("act_quant", ACT_QUANTS),
            ("sparsity", SPARSITIES),
            ("ffn_act", FFN_ACTS),
            ("kernel", KERNELS),
            ("moe_impl", MOE_IMPLS),
            ("rope_scaling", ROPE_SCALINGS),
        ):
            if getattr(self, name) not in allowed:
                _fail(name, f"one of {allowed}", getattr(self, name))
        if not 0.0 < self.k_ratio <= 1.0:
            _fail("k_ratio", "in (0, 1]", self.k_ratio)
        self._validate_moe()
        self._validate_sparsity()

    def _validate_moe(self) -> None:
        if self.n_experts < 0:
            _fail("n_experts", "an integer >= 0 (0 means a dense FFN)", self.n_experts)
        if self.n_experts:
            if not 1 <= self.top_k <= self.n_experts:
                _fail("top_k", f"an integer in [1, n_experts={self.n_experts}]", self.top_k)
            if self.expert_ffn_dim is not None and self.expert_ffn_dim < 1:
                _fail("expert_ffn_dim", "a positive integer or null", self.expert_ffn_dim)
        if self.n_shared_experts < 0:
            _fail("n_shared_experts", "an integer >= 0", self.n_shared_experts)
        if self.n_shared_experts and not self.n_experts:
            _fail("n_shared_experts", "0 when n_experts is 0", self.n_shared_experts)
        for name in ("aux_loss_coef", "z_loss_coef", "balance_bias_rate"):
            if getattr(self, name) < 0:
                _fail(name, ">= 0", getattr(self, name))
        if self.balance_bias_rate and not self.n_experts:
            _fail("balance_bias_rate", "0 when n_experts is 0 (it balances experts)", self.balance_bias_rate)

    def _validate_sparsity(self) -> None:
        if self.sparsity == "block":
            if self.n_kept(self.block_size) < 1:
                _fail("k_ratio", f"at least 1/block_size={self.block_size} for block sparsity", self.k_ratio)
            for name in ("dim", "ffn_dim", "expert_ffn_dim"):
                width = getattr(self, name)
                if width is not None and width % self.block_size:
                    _fail(name, f"divisible by block_size={self.block_size} for block sparsity", width)
        elif self.sparsity == "topk":
            narrowest = min(self.dim, self.hidden_dim)
            if self.n_kept(narrowest) < 1:
                _fail("k_ratio", f"large enough to keep one of {narrowest} channels", self.k_ratio)

    # Derived values ----------------------------------------------------------------------------
    # Fields left at None are resolved here, at every read, never written back: a config built
    # from another one's values (a LightningCLI default, ``replace``, a YAML merged over a
    # default instance) re-derives them from the final values instead of inheriting a stale one.
    @property
    def kv_heads(self) -> int:
        """Key/value heads: ``n_kv_heads``, or ``n_heads`` when it is null."""
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def has_sub_norm(self) -> bool:
        """BitNet sub-norms: ``sub_norm``, or on iff the weights are ternary when it is null."""
        return self.weight_quant == "ternary" if self.sub_norm is None else self.sub_norm

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def hidden_dim(self) -> int:
        """Width of the FFN hidden layer that feeds the down projection (per expert for MoE)."""
        return (self.expert_ffn_dim or self.ffn_dim) if self.n_experts else self.ffn_dim

    @property
    def is_moe(self) -> bool:
        return self.n_experts > 0

    def n_kept(self, width: int) -> int:
        """Channels a top-K site of ``width`` inputs keeps: floor(k_ratio · width)."""
        return kept_channels(self.k_ratio, width)

    def input_rule(self, in_features: int) -> InputRule:
        """The input rule of a projection with ``in_features`` inputs (Q-Sparse's top-K or N:M mask,
        then BitNet's int8 when ``act_quant`` asks): the one value every projection form, kernel and
        the compiled decode step take."""
        if self.sparsity == "none":
            return InputRule(int8=self.act_quant == "int8")
        block = self.block_size if self.sparsity == "block" else 1
        n_keep = self.n_kept(self.block_size if self.sparsity == "block" else in_features)
        if n_keep < 1:
            _fail("k_ratio", f"large enough to keep one of {in_features} channels", self.k_ratio)
        return InputRule(self.sparsity, n_keep, block, self.act_quant == "int8")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def resolved(self) -> ModelConfig:
        """A copy with the null fields written out (for files read by other tools: releases, exports)."""
        return dataclasses.replace(self, n_kv_heads=self.kv_heads, sub_norm=self.has_sub_norm)

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, source: str = "config") -> ModelConfig:
        """Strict construction: an unknown key raises ``ValueError`` naming it and ``source``."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{source}: unknown ModelConfig field(s) {unknown}; known fields: {sorted(known)}")
        try:
            return cls(**values)
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from None

    def replace(self, **changes: Any) -> ModelConfig:
        return ModelConfig.from_dict({**self.to_dict(), **changes}, source="overrides")
