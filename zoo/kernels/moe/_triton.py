"""Triton kernels of dropless MoE (MegaBlocks, Gale et al., arXiv 2211.15841): the gather into
expert order, the weighted combine back to token order, and the grouped expert matmul.

Rows arrive sorted by expert (``permute``); each matmul program multiplies one tile of one expert's
contiguous slice by that expert's weight, so no tile ever mixes experts and nothing is padded or
dropped. The tile schedule (expert, first row, last row) is built on the host from the counts,
the same single device-to-host copy the loop reference makes.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_M, BLOCK_N, BLOCK_K = 16, 32, 32


@triton.jit
def _grouped_linear_kernel(
    x_ptr,
    w_ptr,
    y_ptr,
    tile_expert_ptr,
    tile_start_ptr,
    tile_end_ptr,
    N,
    K,
    stride_xm,
    stride_xk,
    stride_we,
    stride_wn,
    stride_wk,
    stride_ym,
    stride_yn,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    tile = tl.program_id(0)
    expert = tl.load(tile_expert_ptr + tile)
    start = tl.load(tile_start_ptr + tile)
    end = tl.load(tile_end_ptr + tile)
    rows = start + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + rows[:, None] * stride_xm + ks[None, :] * stride_xk, mask=(rows[:, None] < end) & (ks[None, :] < K), other=0.0)
        w = tl.load(
            w_ptr + expert * stride_we + cols[None, :] * stride_wn + ks[:, None] * stride_wk,
            mask=(cols[None, :] < N) & (ks[:, None] < K),
            other=0.0,
        )
        # fp32 operands: the interpreter multiplies bf16 bit patterns wrongly, and fp32 accumulation is the spec.
        acc += tl.dot(x.to(tl.float32), w.to(tl.float32), allow_tf32=False)
    tl.store(
        y_ptr + rows[:, None] * stride_ym + cols[None, :] * stride_yn,
        acc.to(y_ptr.dtype.element_ty),
        mask=(rows[:, None] < end) & (cols[None, :] < N),
    )


def tile_schedule(sizes: list[int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(expert, first row, end row) of every ``BLOCK_M``-row tile; empty experts get no tile."""
    experts, starts, ends = [], [], []
    begin = 0
    for expert, count in enumerate(sizes):
        for first in range(begin, begin + count, BLOCK_M):
            experts.append(expert)
            starts.append(first)
            ends.append(begin + count)
        begin += count
    as_tensor = lambda values: torch.tensor(values, dtype=torch.int32, device=device)  # noqa: E731
    return as_tensor(experts), as_tensor(starts), as_tensor(ends)


def grouped_linear(x: torch.Tensor, weight: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """``x[slice_e] · weight[e]ᵀ`` for expert-sorted rows ``x [M, K]``, ``weight [E, N, K]``."""
    if x.dim() != 2 or weight.dim() != 3 or x.shape[1] != weight.shape[2] or len(sizes) != weight.shape[0]:
        raise ValueError(f"grouped_linear: x {tuple(x.shape)}, weight {tuple(weight.shape)} and {len(sizes)} sizes do not fit")
    if sum(sizes) != x.shape[0]:
        raise ValueError(f"grouped_linear: sizes sum to {sum(sizes)}, x has {x.shape[0]} rows")
    n_out = weight.shape[1]
    y = torch.empty(x.shape[0], n_out, device=x.device, dtype=x.dtype)
    tile_expert, tile_start, tile_end = tile_schedule(sizes, x.device)
    if tile_expert.numel() == 0:
        return y
    grid = (tile_expert.numel(), triton.cdiv(n_out, BLOCK_N))
    _grouped_linear_kernel[grid](
        x,
        weight,
        y,
        tile_expert,
        tile_start,
        tile_end,
        n_out,
        x.shape[1],
        x.stride(0),
        x.stride(1),
        weight.stride(0),
        weight.stride(1),
        weight.stride(2),
        y.stride(0),
        y.stride(1),
        BLOCK_M=BLOCK_M,
        BLOCK_N=BLOCK_N,
        BLOCK_K=BLOCK_K,
    )
    return y


@triton.jit
def _gather_rows_kernel(x_ptr, src_ptr, out_ptr, M, D, stride_x, stride_out, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    src = tl.load(src_ptr + rows, mask=rows < M, other=0)
    mask = (rows[:, None] < M) & (cols[None, :] < D)
    values = tl.load(x_ptr + src[:, None] * stride_x + cols[None, :], mask=mask, other=0.0)
    tl.store(out_ptr + rows[:, None] * stride_out + cols[None, :], values, mask=mask)


@triton.jit
def _combine_kernel(
    y_ptr, pos_ptr, w_ptr, out_ptr, T, D, stride_y, stride_out, TOP_K: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr
):
    tokens = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask = (tokens[:, None] < T) & (cols[None, :] < D)
    acc = tl.zeros((BLOCK_T, BLOCK_D), dtype=tl.float32)
    # Each token sums its k rows itself: no atomics, and the order of the sum is fixed.
    for j in range(TOP_K):
        pos = tl.load(pos_ptr + tokens * TOP_K + j, mask=tokens < T, other=0)
        weight = tl.load(w_ptr + tokens * TOP_K + j, mask=tokens < T, other=0.0)
        rows = tl.load(y_ptr + pos[:, None] * stride_y + cols[None, :], mask=mask, other=0.0)
        acc += rows.to(tl.float32) * weight[:, None]
    tl.store(out_ptr + tokens[:, None] * stride_out + cols[None, :], acc.to(out_ptr.dtype.element_ty), mask=mask)


def gather_rows(x: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """``x[src]`` for a 2-D ``x`` (the permutation into expert order)."""
    x = x.contiguous()
    out = torch.empty(src.numel(), x.shape[1], device=x.device, dtype=x.dtype)
    if src.numel():
        grid = (triton.cdiv(src.numel(), BLOCK_M), triton.cdiv(x.shape[1], BLOCK_N))
        _gather_rows_kernel[grid](
            x, src.contiguous(), out, src.numel(), x.shape[1], x.stride(0), out.stride(0), BLOCK_M=BLOCK_M, BLOCK_D=BLOCK_N
        )
    return out


def combine(y_sorted: torch.Tensor, positions: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``out[t] = Σ_j weights[t, j] · y_sorted[positions[t, j]]`` accumulated in fp32."""
    n_tokens, top_k = weights.shape
    y_sorted = y_sorted.contiguous()
    out = torch.empty(n_tokens, y_sorted.shape[1], device=y_sorted.device, dtype=y_sorted.dtype)
    if n_tokens:
        grid = (triton.cdiv(n_tokens, BLOCK_M), triton.cdiv(y_sorted.shape[1], BLOCK_N))
        _combine_kernel[grid](
            y_sorted,
            positions.contiguous(),
            weights.float().contiguous(),
            out,
            n_tokens,
            y_sorted.shape[1],
            y_sorted.stride(0),
            out.stride(0),
            TOP_K=top_k,
            BLOCK_T=BLOCK_M,
            BLOCK_D=BLOCK_N,
        )
    return out
