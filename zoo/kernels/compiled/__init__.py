"""The compiled CPU kernels of zoo.kernels: BitNet b1.58 packed ternary GEMVs (arXiv 2402.17764)
and Q-Sparse top-K transforms (arXiv 2407.10969), RMSNorm and a whole decode step (``program``),
plain C (``ternary_gemv.c``, ``topk_rows.c``, ``rms_norm.c``, ``decode_step.c``)
built with the system C compiler on first use and loaded through ctypes.

These are raw ops without autograd or dispatch: each op's sub-package (``zoo.kernels.topk``,
``zoo.kernels.ternary_matmul``) decides when to call them and pairs them with its reference.

Why this way: a compiled extension built at install time needs torch in pip's isolated build
environment, and a build requirement on torch makes pip download another (multi-GB CUDA) torch.
A plain C ABI needs no torch headers at all: it is compiled here, once per source version and
compiler, into the cache (``$ZOO_HOME/kernels``), with runtime CPU-feature dispatch (AVX2 or
scalar) inside the library. Without a compiler, or if the build fails, :func:`library` returns
None after a one-line notice and callers keep the torch reference path.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import torch

SOURCES = tuple(Path(__file__).with_name(name) for name in ("ternary_gemv.c", "topk_rows.c", "rms_norm.c", "decode_step.c"))
HEADER = Path(__file__).with_name("zoo_cpu.h")
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
        result = subprocess.run([compiler, *FLAGS, *map(str, SOURCES), "-o", str(partial)], capture_output=True, text=True)
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
    code = b"".join(path.read_bytes() for path in (*SOURCES, HEADER))
    digest = hashlib.sha256(code + " ".join((compiler, *FLAGS)).encode()).hexdigest()[:16]
    target = _cache_dir() / f"zoo_cpu-{digest}.so"
    try:
        if not target.is_file():
            _build(target, compiler)
        lib = ctypes.CDLL(str(target))
    except (OSError, RuntimeError) as error:
        print(f"moezoo: could not build the CPU kernel ({error}); using the torch path", file=sys.stderr)
        return None
    lib.zoo_ternary_gemv.restype = None
    lib.zoo_ternary_gemv.argtypes = [
        ctypes.c_void_p,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_void_p,
        ctypes.c_int64,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_int,
    ]
    lib.zoo_ternary_gemv_isa.restype = ctypes.c_int
    lib.zoo_sparse_linear.restype = ctypes.c_int64
    lib.zoo_sparse_linear.argtypes = [
        ctypes.c_void_p,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_int,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_int64,
        ctypes.c_void_p,
        ctypes.c_void_p,
        *([ctypes.c_void_p] * 4),
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_float,
        ctypes.c_void_p,
    ]
    lib.zoo_packed_linear.restype = ctypes.c_int64
    lib.zoo_packed_linear.argtypes = [
        ctypes.c_void_p,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_int,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_void_p,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_float,
        ctypes.c_void_p,
        ctypes.c_void_p,
        *([ctypes.c_void_p] * 7),
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_float,
        ctypes.c_void_p,
    ]
    lib.zoo_topk_rows.restype = ctypes.c_int64
    lib.zoo_topk_rows.argtypes = [
        ctypes.c_void_p,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_int,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_int,
    ]
    lib.zoo_rms_norm_forward.restype = None
    lib.zoo_rms_norm_forward.argtypes = [
        *([ctypes.c_void_p] * 2),
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_float,
        *([ctypes.c_void_p] * 2),
        ctypes.c_int,
    ]
    lib.zoo_run_program.restype = ctypes.c_int64
    lib.zoo_run_program.argtypes = [
        ctypes.c_void_p,
        ctypes.c_int64,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_int,
    ]
    lib.zoo_rms_norm_backward.restype = ctypes.c_int
    lib.zoo_rms_norm_backward.argtypes = [*([ctypes.c_void_p] * 4), ctypes.c_int64, ctypes.c_int64, *([ctypes.c_void_p] * 2), ctypes.c_int]
    _library = lib
    return lib


def available() -> bool:
    return library() is not None


def _loaded(op: str) -> ctypes.CDLL:
    """The library, or the one error every op gives when it cannot be built."""
    lib = library()
    if lib is None:
        raise RuntimeError(f"{op}: the compiled CPU kernel is unavailable (no compiler, or ZOO_CPU_KERNELS=0)")
    return lib


def _fp32_rows(x: torch.Tensor, k_in: int, op: str) -> torch.Tensor:
    """``x`` as contiguous fp32 rows ``[-1, k_in]``: a view when it already is, else one copy."""
    if x.shape[-1] != k_in or x.device.type != "cpu":
        raise ValueError(f"{op}: x [..., {x.shape[-1]}] on {x.device} does not fit a CPU weight of {k_in} input channels")
    rows = x.reshape(-1, k_in)
    return rows if rows.dtype == torch.float32 and rows.is_contiguous() else rows.float().contiguous()


def isa() -> str:
    """The instruction set the library dispatches to on this CPU ("avx2" or "scalar")."""
    lib = library()
    return ISA_NAMES.get(lib.zoo_ternary_gemv_isa(), "unknown") if lib is not None else "none"


_scratches = threading.local()


def _scratch(kind: type, *shape: int):
    """Work buffers of one kind and shape, made once per thread and reused by every call: decoding
    calls each projection every token, and an allocation costs as much as a small GEMV."""
    cache = _scratches.__dict__.setdefault("by_shape", {})
    key = (kind, shape)
    if key not in cache:
        cache[key] = kind(*shape)
    return cache[key]


def ternary_accumulate(
    x_q: torch.Tensor, packed: torch.Tensor, n_out: int, *, threads: int | None = None, force_scalar: bool = False
) -> torch.Tensor:
    """``x_q · W_qᵀ`` as exact int32, ``x_q`` int8 ``[..., K]``, ``packed`` uint8 ``[K, ceil(N/4)]``."""
    lib = _loaded("ternary_accumulate")
    if x_q.dtype != torch.int8 or packed.dtype != torch.uint8 or x_q.device.type != "cpu" or packed.device.type != "cpu":
        raise TypeError(
            f"ternary_accumulate(cpu): expected int8 x and uint8 packed CPU tensors, got {x_q.dtype} on {x_q.device} and {packed.dtype} on {packed.device}"
        )
    k_in, nb = packed.shape
    if x_q.shape[-1] != k_in or not (nb - 1) * 4 < n_out <= nb * 4:
        raise ValueError(f"ternary_accumulate(cpu): x [..., {x_q.shape[-1]}] and packed {tuple(packed.shape)} do not fit n_out={n_out}")
    rows = x_q.reshape(-1, k_in).contiguous()
    packed = packed.contiguous()
    acc = torch.empty(rows.shape[0], 4 * nb, dtype=torch.int32)
    scratch = _scratch(PackedLinearScratch, k_in, nb)
    lib.zoo_ternary_gemv(
        packed.data_ptr(),
        k_in,
        nb,
        rows.data_ptr(),
        rows.shape[0],
        acc.data_ptr(),
        scratch.kept.data_ptr(),
        scratch.acc16.data_ptr(),
        scratch.acc32.data_ptr(),
        torch.get_num_threads() if threads is None else threads,
        int(force_scalar),
    )
    return acc[:, :n_out].reshape(*x_q.shape[:-1], n_out)


SPARSITY_MODES = {"none": 0, "topk": 1, "block": 2}
SPARSE_WEIGHT_DTYPES = (torch.float32, torch.bfloat16)


class PackedLinearScratch:
    """Work buffers of the packed GEMV and projection for one shape (see :func:`_scratch`)."""

    def __init__(self, k_in: int, nb: int) -> None:
        block = 128 * max(1, nb // 32)
        self.magnitudes = torch.empty(2 * k_in, dtype=torch.float32)  # the top-K selection's values and candidates
        self.keep = torch.empty(k_in, dtype=torch.uint8)
        self.q = torch.empty(k_in, dtype=torch.int8)
        self.acc = torch.empty(4 * nb, dtype=torch.int32)
        self.kept = torch.empty(k_in, dtype=torch.int32)
        self.acc16 = torch.empty(block, dtype=torch.int16)
        self.acc32 = torch.empty(block, dtype=torch.int32)
        self.normed = torch.empty(k_in, dtype=torch.float32)
        self.pointers = [t.data_ptr() for t in (self.magnitudes, self.keep, self.q, self.acc, self.kept, self.acc16, self.acc32)]


class PackedLinear:
    """The fused [RMSNorm] / top-K / int8 / packed GEMV / scale projection with its weight-side
    operands checked and converted once; calling it with ``x`` runs one C call.

    Why prepared: decoding calls each projection once a token, and on this class of CPU every torch
    check or conversion costs about a microsecond, so re-validating the weight side per call took as
    long as the C work of a small projection. Holds its tensors (not raw pointers): a copy stays valid.
    """

    def __init__(
        self,
        packed: torch.Tensor,
        alpha: float,
        n_out: int,
        bias: torch.Tensor | None,
        sparsity: str,
        n_keep: int,
        block_size: int,
        norm: tuple[torch.Tensor, float] | None = None,
    ) -> None:
        self.function = _loaded("packed_linear").zoo_packed_linear
        if packed.dtype != torch.uint8 or packed.dim() != 2 or packed.device.type != "cpu":
            raise TypeError(
                f"packed_linear: expected a uint8 CPU packed weight [K, ceil(N/4)], got {packed.dtype} {tuple(packed.shape)} on {packed.device}"
            )
        self.k_in, self.nb = packed.shape
        if not (self.nb - 1) * 4 < n_out <= self.nb * 4:
            raise ValueError(f"packed_linear: packed {tuple(packed.shape)} does not hold n_out={n_out} outputs")
        self.packed, self.n_out, self.alpha = packed.contiguous(), n_out, float(alpha)
        self.bias = None if bias is None else bias.detach().float().contiguous()
        self.mode, self.n_keep, self.block_size = SPARSITY_MODES[sparsity], n_keep, block_size
        self.norm_weight, self.norm_eps = _checked_norm(norm, self.k_in)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(``y`` fp32 ``[..., n_out]``, non-zero int8 inputs) for ``x [..., K]``."""
        rows = _fp32_rows(x, self.k_in, "packed_linear")
        scratch = _scratch(PackedLinearScratch, self.k_in, self.nb)
        y = torch.empty(rows.shape[0], self.n_out, dtype=torch.float32)
        nonzero = self.function(
            rows.data_ptr(),
            rows.shape[0],
            self.k_in,
            self.mode,
            self.n_keep,
            self.block_size,
            self.packed.data_ptr(),
            self.nb,
            self.n_out,
            self.alpha,
            _pointer(self.bias),
            y.data_ptr(),
            *scratch.pointers,
            torch.get_num_threads(),
            *_norm_pointers(self, scratch),
        )
        return y.view(*x.shape[:-1], self.n_out), nonzero


def packed_linear(
    x: torch.Tensor,
    packed: torch.Tensor,
    alpha: float,
    n_out: int,
    bias: torch.Tensor | None,
    sparsity: str,
    n_keep: int,
    block_size: int,
    *,
    norm: tuple[torch.Tensor, float] | None = None,
) -> tuple[torch.Tensor, int]:
    """(``y`` fp32 ``[..., n_out]``, non-zero int8 inputs): the fused [RMSNorm] / top-K / int8 /
    packed GEMV / scale; ``norm`` = (fp32 gain, eps) of the RMSNorm in front, or None."""
    return PackedLinear(packed, alpha, n_out, bias, sparsity, n_keep, block_size, norm)(x)


def _pointer(tensor: torch.Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


def _checked_norm(norm: tuple[torch.Tensor, float] | None, k_in: int) -> tuple[torch.Tensor | None, float]:
    if norm is None:
        return None, 0.0
    weight, eps = norm
    if weight.dtype != torch.float32 or not weight.is_contiguous() or weight.numel() != k_in or weight.device.type != "cpu":
        raise ValueError(f"norm: expected a contiguous fp32 CPU gain of {k_in} channels, got {weight.dtype} {tuple(weight.shape)}")
    return weight, float(eps)


def _norm_pointers(prepared, scratch) -> tuple:
    if prepared.norm_weight is None:
        return (None, 0.0, None)
    return (prepared.norm_weight.data_ptr(), prepared.norm_eps, scratch.normed.data_ptr())


class SparseLinearScratch:
    """Work buffers of the full-precision sparse projection for one width (see :func:`_scratch`)."""

    def __init__(self, k_in: int) -> None:
        self.magnitudes = torch.empty(2 * k_in, dtype=torch.float32)  # the top-K selection's values and candidates
        self.keep = torch.empty(k_in, dtype=torch.uint8)
        self.kept = torch.empty(k_in, dtype=torch.int32)
        self.values = torch.empty(k_in, dtype=torch.float32)
        self.normed = torch.empty(k_in, dtype=torch.float32)
        self.pointers = [t.data_ptr() for t in (self.magnitudes, self.keep, self.kept, self.values)]


class SparseLinear:
    """The full-precision Q-Sparse projection (top-K / N:M of ``x``, then only the kept channels'
    rows of ``weight_t [K, N]``, fp32 or bf16, read), prepared once like :class:`PackedLinear`."""

    def __init__(
        self,
        weight_t: torch.Tensor,
        bias: torch.Tensor | None,
        sparsity: str,
        n_keep: int,
        block_size: int,
        *,
        force_scalar: bool = False,
        norm: tuple[torch.Tensor, float] | None = None,
    ) -> None:
        self.function = _loaded("sparse_linear").zoo_sparse_linear
        if (
            weight_t.dtype not in SPARSE_WEIGHT_DTYPES
            or not weight_t.is_contiguous()
            or weight_t.device.type != "cpu"
            or weight_t.dim() != 2
        ):
            raise TypeError(
                f"sparse_linear: expected a contiguous fp32 or bf16 CPU weight [K, N], got {weight_t.dtype} on {weight_t.device}"
            )
        self.weight_t, (self.k_in, self.n_out) = weight_t, weight_t.shape
        self.bf16 = int(weight_t.dtype == torch.bfloat16)
        self.bias = None if bias is None else bias.detach().float().contiguous()
        self.mode, self.n_keep, self.block_size, self.force_scalar = SPARSITY_MODES[sparsity], n_keep, block_size, int(force_scalar)
        self.norm_weight, self.norm_eps = _checked_norm(norm, self.k_in)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(``y`` fp32 ``[..., N]``, kept non-zero inputs) for ``x [..., K]``."""
        rows = _fp32_rows(x, self.k_in, "sparse_linear")
        scratch = _scratch(SparseLinearScratch, self.k_in)
        y = torch.empty(rows.shape[0], self.n_out, dtype=torch.float32)
        nonzero = self.function(
            rows.data_ptr(),
            rows.shape[0],
            self.k_in,
            self.mode,
            self.n_keep,
            self.block_size,
            self.weight_t.data_ptr(),
            self.bf16,
            self.n_out,
            _pointer(self.bias),
            y.data_ptr(),
            *scratch.pointers,
            torch.get_num_threads(),
            self.force_scalar,
            *_norm_pointers(self, scratch),
        )
        return y.view(*x.shape[:-1], self.n_out), nonzero


def sparse_linear(
    x: torch.Tensor,
    weight_t: torch.Tensor,
    bias: torch.Tensor | None,
    sparsity: str,
    n_keep: int,
    block_size: int,
    *,
    force_scalar: bool = False,
    norm: tuple[torch.Tensor, float] | None = None,
) -> tuple[torch.Tensor, int]:
    """(``y`` fp32 ``[..., N]``, kept non-zero inputs): top-K / N:M of ``x`` times ``weight_t``
    (``[K, N]``, fp32 or bf16), reading only the rows of the kept channels."""
    return SparseLinear(weight_t, bias, sparsity, n_keep, block_size, force_scalar=force_scalar, norm=norm)(x)


def topk_rows(x: torch.Tensor, sparsity: str, n_keep: int, block_size: int, quantize: bool) -> tuple[torch.Tensor, int]:
    """(``S(x)``, or its int8 fake quantisation ``Q(S(x))``, in x's dtype; non-zero outputs): the
    input transform of a training-form projection, per row of the last dimension.

    Computed in fp32 (a bf16 or fp16 ``x`` is widened and the result cast back, which is exact:
    the reference selects on the same values and quantises in fp32 too).
    """
    lib = _loaded("topk_rows")
    if x.device.type != "cpu" or not x.is_floating_point():
        raise TypeError(f"topk_rows: expected a floating CPU tensor, got {x.dtype} on {x.device}")
    k_in = x.shape[-1]
    width = block_size if sparsity == "block" else k_in
    if sparsity == "block" and (block_size < 1 or k_in % block_size):
        raise ValueError(f"topk_rows: block_size={block_size} must divide the {k_in} channels")
    if sparsity != "none" and not 1 <= n_keep <= width:
        raise ValueError(f"topk_rows: n_keep must be in [1, {width}], got {n_keep}")
    rows = _fp32_rows(x.detach(), k_in, "topk_rows")
    out = torch.empty_like(rows)
    nonzero = lib.zoo_topk_rows(
        rows.data_ptr(),
        rows.shape[0],
        k_in,
        SPARSITY_MODES[sparsity],
        n_keep,
        block_size,
        int(quantize),
        out.data_ptr(),
        torch.get_num_threads(),
    )
    if nonzero < 0:
        raise MemoryError("topk_rows: the kernel could not allocate its row buffers")
    return out.to(x.dtype).reshape(x.shape), nonzero


def rms_norm_supported(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :func:`rms_norm_forward` takes these tensors: fp32 on the CPU, one gain per channel."""
    return (
        x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.device.type == "cpu"
        and weight.device.type == "cpu"
        and weight.dim() == 1
        and weight.numel() == x.shape[-1]
    )


def _norm_operands(op: str, x: torch.Tensor, weight: torch.Tensor) -> tuple[ctypes.CDLL, torch.Tensor, torch.Tensor]:
    lib = _loaded(op)
    if not rms_norm_supported(x, weight):
        raise TypeError(
            f"{op}: expected fp32 CPU x [..., D] and gain [D], got {x.dtype} {tuple(x.shape)} and {weight.dtype} {tuple(weight.shape)}"
        )
    return lib, x.detach().reshape(-1, x.shape[-1]).contiguous(), weight.detach().contiguous()


def rms_norm_forward(x: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(``y = x / sqrt(mean(x²) + eps) · weight``, ``1 / rms`` per row ``[rows]``) for fp32 CPU tensors."""
    lib, rows, weight = _norm_operands("rms_norm_forward", x, weight)
    y = torch.empty_like(rows)
    rstd = torch.empty(rows.shape[0], dtype=torch.float32)
    lib.zoo_rms_norm_forward(
        rows.data_ptr(), weight.data_ptr(), rows.shape[0], rows.shape[1], float(eps), y.data_ptr(), rstd.data_ptr(), torch.get_num_threads()
    )
    return y.reshape(x.shape), rstd


def rms_norm_backward(x: torch.Tensor, weight: torch.Tensor, rstd: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(dx, dweight) of :func:`rms_norm_forward` for the output gradient ``grad``."""
    lib, rows, weight = _norm_operands("rms_norm_backward", x, weight)
    grad_rows = grad.reshape(rows.shape).float().contiguous()
    dx = torch.empty_like(rows)
    dw = torch.empty_like(weight)
    status = lib.zoo_rms_norm_backward(
        rows.data_ptr(),
        weight.data_ptr(),
        rstd.contiguous().data_ptr(),
        grad_rows.data_ptr(),
        rows.shape[0],
        rows.shape[1],
        dx.data_ptr(),
        dw.data_ptr(),
        torch.get_num_threads(),
    )
    if status != 0:
        raise MemoryError("rms_norm_backward: the kernel could not allocate its partial sums")
    return dx.reshape(x.shape), dw
