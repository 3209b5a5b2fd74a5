"""The one linear layer of the zoo: BitNet b1.58 weights (arXiv 2402.17764) and Q-Sparse top-K
inputs (arXiv 2407.10969) as independent switches on ``y = x·Wᵀ``.

Forward: the input is sparsified (top-K per token, or N:M block), optionally quantised to int8
per token (fused with the mask when both are on), then multiplied by the weight, ternarised
with absmean when requested. All three steps train with straight-through gradients, so the
latent weights stay full precision and ``dX`` stays dense.

The input rule is one module, :class:`InputTransform`, composed by every projection; it can record how many of its inputs were zero, which is what Q-Sparse's activated
parameter count (§3.6) is measured from.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

import zoo.kernels as kernels
from zoo.kernels.rule import InputRule
from zoo.kernels.ternary_matmul import latent_ternary_linear
from zoo.models.config import ModelConfig
from zoo.models.counts import BF16_BITS, SCALE_BYTES, TERNARY_PACKED_BITS, LinearAccount
from zoo.models.protocols import Accounted, ZeroCounting

IDENTITY = InputRule()  # no mask, no quantisation


def frozen_cache(module: nn.Module, tag: str, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``compute()``, reused while autograd is off and ``module.weight`` is unchanged.

    Decoding re-quantised every ternary weight at every token, which cost more than the matmul.
    The key holds the weight's storage and version counter, so an optimizer step, ``copy_`` or
    ``load_state_dict`` invalidates it; with autograd on, nothing is cached (the STE needs the graph).
    """
    weight = module.weight
    if torch.is_grad_enabled() and weight.requires_grad:
        return compute()
    key = (weight.data_ptr(), weight._version, weight.dtype, weight.device)
    cache = module.__dict__.setdefault("_frozen_cache", {})
    if tag not in cache or cache[tag][0] != key:
        cache[tag] = (key, compute())
    return cache[tag][1]


class InputTransform(ZeroCounting, nn.Module):
    """The input rule of one projection, ``Q_x(S(x))``: Q-Sparse's top-K or N:M mask ``S``, then
    BitNet's per-token int8 ``Q_x``, as one module that every projection form composes (the
    training-form :class:`ZooLinear`, the MoE expert banks and the packed inference layers), so
    they cannot drift apart. It also counts the zeros it produces while ``record_input_zeros`` is
    on, which is what Q-Sparse's activated parameter count (§3.6) is measured from.

    Holds no parameters: the state dicts of its owners do not change.
    """

    def __init__(self, in_features: int, rule: InputRule = IDENTITY, *, kernel: str = "auto") -> None:
        super().__init__()
        rule.check(in_features, "InputTransform")
        self.in_features, self.rule, self.kernel = in_features, rule, kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``Q_x(S(x))`` with straight-through gradients (the kernel layer picks the implementation)."""
        x = kernels.input_transform(x, self.rule, impl=self.kernel)
        self.observe(x)
        return x

    def observe(self, x: torch.Tensor) -> None:
        """Counts the zeros of an already transformed input while recording is on."""
        if self.record_input_zeros:
            self.count_nonzero(int((x != 0).sum()), x.numel())

    def count_nonzero(self, nonzero: int, numel: int) -> None:
        """Adds an input of ``numel`` values of which ``nonzero`` survived (a fused kernel's own count)."""
        if self.record_input_zeros:  # int(): a GPU kernel's count is a tensor, read only while recording
            self.input_zeros += numel - int(nonzero)
            self.input_numel += numel

    @property
    def nominal_input_sparsity(self) -> float:
        """Zero fraction the top-K rule alone guarantees: 1 − K/D (natural zeros come on top)."""
        return self.rule.nominal_sparsity(self.in_features)

    def describe(self) -> list[str]:
        return self.rule.describe(self.in_features)

    def extra_repr(self) -> str:
        return ", ".join(self.describe()) or "identity"


class TransformedInput:
    """A projection whose input goes through an :class:`InputTransform` (``self.input_transform``):
    its rule and its zero counts, read through the projection (what accounting and logs ask)."""

    input_transform: InputTransform
    usage = 1.0  # mean share of tokens whose forward reads this projection (k/E for a routed expert)

    @property
    def rule(self) -> InputRule:
        return self.input_transform.rule

    @property
    def sparsity(self) -> str:
        """The config's vocabulary for the mask: ``none``, ``topk`` or ``block``."""
        return self.rule.sparsity

    @property
    def act_quant(self) -> str:
        """The config's vocabulary for the inputs: ``int8`` or ``none``."""
        return "int8" if self.rule.int8 else "none"

    @property
    def nominal_input_sparsity(self) -> float:
        return self.input_transform.nominal_input_sparsity

    @property
    def input_sparsity(self) -> float | None:
        return self.input_transform.input_sparsity


class SparseProjection(TransformedInput, Accounted, nn.Module):
    """What every training-form zoo projection shares, whatever the shape of its weight: the
    BitNet / Q-Sparse choices and the :class:`InputTransform` ``S(Q_x(x))`` of its input.

    :class:`ZooLinear` (``[out, in]``) and the MoE expert banks (``[E, out, in]``) both build on it,
    so experts cannot drift from the dense projections.
    """

    def __init__(
        self,
        weight_shape: tuple[int, ...],
        in_features: int,
        out_features: int,
        *,
        weight_quant: str = "none",
        rule: InputRule = IDENTITY,
        kernel: str = "auto",
        site: str = "",
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.zeros(*weight_shape))
        self.weight_quant, self.kernel = weight_quant, kernel
        self.site = site  # which Q-Sparse site this projection is: attn_in, attn_out, ffn_in, ffn_down
        self.input_transform = InputTransform(in_features, rule, kernel=kernel)
        # zeros until zoo.models.initialization.init_weights, the one initialisation, fills it

    @staticmethod
    def choices(config: ModelConfig, in_features: int) -> dict:
        """The projection choices of a config for inputs of ``in_features``, as keyword arguments of any projection."""
        return dict(weight_quant=config.weight_quant, rule=config.input_rule(in_features), kernel=config.kernel)

    def transform_input(self, x: torch.Tensor) -> torch.Tensor:
        """Sparsify then quantise the input: the ``S(Q_x(x))`` of the forward (zeros counted)."""
        return self.input_transform(x)

    def extra_repr(self) -> str:
        parts = [f"in={self.in_features}", f"out={self.out_features}", f"site={self.site}"]
        if self.weight_quant != "none":
            parts.append(f"weights={self.weight_quant}")
        return ", ".join(parts)


class ZooLinear(SparseProjection):
    """``y = Q_w(W) · S(Q_x(x)) (+ b)`` with the choices of a :class:`ModelConfig`; bias only where asked (Qwen2's q/k/v)."""

    def __init__(self, in_features: int, out_features: int, *, bias: bool = False, **choices) -> None:
        super().__init__((out_features, in_features), in_features, out_features, **choices)
        # Biases stay full precision (BitNet quantises weights only) and are not counted as activated.
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    @classmethod
    def from_config(cls, config: ModelConfig, in_features: int, out_features: int, site: str, bias: bool = False) -> ZooLinear:
        return cls(in_features, out_features, site=site, bias=bias, **cls.choices(config, in_features))

    def effective_weight(self) -> torch.Tensor:
        if self.weight_quant == "ternary":
            return frozen_cache(self, "ternary", lambda: kernels.ternary_quantize(self.weight, impl=self.kernel))
        return self.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_transform(x)
        if self.weight_quant == "ternary":
            return latent_ternary_linear(x, self.weight, self.bias, impl=self.kernel, quantized=self.effective_weight)
        return F.linear(x, self.weight, self.bias)

    def accounting_entry(self) -> LinearAccount:
        if self.weight_quant == "ternary":
            return LinearAccount(self.weight.numel(), self.site, TERNARY_PACKED_BITS, SCALE_BYTES, self.usage)
        return LinearAccount(self.weight.numel(), self.site, BF16_BITS, 0, self.usage)
