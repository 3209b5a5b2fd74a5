"""Ternary weights stored as 2 bits each (BitNet b1.58, arXiv 2402.17764) in release files.

A ternary projection's latent weight ``W`` is stored as its packed ``{-1, 0, 1}`` pattern
(``<name>.weight_packed``, uint8, packed along the output dimension, see
:mod:`zoo.kernels.pack`) and its absmean scale (``<name>.weight_scale``, fp32, one per tensor or per
expert). On loading, the latent weight is rebuilt as ``pattern · α / f`` where ``f`` is the
pattern's non-zero fraction: its absmean is then α again, so re-quantising it gives back exactly
the pattern and (to an ulp) the scale, and the model computes what it computed when it was saved.
The dense latent weights (needed only to keep training) are not kept.
"""

from __future__ import annotations

import torch
from torch import nn

from zoo.kernels import pack_ternary, ternary_quantize_raw, unpack_ternary
from zoo.models.linear import SparseProjection

PACKED, SCALE = ".weight_packed", ".weight_scale"


def ternary_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Modules whose ``weight`` is ternarised in the forward (ZooLinear ``[out, in]``, expert banks ``[E, out, in]``)."""
    return {
        name: module for name, module in model.named_modules() if isinstance(module, SparseProjection) and module.weight_quant == "ternary"
    }


def pack_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with every ternary weight replaced by its packed pattern and scale."""
    state = dict(model.state_dict())
    for name, _module in ternary_modules(model).items():
        weight = state.pop(f"{name}.weight")
        per_expert = weight.dim() == 3
        values, alpha = ternary_quantize_raw(weight, per_leading_dim=per_expert)
        packed = torch.stack([pack_ternary(v) for v in values]) if per_expert else pack_ternary(values)
        state[name + PACKED] = packed
        state[name + SCALE] = alpha.reshape(-1).float()
    return state


def unpack_state_dict(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Inverse of :func:`pack_state_dict` for ``model``'s architecture; other tensors pass through."""
    state = dict(state)
    for name, module in ternary_modules(model).items():
        if name + PACKED not in state:
            continue  # stored dense: nothing to rebuild
        packed, alpha = state.pop(name + PACKED), state.pop(name + SCALE)
        shape = module.weight.shape
        if packed.dim() == 3:
            values = torch.stack([unpack_ternary(p, shape[1]) for p in packed]).float()
        else:
            values = unpack_ternary(packed, shape[0]).float()
        if tuple(values.shape) != tuple(shape):
            raise ValueError(f"{name}: packed ternary weight unpacks to {tuple(values.shape)}, the model expects {tuple(shape)}")
        reduce = tuple(range(1, values.dim())) if values.dim() == 3 else tuple(range(values.dim()))
        nonzero = values.abs().mean(dim=reduce, keepdim=True).clamp(min=1e-12)
        alpha = alpha.reshape(-1, *([1] * (values.dim() - 1))) if values.dim() == 3 else alpha.reshape(())
        state[f"{name}.weight"] = (values * alpha / nonzero).to(module.weight.dtype)
    return state
