"""The interfaces the model code relies on, declared rather than probed with ``hasattr``.

Three services cross module boundaries inside ``zoo.models`` and above it:

- **accounting** (Q-Sparse, arXiv 2407.10969, §3.6: activated parameters): every projection-like
  module says what it contributes, as a :class:`LinearAccount` (:class:`Accounted`);
- **zero counting**: the input transform of every projection counts the zeros it produces while
  recording is on, which is what the activated count is measured from (:class:`ZeroCounting`);
- **expert routing** (dropless MoE, MegaBlocks, arXiv 2211.15841; DeepSeek-V3's bias balancing,
  arXiv 2412.19437): a routed FFN leaves its auxiliary losses and token counts of the last forward
  and takes one balancing step per optimizer step (:class:`ExpertRouting`).

A class takes part by subclassing the interface; callers test ``isinstance``, so a misspelled or
missing method is an error at class creation (abstract methods) instead of a module silently left
out of a count.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from zoo.models.counts import LinearAccount  # with the count arithmetic, which has no torch


class Accounted(ABC):
    """A module whose weight counts towards total, activated parameters and bytes per token.
    A projection with an input rule overrides the two sparsities; a router has none."""

    nominal_input_sparsity = 0.0  # the zero fraction its top-K rule alone guarantees
    input_sparsity: float | None = None  # measured while recording, None before

    @abstractmethod
    def accounting_entry(self) -> LinearAccount: ...


class ZeroCounting:  # noqa: B024 - no abstract method: the counting itself is the shared behaviour
    """Counts the zeros of the inputs it produces while ``record_input_zeros`` is on."""

    record_input_zeros = False
    input_zeros = 0
    input_numel = 0

    def start_recording(self) -> None:
        self.record_input_zeros, self.input_zeros, self.input_numel = True, 0, 0

    def stop_recording(self) -> None:
        self.record_input_zeros = False

    @property
    def input_sparsity(self) -> float | None:
        """Measured fraction of zero inputs since recording started (None if nothing recorded)."""
        return self.input_zeros / self.input_numel if self.input_numel else None


class ExpertRouting(ABC):
    """A routed FFN: what its last forward left for the training loop and the logs."""

    last_aux_losses: dict[str, torch.Tensor]
    tokens_per_expert: torch.Tensor | None

    @abstractmethod
    def update_selection_bias(self) -> None:
        """One step of auxiliary-loss-free balancing on the loads gathered since the last one."""
