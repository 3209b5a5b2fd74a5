"""The learning-rate and weight-decay schedule of zoo training, in one place and Lightning-free.

Linear warmup then cosine decay (the usual recipe of the Llama-style decoders this zoo builds),
or BitNet b1.58's two-stage schedule for ternary weights (arXiv 2402.17764, "training tips": the
learning rate drops to 2/3 and weight decay to 0 at the midpoint), or a constant rate.
"""

from __future__ import annotations

import math

SCHEDULES = ("cosine", "bitnet", "constant")


def in_second_stage(step: int, total_steps: int) -> bool:
    """BitNet b1.58's second stage: from the midpoint of the run (one definition, for lr and decay)."""
    return step >= total_steps // 2


def lr_multiplier(step: int, *, warmup_steps: int, total_steps: int, min_ratio: float, schedule: str) -> float:
    """Learning-rate factor at ``step``: linear warmup, then cosine decay to ``min_ratio``.

    ``bitnet`` additionally multiplies by 2/3 in the second stage (:func:`in_second_stage`).
    """
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    factor = min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "bitnet" and in_second_stage(step, total_steps):
        factor *= 2.0 / 3.0
    return factor


def weight_decay_at(step: int, total_steps: int, weight_decay: float, schedule: str) -> float:
    """The weight decay of matrices at ``step``: 0 in BitNet's second stage, else as configured."""
    return 0.0 if schedule == "bitnet" and in_second_stage(step, total_steps) else weight_decay
