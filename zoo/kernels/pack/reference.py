"""2-bit packing of BitNet b1.58 ternary weights (arXiv 2402.17764), laid out for sparse inputs.

A weight ``W[N_out, K_in]`` with values in {-1, 0, 1} is stored as codes ``w + 1`` in {0, 1, 2},
four per byte. Unlike bitnet.cpp's I2_S (which packs along the input dimension), we pack along
the **output** dimension and store one row of bytes per input channel: ``packed[k, j]`` holds
outputs ``4j..4j+3`` of input channel ``k`` in bits ``2(n % 4)``. A GEMV whose input has zeros
(Q-Sparse) then reads only the contiguous byte rows of the kept channels.
"""

from __future__ import annotations

import torch

_SHIFTS = torch.tensor([0, 2, 4, 6], dtype=torch.uint8)


def pack_ternary(values: torch.Tensor) -> torch.Tensor:
    """``[N, K]`` ternary (any integer or float dtype) → ``[K, ceil(N/4)]`` uint8."""
    if values.dim() != 2:
        raise ValueError(f"pack_ternary: expected a 2-D [out, in] weight, got shape {tuple(values.shape)}")
    if not bool(((values == -1) | (values == 0) | (values == 1)).all()):
        raise ValueError("pack_ternary: values must all be in {-1, 0, 1}")
    n_out, k_in = values.shape
    padded_out = -(-n_out // 4) * 4
    codes = torch.ones(padded_out, k_in, dtype=torch.uint8, device=values.device)
    codes[:n_out] = (values + 1).to(torch.uint8)
    # [K, N/4, 4]: the four outputs sharing a byte sit on the last axis.
    quads = codes.t().reshape(k_in, padded_out // 4, 4)
    return (quads << _SHIFTS.to(values.device)).sum(dim=-1, dtype=torch.uint8)


def unpack_ternary(packed: torch.Tensor, n_out: int) -> torch.Tensor:
    """Inverse of :func:`pack_ternary`: ``[K, ceil(N/4)]`` uint8 → ``[n_out, K]`` int8."""
    if packed.dtype != torch.uint8 or packed.dim() != 2:
        raise ValueError(f"unpack_ternary: expected a 2-D uint8 tensor, got {packed.dtype} {tuple(packed.shape)}")
    k_in, n_bytes = packed.shape
    if not (n_bytes - 1) * 4 < n_out <= n_bytes * 4:
        raise ValueError(f"unpack_ternary: n_out={n_out} does not fit {n_bytes} bytes per input channel")
    codes = (packed.unsqueeze(-1) >> _SHIFTS.to(packed.device)) & 3
    return (codes.reshape(k_in, n_bytes * 4)[:, :n_out].t().to(torch.int8) - 1).contiguous()


TILE = 128  # outputs per tile of the decoding layout


def _tile_byte(o: int) -> int:
    half, lane = (o // 16) % 2, o % 16
    return (lane if lane < 8 else lane + 8) + 8 * half


def tile_packed(packed: torch.Tensor) -> torch.Tensor:
    """The compiled decoding GEMV's layout of ``packed`` (``[K, nb]``): tiles of 128 outputs,
    ``[ceil(nb/32), K, 32]``, output ``o`` of a tile in bit pair ``o // 32`` of byte
    ``(e if e < 8 else e + 8) + 8 h`` (``h = (o // 16) % 2``, ``e = o % 16``), outputs past
    ``4 nb`` a zero weight (code 1). The torch reference of ``zoo_ternary_tile``."""
    if packed.dtype != torch.uint8 or packed.dim() != 2:
        raise ValueError(f"tile_packed: expected a 2-D uint8 tensor, got {packed.dtype} {tuple(packed.shape)}")
    k_in, n_bytes = packed.shape
    n_tiles = -(-n_bytes // 32)
    codes = torch.ones(k_in, n_tiles * TILE, dtype=torch.uint8)
    codes[:, : 4 * n_bytes] = ((packed.unsqueeze(-1) >> _SHIFTS) & 3).reshape(k_in, 4 * n_bytes)
    # output_at[b, i]: the output whose code is bit pair i of byte b
    output_at = torch.empty(32, 4, dtype=torch.long)
    for o in range(TILE):
        output_at[_tile_byte(o), o // 32] = o
    per_tile = codes.reshape(k_in, n_tiles, TILE).transpose(0, 1)  # [T, K, 128]
    return (per_tile[:, :, output_at] << _SHIFTS).sum(dim=-1, dtype=torch.uint8).contiguous()


def untile_packed(tiles: torch.Tensor, n_bytes: int) -> torch.Tensor:
    """Inverse of :func:`tile_packed`: the tiled layout ``[ceil(nb/32), K, 32]`` back to the
    canonical ``[K, nb]`` (the padding outputs dropped)."""
    if tiles.dtype != torch.uint8 or tiles.dim() != 3 or tiles.shape[2] != 32 or tiles.shape[0] != -(-n_bytes // 32):
        raise ValueError(f"untile_packed: expected uint8 tiles [ceil({n_bytes}/32), K, 32], got {tiles.dtype} {tuple(tiles.shape)}")
    n_tiles, k_in = tiles.shape[0], tiles.shape[1]
    byte_of = torch.tensor([_tile_byte(o) for o in range(TILE)], device=tiles.device)
    pair_of = torch.arange(TILE, device=tiles.device) // 32
    codes = (tiles[:, :, byte_of] >> (2 * pair_of).to(torch.uint8)) & 3  # [T, K, 128], output order
    codes = codes.transpose(0, 1).reshape(k_in, n_tiles * TILE)[:, : 4 * n_bytes].reshape(k_in, n_bytes, 4)
    return (codes << _SHIFTS.to(tiles.device)).sum(dim=-1, dtype=torch.uint8).contiguous()
