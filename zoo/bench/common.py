"""Shared plumbing of the benchmarks: timing, the environment of a run, and JSON-lines output.

Every record names the device, the torch/triton versions, the git commit and the date, and holds
the baseline's time measured in the same run, so a speedup is never compared across machines.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

LEADERBOARD_DIR = Path(__file__).resolve().parents[2] / "leaderboard"  # a source checkout's committed results


def default_output(filename: str) -> Path:
    """Where a run writes when the user names no ``--out``: the working directory, never the
    installed package or the source tree (results are committed by copying them on purpose)."""
    return Path.cwd() / filename


def device_name(device: str | torch.device = "cpu") -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu} ({torch.get_num_threads()} threads)"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=LEADERBOARD_DIR.parent, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment(device: str | torch.device = "cpu") -> dict[str, Any]:
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return {
        "device": device_name(device),
        "torch": torch.__version__,
        "triton": triton_version,
        "commit": git_commit(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


@contextmanager
def pinned_threads(threads: int | None) -> Iterator[None]:
    """torch's CPU thread count fixed to ``threads`` inside the block (unchanged for None or 0),
    restored after: the one thread pinner of every benchmark and of the leaderboard."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


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
