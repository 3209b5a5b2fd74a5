"""The input rule of a projection, ``Q_x(S(x))``: Q-Sparse's (arXiv 2407.10969) per-token top-K or
N:M block mask ``S``, then BitNet b1.58's (arXiv 2402.17764) per-token absmax int8 ``Q_x``.

One frozen value carries it from the model config (``ModelConfig.input_rule(width)``) through the
training-form input transform, every kernel entry point and the inference form's prepared
projections down to C, where ``zoo_input_rule`` in ``compiled/zoo_kernels.h`` has the same four
fields; it replaces a loose ``(sparsity, n_keep, block_size, int8)`` tuple that was passed by hand
through a dozen signatures under three names for its last field.
"""

from __future__ import annotations

from dataclasses import dataclass

SPARSITY_MODES = ("none", "topk", "block")


@dataclass(frozen=True)
class InputRule:
    """Which input channels a projection keeps, and whether they become int8.

    ``sparsity``: ``none``, ``topk`` (``n_keep`` of each row) or ``block`` (``n_keep`` of every
    ``block_size`` consecutive channels, N:M); ``int8``: per-token absmax fake quantisation after
    the mask. The default is the identity.
    """

    sparsity: str = "none"
    n_keep: int = 0
    block_size: int = 1
    int8: bool = False

    def __post_init__(self) -> None:
        if self.sparsity not in SPARSITY_MODES:
            raise ValueError(f"input rule: sparsity must be none, topk or block, got {self.sparsity!r}")
        if self.sparsity == "block" and self.block_size < 1:
            raise ValueError(f"input rule: block_size must be >= 1 for block sparsity, got {self.block_size}")
        if self.sparsity != "none" and self.n_keep < 1:
            raise ValueError(f"input rule: {self.sparsity} sparsity keeps at least 1 channel, got n_keep={self.n_keep}")
        if self.sparsity == "block" and self.n_keep > self.block_size:
            raise ValueError(f"input rule: keeps {self.n_keep} of every {self.block_size} channels; at most {self.block_size}")

    @property
    def identity(self) -> bool:
        """Nothing masked and nothing quantised: the input passes through."""
        return self.sparsity == "none" and not self.int8

    def width(self, in_features: int) -> int:
        """The channels one top-K choice ranges over: the row, or one block of N:M."""
        return self.block_size if self.sparsity == "block" else in_features

    def check(self, in_features: int, op: str) -> None:
        """Raises naming ``op`` where the rule cannot apply to rows of ``in_features`` channels."""
        if self.sparsity == "block" and in_features % self.block_size:
            raise ValueError(f"{op}: block_size={self.block_size} must divide the {in_features} input channels")
        if self.sparsity == "topk" and self.n_keep > in_features:
            raise ValueError(f"{op}: n_keep must be in [1, {in_features}], got {self.n_keep}")

    def nominal_sparsity(self, in_features: int) -> float:
        """The zero fraction the mask alone guarantees: 1 − K/D (natural zeros come on top)."""
        return 0.0 if self.sparsity == "none" else 1.0 - self.n_keep / self.width(in_features)

    def describe(self, in_features: int) -> list[str]:
        parts = ["acts=int8"] if self.int8 else []
        if self.sparsity == "topk":
            parts.append(f"topk={self.n_keep}/{in_features}")
        elif self.sparsity == "block":
            parts.append(f"block={self.n_keep}:{self.block_size}")
        return parts
