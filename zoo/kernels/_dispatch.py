"""Chooses between an op's PyTorch reference, its Triton kernel and its compiled CPU kernel.

One vocabulary for every op: ``torch`` (the reference), ``triton``, ``cpu`` (C compiled on first
use, see ``zoo.kernels.compiled``) and ``auto``. ``auto`` takes Triton when the op has a
kernel and it can run (a CUDA tensor, or any tensor under ``TRITON_INTERPRET=1``), else the
compiled CPU kernel for a CPU tensor when the op has one and it built, else the reference.
``ZOO_KERNEL=torch|triton|cpu`` forces a path for every ``auto`` call, which is how benchmarks
and tests pin one. Asking for a path an op lacks, or one that cannot run, raises.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

IMPLS = ("auto", "torch", "triton", "cpu")


@functools.cache
def triton_installed() -> bool:
    # Cached: find_spec searches sys.path on every call, and decode asks once per op per token.
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_can_run(x: torch.Tensor) -> bool:
    if not triton_installed():
        return False
    return x.is_cuda or (interpreting() and x.device.type == "cpu")


def cpu_kernel_can_run(x: torch.Tensor) -> bool:
    from zoo.kernels import compiled

    return x.device.type == "cpu" and compiled.available()


def resolve_impl(impl: str, x: torch.Tensor, *, op: str, has_triton: bool, has_cpu: bool = False) -> str:
    """Returns ``"torch"``, ``"triton"`` or ``"cpu"`` for this call, or raises if the asked path cannot run."""
    if impl not in IMPLS:
        raise ValueError(f"{op}: impl must be one of {IMPLS}, got {impl!r}")
    if impl == "auto":
        forced = os.environ.get("ZOO_KERNEL", "").strip().lower()
        if forced in ("torch", "triton", "cpu") and (forced != "cpu" or has_cpu):
            impl = forced
        elif has_triton and triton_can_run(x):
            return "triton"
        else:
            return "cpu" if has_cpu and cpu_kernel_can_run(x) else "torch"
    if impl == "cpu":
        if not has_cpu:
            raise NotImplementedError(f"{op}: no compiled CPU kernel exists for this op; use impl='torch'")
        if not cpu_kernel_can_run(x):
            raise RuntimeError(f"{op}: impl='cpu' needs a CPU tensor and the compiled kernel (a C compiler; ZOO_CPU_KERNELS unset)")
        return impl
    if impl == "triton":
        if not has_triton:
            raise NotImplementedError(f"{op}: no Triton kernel exists for this op; use impl='torch'")
        if not triton_can_run(x):
            raise RuntimeError(
                f"{op}: impl='triton' needs triton installed and a CUDA tensor (or TRITON_INTERPRET=1 "
                f"for CPU tensors); got a {x.device.type} tensor"
            )
    return impl
