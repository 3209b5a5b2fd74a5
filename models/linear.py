"""The one linear layer of the zoo: BitNet b1.58 weights (arXiv 2402.17764) and Q-Sparse top-K
inputs (arXiv 2407.10969) as independent switches on ``y = x·Wᵀ``.

Forward: the input is sparsified (top-K per token, or N:M block), optionally quantised to int8
per token (fused with the mask when both are on), then multiplied by the weight, ternarised
with absmean when requested. All three steps train with straight-through gradients, so the
latent weights stay full precision and ``dX`` stays dense.

Every layer can record how many of its inputs were zero, which is what Q-Sparse's activated
parameter count (§3.6) is measured from.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

import zoo.kernels as kernels
from zoo.kernels.ternary_matmul import sparse_input_linear
from zoo.kernels.ternary_matmul import ternary_matmul as kernels_ternary_matmul
from zoo.models.config import ModelConfig, kept_channels


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


class ZeroCounting:
    """Counts the zero inputs a projection sees while ``record_input_zeros`` is on (Q-Sparse §3.6).

    Shared by the training-form projections and the packed inference form; the owner defines
    ``sparsity``, ``n_keep``, ``block_size`` and ``in_features``.
    """

    record_input_zeros = False
    input_zeros = 0
    input_numel = 0
    usage = 1.0  # mean share of tokens whose forward reads this projection (k/E for a routed expert)

    def observe(self, x: torch.Tensor) -> None:
        """Counts the zeros of an already transformed input while recording is on."""
        if self.record_input_zeros:
            self.count_nonzero(int((x != 0).sum()), x.numel())

    def count_nonzero(self, nonzero: int, numel: int) -> None:
        """Adds an input of ``numel`` values of which ``nonzero`` survived (a kernel's own count)."""
        if self.record_input_zeros:
            self.input_zeros += numel - nonzero
            self.input_numel += numel

    @property
    def nominal_input_sparsity(self) -> float:
        """Zero fraction the top-K rule alone guarantees: 1 − K/D (natural zeros come on top)."""
        width = self.block_size if self.sparsity == "block" else self.in_features
        return 1.0 - self.n_keep / width

    @property
    def input_sparsity(self) -> float | None:
        """Measured fraction of zero inputs since recording started (None if nothing recorded)."""
        return self.input_zeros / self.input_numel if self.input_numel else None


class SparseProjection(ZeroCounting, nn.Module):
    """What every zoo projection shares, whatever the shape of its weight: the BitNet / Q-Sparse
    choices, the input transform ``S(Q_x(x))`` and the counting of zero inputs (Q-Sparse §3.6).

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
        act_quant: str = "none",
        sparsity: str = "none",
        k_ratio: float = 1.0,
        block_size: int = 32,
        kernel: str = "auto",
        site: str = "",
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(*weight_shape))
        self.weight_quant, self.act_quant, self.sparsity = weight_quant, act_quant, sparsity
        self.kernel = kernel
        self.site = site  # which Q-Sparse site this projection is: attn_in, attn_out, ffn_in, ffn_down
        self.block_size = block_size
        self.n_keep = self._kept_channels(k_ratio, block_size)
        nn.init.normal_(self.weight, std=0.02)

    @staticmethod
    def choices(config: ModelConfig) -> dict:
        """The projection choices of a config, as keyword arguments of any projection."""
        return dict(
            weight_quant=config.weight_quant,
            act_quant=config.act_quant,
            sparsity=config.sparsity,
            k_ratio=config.k_ratio,
            block_size=config.block_size,
            kernel=config.kernel,
        )

    def _kept_channels(self, k_ratio: float, block_size: int) -> int:
        width = block_size if self.sparsity == "block" else self.in_features
        kept = kept_channels(k_ratio, width) if self.sparsity != "none" else width
        if not 1 <= kept <= width:
            raise ValueError(f"{type(self).__name__}: k_ratio={k_ratio} keeps {kept} of {width} channels; need at least 1")
        return kept

    def transform_input(self, x: torch.Tensor) -> torch.Tensor:
        """Sparsify then quantise the input: the ``S(Q_x(x))`` of the forward."""
        impl = self.kernel
        if self.sparsity == "topk" and self.act_quant == "int8":
            # One pass: the row max is always kept, so mask and scale come from the same row.
            return kernels.topk_int8_quantize(x, self.n_keep, impl=impl)
        if self.sparsity == "topk":
            x = kernels.topk_sparsify(x, self.n_keep, impl=impl)
        elif self.sparsity == "block":
            x = kernels.block_topk_sparsify(x, self.n_keep, self.block_size, impl=impl)
        if self.act_quant == "int8":
            x = kernels.int8_quantize(x, impl=impl)
        return x

    def extra_repr(self) -> str:
        parts = [f"in={self.in_features}", f"out={self.out_features}", f"site={self.site}"]
        if self.weight_quant != "none":
            parts.append(f"weights={self.weight_quant}")
        if self.act_quant != "none":
            parts.append(f"acts={self.act_quant}")
        if self.sparsity == "topk":
            parts.append(f"topk={self.n_keep}/{self.in_features}")
        elif self.sparsity == "block":
            parts.append(f"block={self.n_keep}:{self.block_size}")
        return ", ".join(parts)


class ZooLinear(SparseProjection):
    """``y = Q_w(W) · S(Q_x(x)) (+ b)`` with the choices of a :class:`ModelConfig`; bias only where asked (Qwen2's q/k/v)."""

    def __init__(self, in_features: int, out_features: int, *, bias: bool = False, **choices) -> None:
        super().__init__((out_features, in_features), in_features, out_features, **choices)
        # Biases stay full precision (BitNet quantises weights only) and are not counted as activated.
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    @classmethod
    def from_config(cls, config: ModelConfig, in_features: int, out_features: int, site: str, bias: bool = False) -> "ZooLinear":
        return cls(in_features, out_features, site=site, bias=bias, **cls.choices(config))

    def effective_weight(self) -> torch.Tensor:
        if self.weight_quant == "ternary":
            return frozen_cache(self, "ternary", lambda: kernels.ternary_quantize(self.weight, impl=self.kernel))
        return self.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.transform_input(x)
        self.observe(x)
        if self._sparse_decode_applies(x):
            y = sparse_input_linear(x, self._decode_weight_t())
            return y + self.bias if self.bias is not None else y
        if self.weight_quant == "ternary" and self.kernel == "triton":
            # Quantise + pack + the packed Triton matmul, STE to the latent weight. Opt-in only:
            # the kernel is parity-tested under the interpreter but not yet tuned on a GPU.
            y = kernels_ternary_matmul(x, self.weight, impl="triton")
            return y + self.bias if self.bias is not None else y
        return F.linear(x, self.effective_weight(), self.bias)

    # Decoding a few tokens on a CPU reads only the weight rows of the channels top-K kept.
    DECODE_MAX_ROWS = 16

    def _sparse_decode_applies(self, x: torch.Tensor) -> bool:
        return (
            self.sparsity != "none"
            and self.kernel == "auto"
            and x.device.type == "cpu"
            and not torch.is_grad_enabled()
            and x.numel() <= self.DECODE_MAX_ROWS * self.in_features
        )

    def _decode_weight_t(self) -> torch.Tensor:
        """``effective_weight()ᵀ`` as a contiguous ``[in, out]`` copy, rebuilt whenever the weight changes."""
        return frozen_cache(self, "decode_t", lambda: self.effective_weight().detach().t().contiguous())

    def accounting_entry(self):
        from zoo.models.accounting import BF16_BITS, SCALE_BYTES, TERNARY_PACKED_BITS, LinearAccount

        if self.weight_quant == "ternary":
            return LinearAccount(self.weight.numel(), self.site, TERNARY_PACKED_BITS, SCALE_BYTES, self.usage)
        return LinearAccount(self.weight.numel(), self.site, BF16_BITS, 0, self.usage)
