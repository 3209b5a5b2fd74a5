"""``@triton.jit`` helpers and launch heuristics that several ops' Triton kernels share: BitNet
b1.58's per-token absmax int8 rule (Ma et al., arXiv 2402.17764), which the quantiser and Q-Sparse's
fused top-K + int8 kernel (Wang et al., arXiv 2407.10969) both apply, a dtype-exact store, and the
row tiling of the row-wise kernels.

Why here: they were written in ``quant/_triton.py`` and imported from it by the top-K and ternary
matmul kernels, so a private module of one op was another op's dependency. Here they belong to
zoo.kernels as a whole, and each op's ``_triton.py`` imports them from one place.

Bit-exactness with the torch reference needs two things a plain port would get wrong on a GPU:
Triton's ``/`` is an approximate division (``div.full.f32``), so divisions use ``div_rn``; and
``ptxas`` fuses a multiply feeding an add into an FMA, which would change where ``x·s`` rounds,
so rounding goes through a clamp first (a min/max cannot be fused into the product).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def round_half_even(v):
    """``torch.round`` for fp32 ``v`` with ``|v| < 2**22`` (callers clamp first)."""
    t = v.to(tl.int32)  # truncates towards zero
    frac = v - t.to(tl.float32)  # exact for |v| < 2**23
    odd = (t % 2) != 0
    up = (frac > 0.5) | ((frac == 0.5) & odd)
    down = (frac < -0.5) | ((frac == -0.5) & odd)
    return (t + up.to(tl.int32) - down.to(tl.int32)).to(tl.float32)


@triton.jit
def int8_scale(absmax):
    """``127 / max(absmax, eps)`` rounded as torch rounds it."""
    # torch evaluates ``127.0 / tensor`` as ``tensor.reciprocal() * 127``: two roundings, kept here.
    return tl.math.div_rn(tl.full(absmax.shape, 1.0, tl.float32), tl.maximum(absmax, 1e-5)) * 127.0


@triton.jit
def int8_values(x32, scale):
    """Integer-valued fp32 ``RoundClip(x·s, −128, 127)``; ``scale`` broadcasts over the row."""
    return round_half_even(tl.minimum(tl.maximum(x32 * scale, -128.0), 127.0))


@triton.jit
def cast_for(v, ptr):
    """fp32 ``v`` → the element type of ``ptr``, rounding to nearest even, compiled or interpreted."""
    # The interpreter truncates fp32 → bf16, so bf16 is rounded by hand on the bit pattern.
    if ptr.dtype.element_ty == tl.bfloat16:
        bits = v.to(tl.int32, bitcast=True)
        bits = bits + 0x7FFF + ((bits >> 16) & 1)
        return (bits >> 16).to(tl.int16).to(tl.bfloat16, bitcast=True)
    else:
        return v.to(ptr.dtype.element_ty)


def row_tiling(d: int) -> tuple[int, int, int]:
    """(rows per program, padded row width, num_warps) for row-wise kernels over ``d`` channels."""
    block_d = triton.next_power_of_2(max(d, 1))
    rows_per_program = max(1, min(64, 2048 // block_d))
    elements = rows_per_program * block_d
    num_warps = 4 if elements <= 2048 else 8 if elements <= 8192 else 16
    return rows_per_program, block_d, num_warps
