"""Chooses between an op's PyTorch reference and its Triton kernel.

``impl="auto"`` takes Triton when the op has a kernel and it can run (a CUDA tensor, or any
tensor under ``TRITON_INTERPRET=1``), otherwise the reference. ``ZOO_KERNEL=torch|triton``
forces a path for every ``auto`` call, which is how benchmarks and tests pin one.
"""
from __future__ import annotations

import importlib.util
import os

import torch

IMPLS = ("auto", "torch", "triton")


def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_can_run(x: torch.Tensor) -> bool:
    if not triton_installed():
        return False
    return x.is_cuda or (interpreting() and x.device.type == "cpu")


def resolve_impl(impl: str, x: torch.Tensor, *, op: str, has_triton: bool) -> str:
    """Returns ``"torch"`` or ``"triton"`` for this call, or raises if ``triton`` cannot run."""
    if impl not in IMPLS:
        raise ValueError(f"{op}: impl must be one of {IMPLS}, got {impl!r}")
    if impl == "auto":
        forced = os.environ.get("ZOO_KERNEL", "").strip().lower()
        if forced in ("torch", "triton"):
            impl = forced
        else:
            return "triton" if has_triton and triton_can_run(x) else "torch"
    if impl == "triton":
        if not has_triton:
            raise NotImplementedError(f"{op}: no Triton kernel exists for this op; use impl='torch'")
        if not triton_can_run(x):
            raise RuntimeError(
                f"{op}: impl='triton' needs triton installed and a CUDA tensor (or TRITON_INTERPRET=1 "
                f"for CPU tensors); got a {x.device.type} tensor"
            )
    return impl
