"""Sparse-input ternary GEMV for decoding: BitNet b1.58 weights (arXiv 2402.17764) packed 2 bits
per weight along the output dimension, times Q-Sparse activations (arXiv 2407.10969) that are
mostly zero.

A program owns ``BLOCK_J`` packed bytes (``4·BLOCK_J`` outputs) of every input channel in its
K range, for up to ``B_PAD`` tokens. For each chunk of channels it first loads the activations,
marks the channels that are non-zero in any token of the batch (the union of the tokens'
masks), and loads packed bytes only for those: a masked-off load issues no memory transaction,
so the weight traffic is ``union density × N·K/4`` bytes. Each byte is unpacked to four
{-1, 0, 1} tiles, one per output in the byte, each with its own fp32 accumulator.

One token multiplies by broadcasting, keeping per-channel partial sums in registers that are
reduced once at the end; a batch goes through ``tl.dot`` (int8×int8 for int8 activations,
bf16/fp16 on tensor cores, fp32 in IEEE precision). int8 products are
integers and their fp32 sums stay exact below 2**24, so the integer accumulator is exact in any
order; the rescale ``acc / s · α`` uses a correctly rounded division, as torch does.

Long K is split across programs (``split_k``) that add their partial sums atomically into a
zeroed fp32 output, so that a 4096-row GEMV still fills a GPU. Block sizes are fixed heuristics
(register use checked on sm_90 builds), not autotuned: no GPU was at hand to tune them.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from zoo.kernels._triton_helpers import cast_for

# The interpreter's tl.dot mishandles bf16 (see _dot); decided at import, like triton.jit.
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

MAX_BATCH_TILE = 16


@triton.jit
def _dot(xt, byte, shift: tl.constexpr, INT8: tl.constexpr, HALF_AS_FP32: tl.constexpr):
    """[B_PAD, BLOCK_J] contribution of the outputs at position ``shift/2`` of each byte."""
    w = ((byte >> shift) & 3) - 1
    if INT8:
        return tl.dot(xt, w.to(tl.int8)).to(tl.float32)
    elif xt.dtype == tl.float32:
        return tl.dot(xt, w.to(tl.float32), input_precision="ieee")
    elif HALF_AS_FP32:
        # the interpreter's dot multiplies bf16 as raw uint16: widen first (same products, exact)
        return tl.dot(xt.to(tl.float32), w.to(tl.float32), input_precision="ieee")
    else:
        # via fp32: the interpreter casts int32 → bf16 by reinterpreting the integer's bits
        return tl.dot(xt, w.to(tl.float32).to(xt.dtype))


@triton.jit
def _products(x_col, byte, shift: tl.constexpr):
    """[BLOCK_K, BLOCK_J] products of one token's channels with the outputs at ``shift/2``."""
    return x_col * (((byte >> shift) & 3) - 1).to(tl.float32)


@triton.jit
def _load_tiles(x_ptr, packed_ptr, b, b_inside, j, j_inside, k0, k_end, stride_xb, NB, BLOCK_K: tl.constexpr):
    k = k0 + tl.arange(0, BLOCK_K)
    k_inside = k < k_end
    xt = tl.load(
        x_ptr + b[:, None].to(tl.int64) * stride_xb + k[None, :],
        mask=b_inside[:, None] & k_inside[None, :],
        other=0,
    )
    # the union over the batch: a channel's packed row is read only if some token kept it
    active = tl.max((xt != 0).to(tl.int32), axis=0) > 0
    # byte 0b01010101 decodes to four zero weights
    byte = tl.load(
        packed_ptr + k[:, None].to(tl.int64) * NB + j[None, :],
        mask=active[:, None] & j_inside[None, :],
        other=85,
    ).to(tl.int32)
    return xt, byte


@triton.jit
def _ternary_gemv_kernel(
    x_ptr,
    packed_ptr,
    y_ptr,
    alpha_ptr,
    x_scale_ptr,
    B,
    K,
    N,
    NB,
    stride_xb,
    k_per_split,
    B_PAD: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_J: tl.constexpr,
    USE_DOT: tl.constexpr,
    INT8: tl.constexpr,
    SCALE: tl.constexpr,
    ATOMIC: tl.constexpr,
    HALF_AS_FP32: tl.constexpr,
):
    j = tl.program_id(0) * BLOCK_J + tl.arange(0, BLOCK_J)
    b = tl.program_id(2) * B_PAD + tl.arange(0, B_PAD)
    k_start = tl.program_id(1) * k_per_split
    k_end = tl.minimum(k_start + k_per_split, K)
    j_inside = j < NB
    b_inside = b < B

    if USE_DOT:
        acc0 = tl.zeros([B_PAD, BLOCK_J], dtype=tl.float32)
        acc1 = tl.zeros([B_PAD, BLOCK_J], dtype=tl.float32)
        acc2 = tl.zeros([B_PAD, BLOCK_J], dtype=tl.float32)
        acc3 = tl.zeros([B_PAD, BLOCK_J], dtype=tl.float32)
        for k0 in range(k_start, k_end, BLOCK_K):
            xt, byte = _load_tiles(x_ptr, packed_ptr, b, b_inside, j, j_inside, k0, k_end, stride_xb, NB, BLOCK_K)
            acc0 += _dot(xt, byte, 0, INT8, HALF_AS_FP32)
            acc1 += _dot(xt, byte, 2, INT8, HALF_AS_FP32)
            acc2 += _dot(xt, byte, 4, INT8, HALF_AS_FP32)
            acc3 += _dot(xt, byte, 6, INT8, HALF_AS_FP32)
    else:
        # one token: keep per-channel partial sums in registers and reduce across channels once
        # at the end, instead of a cross-warp reduction per chunk
        part0 = tl.zeros([BLOCK_K, BLOCK_J], dtype=tl.float32)
        part1 = tl.zeros([BLOCK_K, BLOCK_J], dtype=tl.float32)
        part2 = tl.zeros([BLOCK_K, BLOCK_J], dtype=tl.float32)
        part3 = tl.zeros([BLOCK_K, BLOCK_J], dtype=tl.float32)
        for k0 in range(k_start, k_end, BLOCK_K):
            xt, byte = _load_tiles(x_ptr, packed_ptr, b, b_inside, j, j_inside, k0, k_end, stride_xb, NB, BLOCK_K)
            x_col = tl.sum(xt.to(tl.float32), axis=0)[:, None]  # xt is [1, BLOCK_K]
            part0 += _products(x_col, byte, 0)
            part1 += _products(x_col, byte, 2)
            part2 += _products(x_col, byte, 4)
            part3 += _products(x_col, byte, 6)
        acc0 = tl.sum(part0, axis=0)[None, :]
        acc1 = tl.sum(part1, axis=0)[None, :]
        acc2 = tl.sum(part2, axis=0)[None, :]
        acc3 = tl.sum(part3, axis=0)[None, :]

    if SCALE:
        alpha = tl.load(alpha_ptr)
        if INT8:
            x_scale = tl.load(x_scale_ptr + b, mask=b_inside, other=1.0)[:, None]
            acc0 = tl.math.div_rn(acc0, tl.broadcast_to(x_scale, acc0.shape)) * alpha
            acc1 = tl.math.div_rn(acc1, tl.broadcast_to(x_scale, acc1.shape)) * alpha
            acc2 = tl.math.div_rn(acc2, tl.broadcast_to(x_scale, acc2.shape)) * alpha
            acc3 = tl.math.div_rn(acc3, tl.broadcast_to(x_scale, acc3.shape)) * alpha
        else:
            acc0 = acc0 * alpha
            acc1 = acc1 * alpha
            acc2 = acc2 * alpha
            acc3 = acc3 * alpha

    row = b[:, None].to(tl.int64) * N
    n0 = 4 * j[None, :]
    keep = b_inside[:, None] & j_inside[None, :]
    if ATOMIC:
        tl.atomic_add(y_ptr + row + n0, acc0, mask=keep & (n0 < N))
        tl.atomic_add(y_ptr + row + n0 + 1, acc1, mask=keep & (n0 + 1 < N))
        tl.atomic_add(y_ptr + row + n0 + 2, acc2, mask=keep & (n0 + 2 < N))
        tl.atomic_add(y_ptr + row + n0 + 3, acc3, mask=keep & (n0 + 3 < N))
    else:
        tl.store(y_ptr + row + n0, cast_for(acc0, y_ptr), mask=keep & (n0 < N))
        tl.store(y_ptr + row + n0 + 1, cast_for(acc1, y_ptr), mask=keep & (n0 + 1 < N))
        tl.store(y_ptr + row + n0 + 2, cast_for(acc2, y_ptr), mask=keep & (n0 + 2 < N))
        tl.store(y_ptr + row + n0 + 3, cast_for(acc3, y_ptr), mask=keep & (n0 + 3 < N))


def _default_split(n_programs: int, k_in: int, block_k: int, device: torch.device) -> int:
    if device.type != "cuda":
        return 1
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    # about four programs per SM hide the load latency; never split below one K block
    return max(1, min(triton.cdiv(4 * sms, max(n_programs, 1)), triton.cdiv(k_in, block_k)))


def ternary_gemv(
    x: torch.Tensor,
    packed: torch.Tensor,
    alpha: torch.Tensor | float,
    n_out: int,
    x_scale: torch.Tensor | None = None,
    *,
    accumulate_only: bool = False,
    split_k: int | None = None,
    block_k: int | None = None,
    block_j: int | None = None,
    block_m: int | None = None,
) -> torch.Tensor:
    """``y = x · (unpack(packed)·α)ᵀ`` reading only the packed rows of channels non-zero in the batch.

    ``x``: ``[..., K]`` float (result in x's dtype) or int8 with ``x_scale`` ``[..., 1]`` (result
    fp32, ``acc / x_scale · α``). ``accumulate_only`` returns the raw fp32 accumulator ``x · W_qᵀ``
    (integer-valued for int8 x). Tokens are tiled by ``block_m`` (16 up to 16 tokens, 64 for a
    prefill), the union of kept channels taken per tile.
    """
    if packed.dtype != torch.uint8 or packed.dim() != 2:
        raise ValueError(f"ternary_gemv: expected a 2-D uint8 packed weight, got {packed.dtype} {tuple(packed.shape)}")
    k_in, n_bytes = packed.shape
    if not (n_bytes - 1) * 4 < n_out <= n_bytes * 4:
        raise ValueError(f"ternary_gemv: n_out={n_out} does not fit {n_bytes} bytes per input channel")
    if x.shape[-1] != k_in:
        raise ValueError(f"ternary_gemv: x has {x.shape[-1]} channels, the weight {k_in}")
    int8 = x.dtype == torch.int8
    if int8 != (x_scale is not None) and not (int8 and accumulate_only):
        raise ValueError("ternary_gemv: int8 activations need x_scale, float activations take none")
    if not int8 and x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"ternary_gemv: unsupported activation dtype {x.dtype}")
    if int8 and k_in * 128 > 2**24:
        raise ValueError(f"ternary_gemv: fp32 accumulation of int8 is exact only up to 131072 channels, got {k_in}")
    if x.device != packed.device:
        raise ValueError("ternary_gemv: x and the packed weight are on different devices")

    lead = x.shape[:-1]
    x2 = x.reshape(-1, k_in).contiguous()
    batch = x2.shape[0]
    b_pad = block_m or (1 if batch == 1 else MAX_BATCH_TILE if batch <= MAX_BATCH_TILE else 64)
    if b_pad & (b_pad - 1) or (b_pad > 1 and b_pad < 16):
        raise ValueError(f"ternary_gemv: block_m must be 1 or a power of two of at least 16, got {b_pad}")
    use_dot = b_pad > 1
    fp32_dot = use_dot and x.dtype == torch.float32
    # register budgets checked on sm_90 builds: fp32 (FMA) dots and 64-token tiles want 8 warps
    block_k = block_k or (32 if fp32_dot else 64)
    num_warps = 8 if (b_pad >= 64 or fp32_dot) else 4
    block_j = block_j or 32
    if use_dot and (block_k < 16 or block_j < 16):
        raise ValueError("ternary_gemv: tl.dot needs block_k and block_j of at least 16")
    n_tiles = triton.cdiv(n_bytes, block_j)
    b_tiles = triton.cdiv(batch, b_pad)
    split = split_k or _default_split(n_tiles * b_tiles, k_in, block_k, x.device)
    k_per_split = triton.cdiv(triton.cdiv(k_in, split), block_k) * block_k
    split = triton.cdiv(k_in, k_per_split)
    atomic = split > 1

    out_dtype = torch.float32 if (int8 or accumulate_only or atomic) else x.dtype
    y = (torch.zeros if atomic else torch.empty)(batch, n_out, dtype=out_dtype, device=x.device)
    alpha_t = torch.as_tensor(alpha, dtype=torch.float32, device=x.device).reshape(1)
    scale_t = x_scale.reshape(batch).to(torch.float32).contiguous() if x_scale is not None else alpha_t
    if batch and n_out and k_in:
        _ternary_gemv_kernel[(n_tiles, split, b_tiles)](
            x2,
            packed.contiguous(),
            y,
            alpha_t,
            scale_t,
            batch,
            k_in,
            n_out,
            n_bytes,
            x2.stride(0),
            k_per_split,
            B_PAD=b_pad,
            BLOCK_K=block_k,
            BLOCK_J=block_j,
            USE_DOT=use_dot,
            INT8=int8,
            SCALE=not accumulate_only,
            ATOMIC=atomic,
            HALF_AS_FP32=INTERPRET,
            num_warps=num_warps,
        )
    elif not k_in:
        y.zero_()
    if not (int8 or accumulate_only):
        y = y.to(x.dtype)
    return y.reshape(*lead, n_out)
