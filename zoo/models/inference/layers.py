"""The inference-form projections: BitNet b1.58 ternary weights (arXiv 2402.17764) held as 2-bit
packed weights plus their absmean scale, no full-precision latent copy, run as exact integer GEMVs
over the int8 inputs that Q-Sparse's top-K (arXiv 2407.10969) left non-zero; full-precision
projections with top-K inputs that read only the kept channels' weight rows; and dense ones as a
plain ``F.linear``.

Each takes a training-form :class:`~zoo.models.linear.ZooLinear` and keeps its input rule (the same
:class:`~zoo.models.linear.InputTransform`), so ``y = (Σ_k q_k·t_nk) · α / s`` is the training
form's ``F.linear(q/s, t·α)`` summed exactly in integers first; greedy tokens agree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import zoo.kernels as kernels
from zoo.kernels.ternary_matmul import prepare_packed_ternary_linear, prepare_sparse_projection
from zoo.models.counts import BF16_BITS, SCALE_BYTES, TERNARY_PACKED_BITS, LinearAccount
from zoo.models.linear import TransformedInput, ZooLinear
from zoo.models.protocols import Accounted


class PreparedProjection:
    """An inference projection that asks the kernel layer once for its whole call
    (``zoo.kernels.ternary_matmul.prepare_*``: kernel chosen, weight side checked and converted)
    and then only calls it, because decoding calls every projection once a token and each torch
    check costs about a microsecond here. The prepared call is dropped whenever the weights may
    have changed (a load, a move or cast, a fused norm), and never pickled or deep-copied: it is
    rebuilt on the next call. The RMSNorm in front of the projection can be folded into it
    (:meth:`fuse_norm`): decoding then pays one kernel call per site instead of a norm's five
    torch ops; ``norm_weight`` is None until then."""

    norm_weight: torch.Tensor | None
    norm_eps = 0.0
    prepared = None

    def prepare(self):
        raise NotImplementedError

    def forget_prepared(self) -> None:
        self.__dict__.pop("prepared", None)

    def fuse_norm(self, weight: torch.Tensor, eps: float) -> None:
        self.register_buffer("norm_weight", weight.detach().float().contiguous().clone())
        self.norm_eps = float(eps)
        self.forget_prepared()

    @property
    def norm(self) -> tuple[torch.Tensor, float] | None:
        return None if self.norm_weight is None else (self.norm_weight, self.norm_eps)

    def prepared_call(self):
        """The kernel layer's prepared call of this projection, made on first use."""
        call = self.prepared
        if call is None:
            call = self.prepared = self.prepare()
        return call

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The prepared call on ``x``, its non-zero inputs counted, in ``x``'s dtype."""
        y, nonzero = self.prepared_call()(x)
        self.input_transform.count_nonzero(nonzero, x.numel())
        return y if y.dtype == x.dtype else y.to(x.dtype)

    def _apply(self, fn, recurse=True):
        self.forget_prepared()
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args, **kwargs):
        self.forget_prepared()
        super()._load_from_state_dict(*args, **kwargs)

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("prepared", None)
        return state


class PackedTernaryLinear(PreparedProjection, TransformedInput, Accounted, nn.Module):
    """``y = (x_q · T) · α / s_x (+ b)`` with ``T`` packed 2 bits a weight, held in the decoding tiles
    (``[ceil(out/128), in, 32]`` uint8, :func:`zoo.kernels.tile_ternary`; ``packed`` gives ``[in, ceil(out/4)]``).

    ``x_q, s_x`` come from the training form's own :class:`InputTransform` rule, kept as integers;
    the kernel layer runs the whole projection (``zoo.kernels.ternary_matmul.prepare_packed_ternary_linear``).
    """

    def __init__(self, source: ZooLinear) -> None:
        super().__init__()
        if source.weight_quant != "ternary" or source.act_quant != "int8":
            raise ValueError(f"PackedTernaryLinear: needs ternary weights with int8 inputs, got {source.weight_quant}/{source.act_quant}")
        self.in_features, self.out_features, self.site = source.in_features, source.out_features, source.site
        self.weight_quant, self.kernel = "ternary", source.kernel
        self.input_transform = source.input_transform
        if source.weight.is_meta:  # a skeleton that a release's tensors fill (zoo.models.inference.release)
            tiles_shape = (-(-self.out_features // 128), self.in_features, 32)
            self.register_buffer("tiles", torch.empty(tiles_shape, dtype=torch.uint8, device="meta"))
            self.register_buffer("scale", torch.empty((), device="meta"))
        else:
            values, alpha = kernels.ternary_quantize_raw(source.weight.detach().float())
            # held in the decoding layout only (tiles of 128 outputs), which the compiled kernel
            # reads in place: one copy of the weight; `packed` gives the canonical layout when asked
            self.register_buffer("tiles", kernels.tile_ternary(kernels.pack_ternary(values.to(torch.int8))))
            self.register_buffer("scale", alpha.reshape(()).float())
        self.register_buffer("bias", None if source.bias is None else source.bias.detach().clone())
        self.register_buffer("norm_weight", None)

    def set_ternary(self, values: torch.Tensor, scale: torch.Tensor) -> None:
        """Holds given ternary ``values [out, in]`` (int8 in {-1, 0, 1}) and their scale: one value,
        or one per output row. Per-row scales carry a checkpoint that quantised q, k and v (or gate
        and up) as separate tensors, each with its own absmean, where the zoo fuses them into one
        projection (transformers' BitNet, ``zoo.interop.bitnet``)."""
        if tuple(values.shape) != (self.out_features, self.in_features):
            raise ValueError(f"set_ternary: values of shape {tuple(values.shape)} for a {self.out_features}x{self.in_features} projection")
        scale = scale.detach().float().reshape(-1)
        if scale.numel() not in (1, self.out_features) or (scale.numel() > 1 and self.bias is not None):
            raise ValueError(f"set_ternary: {scale.numel()} scales for {self.out_features} outputs (one, or one per output without a bias)")
        self.tiles = kernels.tile_ternary(kernels.pack_ternary(values.to(torch.int8)))
        self.scale = scale.reshape(()) if scale.numel() == 1 else scale.contiguous()
        self.forget_prepared()

    @property
    def packed(self) -> torch.Tensor:
        """The weight in the canonical packed layout ``[in, ceil(out/4)]`` (made from the tiles)."""
        return kernels.untile_ternary(self.tiles, self.out_features)

    @property
    def row_scale(self) -> torch.Tensor | None:
        """The per-output scales, or None when one scale covers the whole weight."""
        return self.scale if self.scale.dim() == 1 else None

    def prepare(self):
        return prepare_packed_ternary_linear(
            self.tiles,
            self.scale,
            self.out_features,
            self.bias,
            rule=self.rule,
            impl=self.kernel,
            norm=self.norm,
        )

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # a checkpoint's per-row scales replace the one scale the training form's conversion made
        scale = state_dict.get(prefix + "scale")
        if scale is not None and scale.shape != self.scale.shape:
            self.scale = torch.empty_like(scale, dtype=torch.float32)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def accounting_entry(self) -> LinearAccount:
        return LinearAccount(self.in_features * self.out_features, self.site, TERNARY_PACKED_BITS, SCALE_BYTES, self.usage)

    def extra_repr(self) -> str:
        rule = ", ".join(self.input_transform.describe())
        return f"in={self.in_features}, out={self.out_features}, site={self.site}, packed 2-bit, {rule}"


class SparseInputLinear(PreparedProjection, TransformedInput, Accounted, nn.Module):
    """A full-precision Q-Sparse projection for inference: the weight held transposed (``[in, out]``,
    its dtype kept) so that each input channel is one row, and only the kept channels' rows read."""

    def __init__(self, source: ZooLinear) -> None:
        super().__init__()
        if source.weight_quant != "none" or source.act_quant != "none" or source.sparsity == "none":
            raise ValueError("SparseInputLinear: needs a full-precision projection with top-K or N:M inputs")
        self.in_features, self.out_features, self.site = source.in_features, source.out_features, source.site
        self.weight_quant, self.kernel = "none", source.kernel
        self.input_transform = source.input_transform
        self.register_buffer("weight_t", source.weight.detach().t().contiguous())
        self.register_buffer("bias", None if source.bias is None else source.bias.detach().clone())
        self.register_buffer("norm_weight", None)

    def prepare(self):
        return prepare_sparse_projection(
            self.weight_t,
            self.bias,
            rule=self.rule,
            impl=self.kernel,
            norm=self.norm,
        )

    def accounting_entry(self) -> LinearAccount:
        return LinearAccount(self.in_features * self.out_features, self.site, BF16_BITS, 0, self.usage)

    def extra_repr(self) -> str:
        rule = ", ".join(self.input_transform.describe())
        return f"in={self.in_features}, out={self.out_features}, site={self.site}, {self.weight_t.dtype}, {rule}"


class FullPrecisionLinear(TransformedInput, Accounted, nn.Module):
    """A full-precision projection whose input rule is the identity (dense entries, the experts of a
    dense MoE), for inference: ``F.linear`` alone, since the training form's per-call input-rule
    dispatch costs as much as a small GEMV on this class of CPU. Natural zeros are still counted
    while recording. Holds the source's parameters as they are (same names, dtype and storage)."""

    def __init__(self, source: ZooLinear) -> None:
        super().__init__()
        if source.weight_quant != "none" or source.act_quant != "none" or source.sparsity != "none":
            raise ValueError("FullPrecisionLinear: needs a full-precision projection without an input rule")
        self.in_features, self.out_features, self.site = source.in_features, source.out_features, source.site
        self.weight_quant, self.kernel = "none", source.kernel
        self.input_transform = source.input_transform
        self.weight, self.bias = source.weight, source.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.input_transform.observe(x)
        if x.dtype == self.weight.dtype:
            return F.linear(x, self.weight, self.bias)
        # a bf16 weight under fp32 blocks (the public shapes' bf16 variants): computed in the weight's dtype
        return F.linear(x.to(self.weight.dtype), self.weight, self.bias).to(x.dtype)

    def accounting_entry(self) -> LinearAccount:
        return LinearAccount(self.weight.numel(), self.site, BF16_BITS, 0, self.usage)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, site={self.site}, {self.weight.dtype}"


def inference_projection(module: ZooLinear) -> nn.Module | None:
    """The inference form of a training-form projection, or None where it has none (a ternary
    projection without int8 inputs: none of the zoo's entries has one)."""
    if module.weight_quant == "ternary" and module.act_quant == "int8":
        return PackedTernaryLinear(module)
    if module.weight_quant == "none" and module.act_quant == "none":
        return SparseInputLinear(module) if module.sparsity != "none" else FullPrecisionLinear(module)
    return None
