"""Triton kernels for 2-bit packing of BitNet b1.58 ternary weights (arXiv 2402.17764).

The layout is the one of ``reference.py``: ``packed[k, j]`` holds outputs ``4j..4j+3`` of input
channel ``k`` (code ``w + 1`` in bits ``2(n % 4)``), so a GEMV over a sparse input reads whole,
contiguous byte rows of the kept channels. A program owns a tile of (input channels × bytes):
it reads the four output rows behind each byte as coalesced runs along the input dimension and
writes the transposed tile.

``quantize_pack`` fuses the absmean ternarisation into the pack, so a float checkpoint is
packed in one pass; α itself is reduced by torch (a float sum depends on its order, and the
packed bytes must match the reference exactly).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_BLOCK_J = 16
_BLOCK_K = 64


@triton.jit
def _pack_kernel(
    w_ptr,
    alpha_ptr,
    packed_ptr,
    N,
    K,
    NB,
    BLOCK_J: tl.constexpr,
    BLOCK_K: tl.constexpr,
    QUANTIZE: tl.constexpr,
):
    j = tl.program_id(0) * BLOCK_J + tl.arange(0, BLOCK_J)
    k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    byte = tl.zeros([BLOCK_J, BLOCK_K], dtype=tl.int32)
    for i in tl.static_range(4):
        n = 4 * j + i
        inside = (n[:, None] < N) & (k[None, :] < K)
        w = tl.load(w_ptr + n[:, None].to(tl.int64) * K + k[None, :], mask=inside, other=0)
        if QUANTIZE:
            v = tl.math.div_rn(w.to(tl.float32), tl.full(w.shape, 1.0, tl.float32) * tl.load(alpha_ptr))
            # RoundClip(v, -1, 1) with ties to even: only |v| > 0.5 survives
            code = tl.where(v > 0.5, 2, tl.where(v < -0.5, 0, 1))
        else:
            code = w.to(tl.int32) + 1
        # padding outputs of the last byte read as 0, code 1, as the reference pads them
        byte = byte | (code << (2 * i))
    inside = (j[:, None] < NB) & (k[None, :] < K)
    tl.store(packed_ptr + k[None, :].to(tl.int64) * NB + j[:, None], byte.to(tl.uint8), mask=inside)


@triton.jit
def _unpack_kernel(packed_ptr, out_ptr, N, K, NB, BLOCK_J: tl.constexpr, BLOCK_K: tl.constexpr):
    j = tl.program_id(0) * BLOCK_J + tl.arange(0, BLOCK_J)
    k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    inside = (j[:, None] < NB) & (k[None, :] < K)
    byte = tl.load(packed_ptr + k[None, :].to(tl.int64) * NB + j[:, None], mask=inside, other=0).to(tl.int32)
    for i in tl.static_range(4):
        n = 4 * j + i
        w = ((byte >> (2 * i)) & 3) - 1
        tl.store(out_ptr + n[:, None].to(tl.int64) * K + k[None, :], w.to(tl.int8), mask=(n[:, None] < N) & (k[None, :] < K))


def _grid(n_bytes: int, k_in: int):
    return (triton.cdiv(n_bytes, _BLOCK_J), triton.cdiv(k_in, _BLOCK_K))


def pack(values: torch.Tensor) -> torch.Tensor:
    """``[N, K]`` ternary values (validated by the caller) → ``[K, ceil(N/4)]`` uint8."""
    values = values.contiguous()
    n_out, k_in = values.shape
    n_bytes = triton.cdiv(n_out, 4)
    packed = torch.empty(k_in, n_bytes, dtype=torch.uint8, device=values.device)
    if values.dtype == torch.bool:
        values = values.to(torch.int8)
    if packed.numel():
        _pack_kernel[_grid(n_bytes, k_in)](
            values, packed, packed, n_out, k_in, n_bytes, BLOCK_J=_BLOCK_J, BLOCK_K=_BLOCK_K, QUANTIZE=False, num_warps=4
        )
    return packed


def quantize_pack(w: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Absmean-ternarise a float ``[N, K]`` weight with the per-tensor ``alpha`` and pack it in one pass."""
    if w.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"quantize_pack_ternary: expected a float weight, got {w.dtype}")
    w = w.contiguous()
    n_out, k_in = w.shape
    n_bytes = triton.cdiv(n_out, 4)
    packed = torch.empty(k_in, n_bytes, dtype=torch.uint8, device=w.device)
    alpha = alpha.reshape(1).to(device=w.device, dtype=torch.float32).contiguous()
    if packed.numel():
        _pack_kernel[_grid(n_bytes, k_in)](
            w, alpha, packed, n_out, k_in, n_bytes, BLOCK_J=_BLOCK_J, BLOCK_K=_BLOCK_K, QUANTIZE=True, num_warps=4
        )
    return packed


def unpack(packed: torch.Tensor, n_out: int) -> torch.Tensor:
    """Inverse of :func:`pack`: ``[K, ceil(N/4)]`` uint8 → ``[n_out, K]`` int8."""
    packed = packed.contiguous()
    k_in, n_bytes = packed.shape
    out = torch.empty(n_out, k_in, dtype=torch.int8, device=packed.device)
    if out.numel():
        _unpack_kernel[_grid(n_bytes, k_in)](packed, out, n_out, k_in, n_bytes, BLOCK_J=_BLOCK_J, BLOCK_K=_BLOCK_K, num_warps=4)
    return out
