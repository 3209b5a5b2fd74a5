"""The compiled CPU kernel of :mod:`zoo.kernels.ternary_matmul`: ``ternary_gemv.c`` built with the
system C compiler on first use and loaded through ctypes.

Why this way: a compiled extension built at install time needs torch in pip's isolated build
environment, and a build requirement on torch makes pip download another (multi-GB CUDA) torch.
A plain C ABI needs no torch headers at all: it is compiled here, once per source version and
compiler, into the cache (``$ZOO_HOME/kernels``), with runtime CPU-feature dispatch (AVX2 or
scalar) inside the library. Without a compiler, or if the build fails, :func:`library` returns
None after a one-line notice and callers keep the torch reference path.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("ternary_gemv.c")
FLAGS = ("-O3", "-shared", "-fPIC", "-fopenmp", "-std=c11", "-lm")
ISA_NAMES = {1: "scalar", 2: "avx2"}

_library: ctypes.CDLL | None = None
_tried = False


def _cache_dir() -> Path:
    # The rule of zoo.paths.zoo_home, restated: zoo.kernels imports nothing above it.
    explicit = os.environ.get("ZOO_HOME")
    root = Path(explicit).expanduser() if explicit else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "moezoo"
    return root / "kernels"


def _build(target: Path, compiler: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        partial = Path(tmp) / target.name
        result = subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", str(partial)], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(" ".join(result.stderr.split())[:300])
        os.replace(partial, target)  # atomic: a concurrent process sees the old name or the whole file


def library() -> ctypes.CDLL | None:
    """The loaded kernel library, building it on first use; None where it cannot be built."""
    global _library, _tried
    if _tried:
        return _library
    _tried = True
    if os.environ.get("ZOO_CPU_KERNELS", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        print("moezoo: no C compiler found; packed ternary layers use the slower torch path", file=sys.stderr)
        return None
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join((compiler, *FLAGS)).encode()).hexdigest()[:16]
    target = _cache_dir() / f"ternary_gemv-{digest}.so"
    try:
        if not target.is_file():
            _build(target, compiler)
        lib = ctypes.CDLL(str(target))
    except (OSError, RuntimeError) as error:
        print(f"moezoo: could not build the CPU kernel ({error}); using the torch path", file=sys.stderr)
        return None
    lib.zoo_ternary_gemv.restype = None
    lib.zoo_ternary_gemv.argtypes = [
        ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p,
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
    ]
    lib.zoo_ternary_gemv_isa.restype = ctypes.c_int
    lib.zoo_sparse_linear.restype = ctypes.c_int64
    lib.zoo_sparse_linear.argtypes = [
        ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int,
        ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, *([ctypes.c_void_p] * 4), ctypes.c_int, ctypes.c_int,
        ctypes.c_void_p, ctypes.c_float, ctypes.c_void_p,
    ]
    lib.zoo_packed_linear.restype = ctypes.c_int64
    lib.zoo_packed_linear.argtypes = [
        ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int, ctypes.c_int64, ctypes.c_int64,
        ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_float, ctypes.c_void_p, ctypes.c_void_p,
        *([ctypes.c_void_p] * 7), ctypes.c_int, ctypes.c_void_p, ctypes.c_float, ctypes.c_void_p,
    ]
    _library = lib
    return lib


def available() -> bool:
    return library() is not None


def isa() -> str:
    """The instruction set the library dispatches to on this CPU ("avx2" or "scalar")."""
    lib = library()
    return ISA_NAMES.get(lib.zoo_ternary_gemv_isa(), "unknown") if lib is not None else "none"


@functools.lru_cache(maxsize=16)
def _gemv_scratch(k_in: int, nb: int) -> "PackedLinearScratch":
    # Reused work buffers per shape (an allocation costs as much as a small GEMV); one call at a time.
    return PackedLinearScratch(k_in, nb)


def ternary_accumulate(x_q: torch.Tensor, packed: torch.Tensor, n_out: int, *, threads: int | None = None, force_scalar: bool = False) -> torch.Tensor:
    """``x_q · W_qᵀ`` as exact int32, ``x_q`` int8 ``[..., K]``, ``packed`` uint8 ``[K, ceil(N/4)]``."""
    lib = library()
    if lib is None:
        raise RuntimeError("ternary_accumulate: the compiled CPU kernel is unavailable (no compiler, or ZOO_CPU_KERNELS=0)")
    if x_q.dtype != torch.int8 or packed.dtype != torch.uint8 or x_q.device.type != "cpu" or packed.device.type != "cpu":
        raise TypeError(f"ternary_accumulate(cpu): expected int8 x and uint8 packed CPU tensors, got {x_q.dtype} on {x_q.device} and {packed.dtype} on {packed.device}")
    k_in, nb = packed.shape
    if x_q.shape[-1] != k_in or not (nb - 1) * 4 < n_out <= nb * 4:
        raise ValueError(f"ternary_accumulate(cpu): x [..., {x_q.shape[-1]}] and packed {tuple(packed.shape)} do not fit n_out={n_out}")
    rows = x_q.reshape(-1, k_in).contiguous()
    packed = packed.contiguous()
    acc = torch.empty(rows.shape[0], 4 * nb, dtype=torch.int32)
    scratch = _gemv_scratch(k_in, nb)
    lib.zoo_ternary_gemv(
        packed.data_ptr(), k_in, nb, rows.data_ptr(), rows.shape[0], acc.data_ptr(), scratch.kept.data_ptr(),
        scratch.acc16.data_ptr(), scratch.acc32.data_ptr(), torch.get_num_threads() if threads is None else threads, int(force_scalar),
    )
    return acc[:, :n_out].reshape(*x_q.shape[:-1], n_out)


SPARSITY_MODES = {"none": 0, "topk": 1, "block": 2}


class PackedLinearScratch:
    """Work buffers of one packed projection, allocated once: decoding calls it every token and
    an allocation costs as much as the arithmetic at tiny widths. Not shared between threads."""

    def __init__(self, k_in: int, nb: int) -> None:
        block = 128 * max(1, nb // 32)
        self.magnitudes = torch.empty(k_in, dtype=torch.float32)
        self.keep = torch.empty(k_in, dtype=torch.uint8)
        self.q = torch.empty(k_in, dtype=torch.int8)
        self.acc = torch.empty(4 * nb, dtype=torch.int32)
        self.kept = torch.empty(k_in, dtype=torch.int32)
        self.acc16 = torch.empty(block, dtype=torch.int16)
        self.acc32 = torch.empty(block, dtype=torch.int32)
        self.normed = torch.empty(k_in, dtype=torch.float32)
        self.pointers = [t.data_ptr() for t in (self.magnitudes, self.keep, self.q, self.acc, self.kept, self.acc16, self.acc32)]


def packed_linear(
    x: torch.Tensor, packed: torch.Tensor, alpha: float, n_out: int, bias: torch.Tensor | None, sparsity: str, n_keep: int,
    block_size: int, scratch: PackedLinearScratch | None = None, norm: tuple[torch.Tensor, float] | None = None,
) -> tuple[torch.Tensor, int]:
    """(``y`` fp32 ``[..., n_out]``, non-zero int8 inputs): the fused [RMSNorm] / top-K / int8 /
    packed GEMV / scale; ``norm`` = (fp32 gain, eps) of the RMSNorm in front, or None."""
    lib = library()
    if lib is None:
        raise RuntimeError("packed_linear: the compiled CPU kernel is unavailable (no compiler, or ZOO_CPU_KERNELS=0)")
    k_in, nb = packed.shape
    rows = x.reshape(-1, k_in)
    if rows.dtype != torch.float32 or not rows.is_contiguous():
        rows = rows.float().contiguous()
    scratch = scratch or PackedLinearScratch(k_in, nb)
    y = torch.empty(rows.shape[0], n_out, dtype=torch.float32)
    nonzero = lib.zoo_packed_linear(
        rows.data_ptr(), rows.shape[0], k_in, SPARSITY_MODES[sparsity], n_keep, block_size, packed.data_ptr(), nb, n_out,
        alpha, None if bias is None else bias.float().contiguous().data_ptr(), y.data_ptr(), *scratch.pointers, torch.get_num_threads(),
        *_norm_arguments(norm, k_in, scratch),
    )
    return y.reshape(*x.shape[:-1], n_out), nonzero


def _norm_arguments(norm: tuple[torch.Tensor, float] | None, k_in: int, scratch) -> tuple:
    if norm is None:
        return (None, 0.0, None)
    weight, eps = norm
    if weight.dtype != torch.float32 or not weight.is_contiguous() or weight.numel() != k_in:
        raise ValueError(f"norm: expected a contiguous fp32 gain of {k_in} channels, got {weight.dtype} {tuple(weight.shape)}")
    return (weight.data_ptr(), float(eps), scratch.normed.data_ptr())


class SparseLinearScratch:
    """Work buffers of one full-precision sparse projection (see :class:`PackedLinearScratch`)."""

    def __init__(self, k_in: int) -> None:
        self.magnitudes = torch.empty(k_in, dtype=torch.float32)
        self.keep = torch.empty(k_in, dtype=torch.uint8)
        self.kept = torch.empty(k_in, dtype=torch.int32)
        self.values = torch.empty(k_in, dtype=torch.float32)
        self.normed = torch.empty(k_in, dtype=torch.float32)
        self.pointers = [t.data_ptr() for t in (self.magnitudes, self.keep, self.kept, self.values)]


def sparse_linear(
    x: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor | None, sparsity: str, n_keep: int, block_size: int,
    scratch: SparseLinearScratch | None = None, *, force_scalar: bool = False, norm: tuple[torch.Tensor, float] | None = None,
) -> tuple[torch.Tensor, int]:
    """(``y`` fp32 ``[..., N]``, kept non-zero inputs): top-K / N:M of ``x`` times ``weight_t``
    (``[K, N]``, fp32 or bf16), reading only the rows of the kept channels."""
    lib = library()
    if lib is None:
        raise RuntimeError("sparse_linear: the compiled CPU kernel is unavailable (no compiler, or ZOO_CPU_KERNELS=0)")
    if weight_t.dtype not in (torch.float32, torch.bfloat16) or not weight_t.is_contiguous() or weight_t.device.type != "cpu":
        raise TypeError(f"sparse_linear: expected a contiguous fp32 or bf16 CPU weight [K, N], got {weight_t.dtype} on {weight_t.device}")
    k_in, n_out = weight_t.shape
    if x.shape[-1] != k_in:
        raise ValueError(f"sparse_linear: x [..., {x.shape[-1]}] does not fit a [K={k_in}, N={n_out}] weight")
    rows = x.reshape(-1, k_in)
    if rows.dtype != torch.float32 or not rows.is_contiguous():
        rows = rows.float().contiguous()
    scratch = scratch or SparseLinearScratch(k_in)
    y = torch.empty(rows.shape[0], n_out, dtype=torch.float32)
    nonzero = lib.zoo_sparse_linear(
        rows.data_ptr(), rows.shape[0], k_in, SPARSITY_MODES[sparsity], n_keep, block_size, weight_t.data_ptr(),
        int(weight_t.dtype == torch.bfloat16), n_out, None if bias is None else bias.float().contiguous().data_ptr(), y.data_ptr(),
        *scratch.pointers, torch.get_num_threads(), int(force_scalar), *_norm_arguments(norm, k_in, scratch),
    )
    return y.reshape(*x.shape[:-1], n_out), nonzero
