"""The machine a measurement was taken on, and the one way the zoo fixes torch's CPU thread count.

Every benchmark record and every release's metrics name the device (CPU model and thread count,
or the GPU), the torch and triton versions, the git commit and the date, as benchmarks.md asks:
a speed or a score is never read without the machine that produced it.
"""

from __future__ import annotations

import datetime as dt
import platform
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

SOURCE_ROOT = Path(__file__).resolve().parents[1]  # a checkout's root (git_commit asks git there)


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
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=SOURCE_ROOT, timeout=5)
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
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
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
