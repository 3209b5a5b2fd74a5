"""2-bit packing of ternary weights along the output dimension (BitNet b1.58, arXiv 2402.17764)."""

from __future__ import annotations

import torch

from zoo.kernels._dispatch import resolve_impl
from zoo.kernels.pack import reference

HAS_TRITON = True


def _triton_path(impl: str, x: torch.Tensor, op: str) -> bool:
    return resolve_impl(impl, x, op=op, has_triton=HAS_TRITON) == "triton"


def _check_ternary(values: torch.Tensor) -> None:
    if values.dim() != 2:
        raise ValueError(f"pack_ternary: expected a 2-D [out, in] weight, got shape {tuple(values.shape)}")
    if not bool(((values == -1) | (values == 0) | (values == 1)).all()):
        raise ValueError("pack_ternary: values must all be in {-1, 0, 1}")


def _check_packed(packed: torch.Tensor, n_out: int) -> None:
    if packed.dtype != torch.uint8 or packed.dim() != 2:
        raise ValueError(f"unpack_ternary: expected a 2-D uint8 tensor, got {packed.dtype} {tuple(packed.shape)}")
    n_bytes = packed.shape[1]
    if not (n_bytes - 1) * 4 < n_out <= n_bytes * 4:
        raise ValueError(f"unpack_ternary: n_out={n_out} does not fit {n_bytes} bytes per input channel")


def pack_ternary(values: torch.Tensor, *, impl: str = "auto") -> torch.Tensor:
    """``[N, K]`` ternary (any integer or float dtype) → ``[K, ceil(N/4)]`` uint8, packed along N."""
    if _triton_path(impl, values, "pack_ternary"):
        from zoo.kernels.pack import _triton

        _check_ternary(values)
        return _triton.pack(values)
    return reference.pack_ternary(values)


def unpack_ternary(packed: torch.Tensor, n_out: int, *, impl: str = "auto") -> torch.Tensor:
    """Inverse of :func:`pack_ternary`: ``[K, ceil(N/4)]`` uint8 → ``[n_out, K]`` int8."""
    if _triton_path(impl, packed, "unpack_ternary"):
        from zoo.kernels.pack import _triton

        _check_packed(packed, n_out)
        return _triton.unpack(packed, n_out)
    return reference.unpack_ternary(packed, n_out)


def quantize_pack_ternary(w: torch.Tensor, *, impl: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Absmean-ternarise a float ``[N, K]`` weight (one α per tensor) and pack it: ``(packed, α)``.

    Equals ``pack_ternary(ternary_quantize_raw(w)[0])`` byte for byte; the Triton path does both
    in one pass over the weight.
    """
    from zoo.kernels.quant.reference import absmean_scale, ternary_quantize_raw

    if w.dim() != 2:
        raise ValueError(f"quantize_pack_ternary: expected a 2-D [out, in] weight, got shape {tuple(w.shape)}")
    if _triton_path(impl, w, "quantize_pack_ternary"):
        from zoo.kernels.pack import _triton

        alpha = absmean_scale(w)
        return _triton.quantize_pack(w.detach(), alpha), alpha
    values, alpha = ternary_quantize_raw(w)
    return reference.pack_ternary(values), alpha


def tile_ternary(packed: torch.Tensor) -> torch.Tensor:
    """The decoding layout of a packed weight (``[K, nb]`` → ``[ceil(nb/32), K, 32]``, tiles of 128
    outputs; ``zoo/kernels/compiled/ternary_tiles.c`` says why), the form the inference layers
    hold. A byte permutation, exact; through the compiled kernel where it runs, else torch."""
    from zoo.kernels import compiled

    if packed.device.type == "cpu" and compiled.available():
        return compiled.ternary_tiles(packed)
    return reference.tile_packed(packed)


def untile_ternary(tiles: torch.Tensor, n_out: int) -> torch.Tensor:
    """Inverse of :func:`tile_ternary` for a weight of ``n_out`` outputs: back to ``[K, ceil(n_out/4)]``."""
    return reference.untile_packed(tiles, -(-n_out // 4))


__all__ = ["pack_ternary", "quantize_pack_ternary", "tile_ternary", "unpack_ternary", "untile_ternary"]
