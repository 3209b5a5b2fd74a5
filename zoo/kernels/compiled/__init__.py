"""The compiled CPU kernels of zoo.kernels: BitNet b1.58 packed ternary GEMVs (arXiv 2402.17764)
and Q-Sparse top-K transforms (arXiv 2407.10969), RMSNorm and a whole decode step (``program``),
plain C built with the system C compiler on first use and loaded through ctypes.

The library's ABI is one header, ``zoo_kernels.h`` (every exported function and struct), mirrored
for ctypes in :mod:`zoo.kernels.compiled.abi`; ``zoo_cpu.h`` holds the numeric helpers the kernels
share inside the library, ``cpu_features.c`` the one instruction-set dispatch (see :func:`force_isa`).

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

from zoo.kernels.compiled import abi
from zoo.kernels.rule import InputRule

HERE = Path(__file__).parent
SOURCES = tuple(sorted(HERE.glob("*.c")))
HEADERS = tuple(sorted(HERE.glob("*.h")))  # zoo_kernels.h (the ABI) and zoo_cpu.h (shared inside)
# hidden visibility: the library exports what zoo_kernels.h marks ZOO_API and nothing else
FLAGS = ("-O3", "-shared", "-fPIC", "-fopenmp", "-std=c11", "-fvisibility=hidden", "-lm")
SPARSITY_MODES = abi.SPARSITY_MODES

_library: ctypes.CDLL | None = None
_tried = False


def _cache_dir() -> Path:
    # The rule of zoo.paths.zoo_home, restated: zoo.kernels imports nothing above it.
    explicit = os.environ.get("ZOO_HOME")
    root = Path(explicit).expanduser() if explicit else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "moezoo"
    return root / "kernels"


def _build(target: Path, cc: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        partial = Path(tmp) / target.name
        result = subprocess.run([cc, *FLAGS, *map(str, SOURCES), "-o", str(partial)], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(" ".join(result.stderr.split())[:300])
        os.replace(partial, target)  # atomic: a concurrent process sees the old name or the whole file


def compiler() -> str | None:
    """The C compiler the library is built with: ``$CC``, else ``cc`` or ``gcc`` on the PATH."""
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def library() -> ctypes.CDLL | None:
    """The loaded kernel library, building it on first use; None where it cannot be built."""
    global _library, _tried
    if _tried:
        return _library
    _tried = True
    if os.environ.get("ZOO_CPU_KERNELS", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    cc = compiler()
    if cc is None:
        print("moezoo: no C compiler found; packed ternary layers use the slower torch path", file=sys.stderr)
        return None
    code = b"".join(path.read_bytes() for path in (*SOURCES, *HEADERS))
    digest = hashlib.sha256(code + " ".join((cc, *FLAGS)).encode()).hexdigest()[:16]
    target = _cache_dir() / f"zoo_cpu-{digest}.so"
    try:
        if not target.is_file():
            _build(target, cc)
        lib = ctypes.CDLL(str(target))
    except (OSError, RuntimeError) as error:
        print(f"moezoo: could not build the CPU kernel ({error}); using the torch path", file=sys.stderr)
        return None
    _library = abi.bind(lib)
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
    """The instruction set every kernel dispatches to now: "avx2" (with FMA) or "scalar" ("none"
    without the library)."""
    lib = library()
    return abi.ISA_NAMES.get(lib.zoo_isa(), "unknown") if lib is not None else "none"


def force_isa(name: str) -> str:
    """The one override of the kernels' dispatch (``zoo_force_isa``): ``"scalar"`` forces the
    scalar path in every kernel, ``"avx2"`` allows the AVX2 paths where the CPU has them,
    ``"avx512"`` also the AVX-512 ones (the ternary GEMV), ``"auto"`` lifts the cap. Process-wide. Returns :func:`isa` after, which tells a caller
    whether the path it asked for is the one that runs (a CPU without AVX2 stays scalar)."""
    if name not in abi.ISA_CODES:
        raise ValueError(f"force_isa: expected one of {tuple(abi.ISA_CODES)}, got {name!r}")
    _loaded("force_isa").zoo_force_isa(abi.ISA_CODES[name])
    return isa()


class ScratchBuffers:
    """The tensors behind one ``zoo_scratch`` (``self.struct``), for projections of up to ``k_in``
    inputs and ``nb`` packed bytes per channel; the decode step's extra buffers when sized."""

    def __init__(self, k_in: int, nb: int = 1, *, keep: int = 0, scores: int = 0, query: int = 0, expert: int = 0) -> None:
        block = 128 * max(1, nb // 32)
        tiles = 128 * -(-nb // 32)  # the tiled GEMV's outputs: whole tiles of 128
        sizes = dict(
            magnitudes=(2 * k_in, torch.float32),  # the top-K selection's values and candidates
            keep=(max(k_in, keep), torch.uint8),
            q=(k_in, torch.int8),
            acc=(max(4 * nb, tiles), torch.int32),
            kept=(k_in, torch.int32),
            acc16=(block, torch.int16),
            acc32=(block, torch.int32),
            values=(k_in, torch.float32),
            normed=(k_in, torch.float32),
            scores=(scores, torch.float32),
            query=(query, torch.float32),
            expert_a=(expert, torch.float32),
            expert_b=(expert, torch.float32),
            expert_c=(expert, torch.float32),
            pairs=(3 * (k_in // 2 + 1), torch.int32),
        )
        self.tensors = {name: torch.empty(size, dtype=dtype) for name, (size, dtype) in sizes.items() if size}
        self.struct = abi.Scratch(**{name: t.data_ptr() for name, t in self.tensors.items()})


_scratches = threading.local()


def _scratch(k_in: int, nb: int = 1) -> abi.Scratch:
    """The work buffers of projections of one shape, made once per thread and reused by every call:
    decoding calls each projection every token, and an allocation costs as much as a small GEMV."""
    cache = _scratches.__dict__.setdefault("by_shape", {})
    if (k_in, nb) not in cache:
        cache[k_in, nb] = ScratchBuffers(k_in, nb)
    return cache[k_in, nb].struct


def ternary_accumulate(x_q: torch.Tensor, packed: torch.Tensor, n_out: int, *, threads: int | None = None) -> torch.Tensor:
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
    threads = torch.get_num_threads() if threads is None else threads
    lib.zoo_ternary_gemv(packed.data_ptr(), k_in, nb, rows.data_ptr(), rows.shape[0], acc.data_ptr(), _scratch(k_in, nb), threads)
    return acc[:, :n_out].reshape(*x_q.shape[:-1], n_out)


def ternary_tiles(packed: torch.Tensor) -> torch.Tensor:
    """``packed`` (uint8 ``[K, nb]``, :func:`zoo.kernels.pack_ternary`'s layout) re-cut into tiles of
    128 outputs, ``[ceil(nb / 32), K, 32]`` (``zoo_ternary_tile``): the layout the decoding GEMV
    streams through (see ``ternary_tiles.c``). A byte permutation: no value changes."""
    lib = _loaded("ternary_tiles")
    if packed.dtype != torch.uint8 or packed.dim() != 2 or packed.device.type != "cpu":
        raise TypeError(
            f"ternary_tiles: expected a uint8 CPU packed weight [K, nb], got {packed.dtype} {tuple(packed.shape)} on {packed.device}"
        )
    packed = packed.contiguous()
    k_in, nb = packed.shape
    tiles = torch.empty(-(-nb // 32), k_in, 32, dtype=torch.uint8)
    lib.zoo_ternary_tile(packed.data_ptr(), k_in, nb, tiles.data_ptr())
    return tiles


def ternary_accumulate_tiled(x_q: torch.Tensor, tiles: torch.Tensor, n_out: int, *, threads: int | None = None) -> torch.Tensor:
    """``x_q · W_qᵀ`` as exact int32 through the tiled GEMV (``tiles`` from :func:`ternary_tiles`)."""
    lib = _loaded("ternary_accumulate_tiled")
    if x_q.dtype != torch.int8 or tiles.dtype != torch.uint8 or tiles.dim() != 3 or tiles.shape[2] != 32:
        raise TypeError(
            f"ternary_accumulate_tiled: expected int8 x and uint8 tiles [T, K, 32], got {x_q.dtype} and {tiles.dtype} {tuple(tiles.shape)}"
        )
    n_tiles, k_in, _ = tiles.shape
    if x_q.shape[-1] != k_in or not 0 < n_out <= 128 * n_tiles:
        raise ValueError(f"ternary_accumulate_tiled: x [..., {x_q.shape[-1]}] and tiles {tuple(tiles.shape)} do not fit n_out={n_out}")
    rows = x_q.reshape(-1, k_in).contiguous()
    acc = torch.empty(rows.shape[0], 128 * n_tiles, dtype=torch.int32)
    threads = torch.get_num_threads() if threads is None else threads
    lib.zoo_ternary_gemv_tiled(
        tiles.contiguous().data_ptr(), k_in, n_tiles, rows.data_ptr(), rows.shape[0], acc.data_ptr(), _scratch(k_in), threads
    )
    return acc[:, :n_out].reshape(*x_q.shape[:-1], n_out)


SPARSE_WEIGHT_DTYPES = (torch.float32, torch.bfloat16)


def _pointer(tensor: torch.Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


def _checked_norm(norm: tuple[torch.Tensor, float] | None, k_in: int) -> tuple[torch.Tensor | None, float]:
    if norm is None:
        return None, 0.0
    weight, eps = norm
    if weight.dtype != torch.float32 or not weight.is_contiguous() or weight.numel() != k_in or weight.device.type != "cpu":
        raise ValueError(f"norm: expected a contiguous fp32 CPU gain of {k_in} channels, got {weight.dtype} {tuple(weight.shape)}")
    return weight, float(eps)


class _Prepared:
    """A projection checked and converted once, described to C by one ``zoo_projection``
    (``self.projection``); calling it with ``x`` runs one C call.

    Why prepared: decoding calls each projection once a token, and on this class of CPU every torch
    check or conversion costs about a microsecond, so re-validating the weight side per call took as
    long as the C work of a small projection. Holds its tensors; the struct's raw pointers into them
    are rebuilt when the object is copied or unpickled, so a copy points at its own tensors.
    """

    op = ""

    def _describe(self) -> abi.Projection:
        raise NotImplementedError

    def __getstate__(self) -> dict:
        return {name: value for name, value in self.__dict__.items() if name not in ("projection", "function")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.function = getattr(_loaded(self.op), f"zoo_{self.op}")
        self.projection = self._describe()

    def _finish(self) -> None:
        self.__setstate__({})

    def _common(self, kind: int, rule: abi.InputRule) -> abi.Projection:
        return abi.Projection(
            kind=kind,
            rule=rule,
            k_in=self.k_in,
            n_out=self.n_out,
            bias=_pointer(self.bias),
            norm_w=_pointer(self.norm_weight),
            norm_eps=self.norm_eps,
        )

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(``y`` fp32 ``[..., n_out]``, the count of non-zero inputs used) for ``x [..., K]``."""
        rows = _fp32_rows(x, self.k_in, self.op)
        y = torch.empty(rows.shape[0], self.n_out, dtype=torch.float32)
        nonzero = self.function(self.projection, rows.data_ptr(), rows.shape[0], y.data_ptr(), self.scratch(), torch.get_num_threads())
        return y.view(*x.shape[:-1], self.n_out), nonzero


class PackedLinear(_Prepared):
    """The fused [RMSNorm] / top-K / int8 / packed GEMV / scale projection of BitNet b1.58 weights."""

    op = "packed_linear"

    def __init__(
        self,
        packed: torch.Tensor,
        alpha: float | torch.Tensor,
        n_out: int,
        bias: torch.Tensor | None,
        rule: InputRule,
        norm: tuple[torch.Tensor, float] | None = None,
    ) -> None:
        if not rule.int8:
            raise ValueError(f"packed_linear: the packed GEMV multiplies int8 inputs; got the rule {rule}")
        if packed.dtype != torch.uint8 or packed.dim() not in (2, 3) or packed.device.type != "cpu":
            raise TypeError(
                f"packed_linear: expected a uint8 CPU packed weight [K, ceil(N/4)] or its tiles [ceil(N/128), K, 32], "
                f"got {packed.dtype} {tuple(packed.shape)} on {packed.device}"
            )
        tiled = packed.dim() == 3
        self.k_in, self.nb = (packed.shape[1], -(-n_out // 4)) if tiled else packed.shape
        if not (self.nb - 1) * 4 < n_out <= self.nb * 4 or (tiled and tuple(packed.shape[::2]) != (-(-self.nb // 32), 32)):
            raise ValueError(f"packed_linear: packed {tuple(packed.shape)} does not hold n_out={n_out} outputs")
        # Only the tiled layout is held: decoding reads that one (ternary_tiles.c says why); tiles
        # given are used as they are, not copied.
        self.tiles = packed.contiguous() if tiled else ternary_tiles(packed)
        # one scale, or one per output row (a tensor of n_out)
        alpha = torch.as_tensor(alpha, dtype=torch.float32).detach()
        if alpha.numel() not in (1, n_out):
            raise ValueError(f"packed_linear: {alpha.numel()} scales for n_out={n_out} outputs (one, or one per output)")
        self.row_scale = alpha.reshape(-1).contiguous() if alpha.numel() > 1 else None
        self.n_out, self.alpha = n_out, 1.0 if self.row_scale is not None else float(alpha)
        self.bias = None if bias is None else bias.detach().float().contiguous()
        rule.check(self.k_in, "packed_linear")
        self.rule = rule
        self.norm_weight, self.norm_eps = _checked_norm(norm, self.k_in)
        self._finish()

    def _describe(self) -> abi.Projection:
        p = self._common(abi.PROJ_PACKED, abi.InputRule.of(self.rule))
        p.nb, p.weight, p.alpha, p.row_scale = self.nb, self.tiles.data_ptr(), self.alpha, _pointer(self.row_scale)
        return p

    def scratch(self) -> abi.Scratch:
        return _scratch(self.k_in, self.nb)


def packed_linear(
    x: torch.Tensor,
    packed: torch.Tensor,
    alpha: float | torch.Tensor,
    n_out: int,
    bias: torch.Tensor | None,
    rule: InputRule,
    *,
    norm: tuple[torch.Tensor, float] | None = None,
) -> tuple[torch.Tensor, int]:
    """(``y`` fp32 ``[..., n_out]``, non-zero int8 inputs): the fused [RMSNorm] / ``rule`` (top-K or
    N:M, then int8) / packed GEMV / scale; ``norm`` = (fp32 gain, eps) of the RMSNorm in front, or None."""
    return PackedLinear(packed, alpha, n_out, bias, rule, norm)(x)


class SparseLinear(_Prepared):
    """The full-precision Q-Sparse projection (top-K / N:M of ``x``, then only the kept channels'
    rows of ``weight_t [K, N]``, fp32 or bf16, read)."""

    op = "sparse_linear"

    def __init__(
        self,
        weight_t: torch.Tensor,
        bias: torch.Tensor | None,
        rule: InputRule,
        *,
        norm: tuple[torch.Tensor, float] | None = None,
    ) -> None:
        if rule.int8:
            raise ValueError(f"sparse_linear: full-precision inputs only; got the rule {rule}")
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
        rule.check(self.k_in, "sparse_linear")
        self.rule = rule
        self.norm_weight, self.norm_eps = _checked_norm(norm, self.k_in)
        self._finish()

    def _describe(self) -> abi.Projection:
        p = self._common(abi.PROJ_SPARSE_INPUT, abi.InputRule.of(self.rule))
        p.w_bf16, p.weight = self.bf16, self.weight_t.data_ptr()
        return p

    # From this many rows on (a prompt), one GEMM over the kept inputs reads the weight once, where
    # the per-row kernel reads every kept row once per prompt row: 64 prompt tokens of the Llama 3.2
    # 1B shape's qsparse variant went at 0.18x llama.cpp's prefill through it.
    BATCHED_ROWS = 4

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        rows = _fp32_rows(x, self.k_in, self.op)
        if rows.shape[0] < self.BATCHED_ROWS:
            return super().__call__(x)
        if self.norm_weight is not None:
            rows = rms_norm_forward(rows, self.norm_weight, self.norm_eps)[0]
        kept, nonzero = topk_rows(rows, self.rule)
        # in the weight's dtype, as a bf16 F.linear rounds its inputs; sums in fp32 either way
        y = (kept.to(self.weight_t.dtype) @ self.weight_t).float()
        if self.bias is not None:
            y += self.bias
        return y.view(*x.shape[:-1], self.n_out), nonzero

    def scratch(self) -> abi.Scratch:
        return _scratch(self.k_in)


def sparse_linear(
    x: torch.Tensor,
    weight_t: torch.Tensor,
    bias: torch.Tensor | None,
    rule: InputRule,
    *,
    norm: tuple[torch.Tensor, float] | None = None,
) -> tuple[torch.Tensor, int]:
    """(``y`` fp32 ``[..., N]``, kept non-zero inputs): ``rule``'s top-K / N:M of ``x`` times ``weight_t``
    (``[K, N]``, fp32 or bf16), reading only the rows of the kept channels."""
    return SparseLinear(weight_t, bias, rule, norm=norm)(x)


def topk_rows(x: torch.Tensor, rule: InputRule) -> tuple[torch.Tensor, int]:
    """(``S(x)``, or its int8 fake quantisation ``Q(S(x))`` where ``rule.int8``, in x's dtype; non-zero
    outputs): the input transform of a training-form projection, per row of the last dimension.

    Computed in fp32 (a bf16 or fp16 ``x`` is widened and the result cast back, which is exact:
    the reference selects on the same values and quantises in fp32 too).
    """
    lib = _loaded("topk_rows")
    if x.device.type != "cpu" or not x.is_floating_point():
        raise TypeError(f"topk_rows: expected a floating CPU tensor, got {x.dtype} on {x.device}")
    k_in = x.shape[-1]
    rule.check(k_in, "topk_rows")
    rows = _fp32_rows(x.detach(), k_in, "topk_rows")
    out = torch.empty_like(rows)
    nonzero = lib.zoo_topk_rows(rows.data_ptr(), rows.shape[0], k_in, abi.InputRule.of(rule), out.data_ptr(), torch.get_num_threads())
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
