"""Shared plumbing of the benchmarks: timing, the environment of a run, and JSON-lines output.

Every record names the device, the torch/triton versions, the git commit and the date, and holds
the baseline's time measured in the same run, so a speedup is never compared across machines.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from zoo.machine import device_name, environment, git_commit, pinned_threads

__all__ = [
    "BenchOptions",
    "default_output",
    "device_name",
    "environment",
    "git_commit",
    "interleaved_median_times",
    "median_time",
    "pinned_threads",
    "record",
    "write_jsonl",
]


def default_output(filename: str) -> Path:
    """Where a run writes when the user names no ``--out``: the working directory, never the
    installed package or the source tree (results are committed by copying them on purpose)."""
    return Path.cwd() / filename


@dataclass(frozen=True)
class BenchOptions:
    """The options every ``zoo bench`` benchmark is run with (one object, checked once).

    Each benchmark module declares the fields it honours in ``OPTIONS``; :meth:`arguments` hands
    it those and refuses, in one line, any other field the user set, so ``zoo bench moe --config
    x`` is an error instead of silently ignored.
    """

    device: str = "cpu"
    quick: bool = False
    configs: tuple[str, ...] | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {self.threads}")

    def arguments(self, bench: str, supported: Iterable[str]) -> dict[str, Any]:
        """Keyword arguments of ``bench``'s ``run`` (fields left at their defaults are not passed)."""
        defaults = BenchOptions()
        chosen = {
            name: getattr(self, name)
            for name in ("device", "quick", "configs", "threads")
            if getattr(self, name) != getattr(defaults, name)
        }
        refused = sorted(set(chosen) - set(supported))
        if refused:
            flags = ", ".join("--" + {"configs": "config"}.get(name, name) for name in refused)
            raise ValueError(f"{flags} does not apply to the {bench} benchmark")
        if "configs" in chosen:
            chosen["configs"] = list(chosen["configs"])
        return chosen


def median_time(fn: Callable[[], Any], *, warmup: int = 3, repeats: int = 15, device: str | torch.device = "cpu") -> float:
    """Median wall time of ``fn()`` in seconds (CUDA-synchronised on GPUs)."""
    return interleaved_median_times({"fn": fn}, warmup=warmup, repeats=repeats, device=device)["fn"]


def interleaved_median_times(
    candidates: dict[str, Callable[[], Any]], *, warmup: int = 1, repeats: int = 5, device: str | torch.device = "cpu"
) -> dict[str, float]:
    """Median wall time of each candidate, timed round by round (A B C, A B C, ...) so that drift
    of the machine (another job, clocks) hits every candidate alike, as benchmarks.md asks."""
    cuda = torch.device(device).type == "cuda"
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if cuda:
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def record(
    op: str, *, time_s: float, baseline_s: float, baseline: str, device: str | torch.device = "cpu", **fields: Any
) -> dict[str, Any]:
    """One measurement: ``speedup = baseline_s / time_s`` plus the environment."""
    return {
        "op": op,
        **fields,
        "time_s": time_s,
        "baseline": baseline,
        "baseline_time_s": baseline_s,
        "speedup": baseline_s / time_s if time_s > 0 else float("inf"),
        **environment(device),
    }


def write_jsonl(records: Iterable[dict[str, Any]], path: str | Path) -> Path:
    """Appends records to a JSON-lines file and returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        for item in records:
            handle.write(json.dumps(item, sort_keys=True) + "\n")
    return path
