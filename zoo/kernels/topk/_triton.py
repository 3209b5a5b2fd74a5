"""Triton kernels for Q-Sparse top-K activation sparsity (Wang et al., arXiv 2407.10969).

One program owns a tile of whole rows (a token's channels, or one N:M block each), so the mask
needs no second pass over memory. The K-th largest magnitude is found exactly by a radix search
over the fp32 bit pattern of |x|: for non-negative floats the integer order of the bits is the
numeric order, so 31 "how many are ≥ this prefix?" counts fix the threshold bit by bit. Ties
at the threshold are then resolved with a running count so the lower channel index wins, which
reproduces ``reference.topk_mask`` bit for bit.

The int8 variant (Q-Sparse with quantised activations) takes the row absmax in the same pass:
the row maximum is always kept, so the scale before and after masking is the same.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from zoo.kernels._triton_helpers import cast_for, int8_scale, int8_values, row_tiling

_MAX_BLOCK_D = 1 << 16


@triton.jit
def _topk_keep(bits, K, LOW_BIT: tl.constexpr):
    """Boolean keep-mask of a [R, BLOCK_D] tile of |x| bit patterns (padding lanes hold -1)."""
    # threshold[r] = largest t with #(bits >= t) >= K: the K-th largest magnitude of row r.
    threshold = tl.zeros([bits.shape[0]], dtype=tl.int32)
    for i in range(0, 31 - LOW_BIT):
        candidate = threshold | (1 << (30 - i))
        count = tl.sum((bits >= candidate[:, None]).to(tl.int32), axis=1)
        threshold = tl.where(count >= K, candidate, threshold)
    above = bits > threshold[:, None]
    tied = bits == threshold[:, None]
    slots = K - tl.sum(above.to(tl.int32), axis=1)
    first_tied = tl.cumsum(tied.to(tl.int32), axis=1) <= slots[:, None]
    return above | (tied & first_tied)


@triton.jit
def _topk_rows_kernel(
    x_ptr,
    out_ptr,
    q_ptr,
    scale_ptr,
    mask_ptr,
    n_rows,
    D,
    K,
    R: tl.constexpr,
    BLOCK_D: tl.constexpr,
    LOW_BIT: tl.constexpr,
    QUANT: tl.constexpr,
    WRITE_OUT: tl.constexpr,
    WRITE_Q: tl.constexpr,
    WRITE_MASK: tl.constexpr,
):
    rows = tl.program_id(0) * R + tl.arange(0, R)
    cols = tl.arange(0, BLOCK_D)
    inside = (rows[:, None] < n_rows) & (cols[None, :] < D)
    offsets = rows[:, None].to(tl.int64) * D + cols[None, :]
    x = tl.load(x_ptr + offsets, mask=inside, other=0.0)
    x32 = x.to(tl.float32)
    bits = tl.where(inside, x32.to(tl.int32, bitcast=True) & 0x7FFFFFFF, -1)
    keep = _topk_keep(bits, K, LOW_BIT)
    if QUANT:
        scale = int8_scale(tl.max(tl.abs(x32), axis=1))
        q = tl.where(keep, int8_values(x32, scale[:, None]), 0.0)
        if WRITE_Q:
            tl.store(q_ptr + offsets, q.to(tl.int8), mask=inside)
        if WRITE_OUT:
            fake = tl.math.div_rn(q, tl.broadcast_to(scale[:, None], q.shape))
            tl.store(out_ptr + offsets, cast_for(fake, out_ptr), mask=inside)
        tl.store(scale_ptr + rows, scale, mask=rows < n_rows)
    else:
        if WRITE_OUT:
            tl.store(out_ptr + offsets, tl.where(keep, x, 0.0).to(out_ptr.dtype.element_ty), mask=inside)
    if WRITE_MASK:
        tl.store(mask_ptr + offsets, keep.to(tl.int8), mask=inside)


def _low_bit(dtype: torch.dtype) -> int:
    # fp32 bits below a narrower format's mantissa are always zero: no need to search them
    return {torch.bfloat16: 16, torch.float16: 13}.get(dtype, 0)


def topk_rows(
    x: torch.Tensor,
    k: int,
    width: int | None = None,
    *,
    quant: bool = False,
    want_out: bool = True,
    want_q: bool = False,
    want_mask: bool = False,
):
    """Top-``k`` of every run of ``width`` channels (default: the whole last dim).

    Returns ``(out, q, scale, mask)`` in x's shape (``scale``: ``[..., 1]`` fp32), with None for
    what was not asked for. ``out`` is ``x ⊙ M``, or ``(Q(x) ⊙ M)/s`` when ``quant``.
    """
    if x.dim() == 0:
        raise ValueError("topk: expected at least one dimension, got a scalar")
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"topk: expected a float32/float16/bfloat16 tensor, got {x.dtype}")
    d = x.shape[-1]
    width = d if width is None else width
    if width < 1 or d % width:
        raise ValueError(f"topk: rows of {width} channels must divide the {d} channels")
    if not 1 <= k <= width:
        raise ValueError(f"topk: k must be in [1, {width}] for rows of {width} channels, got {k}")
    if width > _MAX_BLOCK_D:
        raise ValueError(f"topk: rows of more than {_MAX_BLOCK_D} channels are not supported, got {width}")
    if quant and width != d:
        raise ValueError("topk: the fused int8 variant works per token (width == last dim)")
    rows = x.contiguous().view(-1, width)
    n_rows = rows.shape[0]
    device = x.device
    out = torch.empty(rows.shape, dtype=x.dtype, device=device) if want_out else None
    q = torch.empty(rows.shape, dtype=torch.int8, device=device) if want_q else None
    mask = torch.empty(rows.shape, dtype=torch.int8, device=device) if want_mask else None
    scale = torch.empty(n_rows, dtype=torch.float32, device=device) if quant else None
    if n_rows:
        r, block_d, num_warps = row_tiling(width)
        dummy = rows
        _topk_rows_kernel[(triton.cdiv(n_rows, r),)](
            rows,
            dummy if out is None else out,
            dummy if q is None else q,
            dummy if scale is None else scale,
            dummy if mask is None else mask,
            n_rows,
            width,
            k,
            R=r,
            BLOCK_D=block_d,
            LOW_BIT=_low_bit(x.dtype),
            QUANT=quant,
            WRITE_OUT=want_out,
            WRITE_Q=want_q,
            WRITE_MASK=want_mask,
            num_warps=num_warps,
        )
    shape = x.shape
    return (
        out.view(shape) if out is not None else None,
        q.view(shape) if q is not None else None,
        scale.view(*shape[:-1], 1) if scale is not None else None,
        mask.view(torch.bool).view(shape) if mask is not None else None,
    )
