"""Triton kernels for the BitNet b1.58 quantisers (Ma et al., arXiv 2402.17764).

* per-token absmax int8: one program per tile of rows, absmax, scale ``127/max|x|`` and the
  rounded values in a single pass over the row;
* absmean ternary: ``α = mean|W|`` is reduced by torch (so it is bit-identical to the reference,
  a float sum depends on its order), the kernel does ``RoundClip(W/α, −1, 1)`` and ``W_q·α``.

Bit-exactness with the torch reference: divisions are correctly rounded (``div_rn``) and the
rounding goes through a clamp so no FMA can move it; the int8 rule's jit helpers, shared with the
top-K kernels, are in ``zoo.kernels._triton_helpers``, which says why.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from zoo.kernels._triton_helpers import cast_for, int8_scale, int8_values, row_tiling

_MAX_BLOCK_D = 1 << 16


@triton.jit
def _int8_rows_kernel(
    x_ptr,
    q_ptr,
    fake_ptr,
    scale_ptr,
    n_rows,
    D,
    stride_x,
    R: tl.constexpr,
    BLOCK_D: tl.constexpr,
    WRITE_Q: tl.constexpr,
    WRITE_FAKE: tl.constexpr,
):
    rows = tl.program_id(0) * R + tl.arange(0, R)
    cols = tl.arange(0, BLOCK_D)
    inside = (rows[:, None] < n_rows) & (cols[None, :] < D)
    x = tl.load(x_ptr + rows[:, None].to(tl.int64) * stride_x + cols[None, :], mask=inside, other=0.0).to(tl.float32)
    scale = int8_scale(tl.max(tl.abs(x), axis=1))
    q = int8_values(x, scale[:, None])
    offsets = rows[:, None].to(tl.int64) * D + cols[None, :]
    if WRITE_Q:
        tl.store(q_ptr + offsets, q.to(tl.int8), mask=inside)
    if WRITE_FAKE:
        fake = tl.math.div_rn(q, tl.broadcast_to(scale[:, None], q.shape))
        tl.store(fake_ptr + offsets, cast_for(fake, fake_ptr), mask=inside)
    tl.store(scale_ptr + rows, scale, mask=rows < n_rows)


@triton.jit
def _ternary_kernel(
    w_ptr,
    alpha_ptr,
    q_ptr,
    fake_ptr,
    per_slice,
    BLOCK: tl.constexpr,
    WRITE_Q: tl.constexpr,
    WRITE_FAKE: tl.constexpr,
):
    # grid (blocks per slice, slices): one α per slice (per tensor: a single slice)
    s = tl.program_id(1)
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < per_slice
    ptrs = s.to(tl.int64) * per_slice + offs
    w = tl.load(w_ptr + ptrs, mask=inside, other=0.0).to(tl.float32)
    alpha = tl.load(alpha_ptr + s)
    v = tl.math.div_rn(w, tl.full(w.shape, 1.0, tl.float32) * alpha)
    # RoundClip(v, -1, 1) with ties to even is just: |v| > 0.5 keeps the sign
    q = tl.where(v > 0.5, 1.0, tl.where(v < -0.5, -1.0, 0.0))
    if WRITE_Q:
        tl.store(q_ptr + ptrs, q.to(tl.int8), mask=inside)
    if WRITE_FAKE:
        tl.store(fake_ptr + ptrs, cast_for(q * alpha, fake_ptr), mask=inside)


def _rows(x: torch.Tensor, op: str) -> torch.Tensor:
    if x.dim() == 0:
        raise ValueError(f"{op}: expected at least one dimension, got a scalar")
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"{op}: expected a float32/float16/bfloat16 tensor, got {x.dtype}")
    if x.shape[-1] > _MAX_BLOCK_D:
        raise ValueError(f"{op}: rows of more than {_MAX_BLOCK_D} channels are not supported, got {x.shape[-1]}")
    return x.reshape(-1, x.shape[-1]).contiguous()


def int8_rows(x: torch.Tensor, *, want_q: bool, want_fake: bool):
    """Per-row absmax int8: returns (int8 values or None, fake-quantised x or None, fp32 scale ``[..., 1]``)."""
    x2 = _rows(x, "int8_quantize")
    n_rows, d = x2.shape
    q = torch.empty(x2.shape, dtype=torch.int8, device=x.device) if want_q else None
    fake = torch.empty(x2.shape, dtype=x.dtype, device=x.device) if want_fake else None
    scale = torch.empty(n_rows, dtype=torch.float32, device=x.device)
    if n_rows:
        r, block_d, num_warps = row_tiling(d)
        _int8_rows_kernel[(triton.cdiv(n_rows, r),)](
            x2,
            q if want_q else scale,
            fake if want_fake else scale,
            scale,
            n_rows,
            d,
            x2.stride(0),
            R=r,
            BLOCK_D=block_d,
            WRITE_Q=want_q,
            WRITE_FAKE=want_fake,
            num_warps=num_warps,
        )
    shape = x.shape
    return (
        q.reshape(shape) if want_q else None,
        fake.reshape(shape) if want_fake else None,
        scale.reshape(*shape[:-1], 1),
    )


def ternary(w: torch.Tensor, alpha: torch.Tensor, *, want_q: bool, want_fake: bool):
    """``RoundClip(W/α, −1, 1)`` as int8 and/or ``W_q·α`` in w's dtype; α holds one value per leading slice."""
    if w.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"ternary_quantize: expected a float weight, got {w.dtype}")
    w = w.contiguous()
    slices = alpha.numel()
    if w.numel() % max(slices, 1):
        raise ValueError(f"ternary_quantize: {slices} scales do not divide a weight of {w.numel()} elements")
    per_slice = w.numel() // slices
    alpha = alpha.reshape(slices).to(torch.float32).contiguous()
    q = torch.empty(w.shape, dtype=torch.int8, device=w.device) if want_q else None
    fake = torch.empty_like(w) if want_fake else None
    if w.numel():
        block = 1024
        _ternary_kernel[(triton.cdiv(per_slice, block), slices)](
            w,
            alpha,
            q if want_q else alpha,
            fake if want_fake else alpha,
            per_slice,
            BLOCK=block,
            WRITE_Q=want_q,
            WRITE_FAKE=want_fake,
            num_warps=4,
        )
    return q, fake
