"""The inference form of a zoo model: BitNet b1.58 ternary projections (arXiv 2402.17764) held as
2-bit packed weights plus their absmean scale, no full-precision latent copy, and run as exact
integer GEMVs over the int8 inputs that Q-Sparse's top-K (arXiv 2407.10969) left non-zero.

``to_inference(model)`` converts a trained (training-form) :class:`~zoo.models.Decoder` in place:
every ternary :class:`~zoo.models.linear.ZooLinear` whose inputs are int8 becomes a
:class:`PackedTernaryLinear`. The input goes through the same rule as in training (top-K or N:M,
then per-token absmax int8), so ``y = (Σ_k q_k·t_nk) · α / s`` is the training form's
``F.linear(q/s, t·α)`` summed exactly in integers first; greedy tokens agree. A full-precision
projection with top-K inputs becomes a :class:`SparseInputLinear` (its weight transposed, dtype
kept: only the kept channels' rows are read); dense full-precision projections stay as they are.
Not yet converted: MoE expert banks (they keep the training form) and ternary projections
without int8 inputs.
"""
from __future__ import annotations

import torch
from torch import nn

import zoo.kernels as kernels
from zoo.kernels import cpu_kernel_can_run
from zoo.kernels.ternary_matmul import packed_ternary_linear, sparse_projection, ternary_accumulate
from zoo.kernels.ternary_matmul._compiled import PackedLinearScratch, SparseLinearScratch
from zoo.models.linear import ZeroCounting, ZooLinear


class PackedTernaryLinear(ZeroCounting, nn.Module):
    """``y = (x_q · T) · α / s_x (+ b)`` with ``T`` packed 2 bits a weight (``[in, ceil(out/4)]`` uint8)."""

    def __init__(self, source: ZooLinear) -> None:
        super().__init__()
        if source.weight_quant != "ternary" or source.act_quant != "int8":
            raise ValueError(f"PackedTernaryLinear: needs ternary weights with int8 inputs, got {source.weight_quant}/{source.act_quant}")
        self.in_features, self.out_features, self.site = source.in_features, source.out_features, source.site
        self.sparsity, self.n_keep, self.block_size = source.sparsity, source.n_keep, source.block_size
        self.weight_quant, self.act_quant, self.kernel = "ternary", "int8", source.kernel
        values, alpha = kernels.ternary_quantize_raw(source.weight.detach().float())
        self.register_buffer("packed", kernels.pack_ternary(values.to(torch.int8)))
        self.register_buffer("scale", alpha.reshape(()).float())
        self.register_buffer("bias", None if source.bias is None else source.bias.detach().clone())
        self._scratch = None  # the compiled kernel's work buffers, made at the first CPU call

    def quantize_input(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(int8 values, per-row scale ``[..., 1]``): the training form's input rule, kept as integers."""
        if self.sparsity == "topk":
            values, scale, _ = kernels.topk_int8_quantize_raw(x, self.n_keep, impl=self._impl(x))
            return values.to(torch.int8), scale
        if self.sparsity == "block":
            x = kernels.block_topk_sparsify(x, self.n_keep, self.block_size, impl=self._impl(x))
        values, scale = kernels.int8_quantize_raw(x, impl=self._impl(x))
        return values.to(torch.int8), scale

    def _impl(self, x: torch.Tensor) -> str:
        # the transforms have torch and Triton paths; "cpu" names only the packed GEMV's kernel
        return "auto" if self.kernel in ("auto", "cpu") else self.kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel == "auto" and cpu_kernel_can_run(x):
            # One compiled call does the input rule, the packed GEMV and the rescale (decode is
            # bound by per-op overhead at these widths); bit-equal to the path below.
            if self._scratch is None:
                self._scratch = PackedLinearScratch(*self.packed.shape)
            y, nonzero = packed_ternary_linear(
                x, self.packed, self.scale, self.out_features, self.bias, sparsity=self.sparsity, n_keep=self.n_keep,
                block_size=self.block_size, impl="cpu", scratch=self._scratch,
            )
            if self.record_input_zeros:
                self.input_zeros += x.numel() - nonzero
                self.input_numel += x.numel()
            return y.to(x.dtype)
        values, x_scale = self.quantize_input(x)
        self.observe(values)
        acc = ternary_accumulate(values, self.packed, self.out_features, impl=self.kernel)
        y = acc.to(torch.float32) * (self.scale / x_scale.to(torch.float32))
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype)

    def accounting_entry(self):
        from zoo.models.accounting import SCALE_BYTES, TERNARY_PACKED_BITS, LinearAccount

        return LinearAccount(self.in_features * self.out_features, self.site, TERNARY_PACKED_BITS, SCALE_BYTES)

    def extra_repr(self) -> str:
        rule = {"topk": f"topk={self.n_keep}/{self.in_features}", "block": f"block={self.n_keep}:{self.block_size}"}.get(self.sparsity, "dense")
        return f"in={self.in_features}, out={self.out_features}, site={self.site}, packed 2-bit, acts=int8, {rule}"


class SparseInputLinear(ZeroCounting, nn.Module):
    """A full-precision Q-Sparse projection for inference: the weight held transposed (``[in, out]``,
    its dtype kept) so that each input channel is one row, and only the kept channels' rows read."""

    def __init__(self, source: ZooLinear) -> None:
        super().__init__()
        if source.weight_quant != "none" or source.act_quant != "none" or source.sparsity == "none":
            raise ValueError("SparseInputLinear: needs a full-precision projection with top-K or N:M inputs")
        self.in_features, self.out_features, self.site = source.in_features, source.out_features, source.site
        self.sparsity, self.n_keep, self.block_size, self.kernel = source.sparsity, source.n_keep, source.block_size, source.kernel
        self.weight_quant, self.act_quant = "none", "none"
        self.register_buffer("weight_t", source.weight.detach().t().contiguous())
        self.register_buffer("bias", None if source.bias is None else source.bias.detach().clone())
        self._scratch = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fused = self.kernel == "auto" and cpu_kernel_can_run(x) and self.weight_t.dtype in (torch.float32, torch.bfloat16)
        if fused and self._scratch is None:
            self._scratch = SparseLinearScratch(self.in_features)
        y, kept = sparse_projection(
            x, self.weight_t, self.bias, sparsity=self.sparsity, n_keep=self.n_keep, block_size=self.block_size,
            impl="cpu" if fused else "torch", scratch=self._scratch,
        )
        if self.record_input_zeros:
            self.input_zeros += x.numel() - kept
            self.input_numel += x.numel()
        return y.to(x.dtype)

    def accounting_entry(self):
        from zoo.models.accounting import BF16_BITS, LinearAccount

        return LinearAccount(self.in_features * self.out_features, self.site, BF16_BITS)

    def extra_repr(self) -> str:
        rule = f"topk={self.n_keep}/{self.in_features}" if self.sparsity == "topk" else f"block={self.n_keep}:{self.block_size}"
        return f"in={self.in_features}, out={self.out_features}, site={self.site}, {self.weight_t.dtype}, {rule}"


def inference_module(module: nn.Module) -> nn.Module | None:
    """The inference-form replacement of a training-form projection, or None to keep it."""
    if not isinstance(module, ZooLinear):
        return None
    if module.weight_quant == "ternary" and module.act_quant == "int8":
        return PackedTernaryLinear(module)
    if module.weight_quant == "none" and module.act_quant == "none" and module.sparsity != "none":
        return SparseInputLinear(module)
    return None


@torch.no_grad()
def to_inference(model: nn.Module) -> nn.Module:
    """Converts ``model`` in place into its inference form (see the module docstring); returns it in eval mode."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            replacement = inference_module(child)
            if replacement is not None:
                setattr(parent, name, replacement)
    model.inference_form = True
    return model.eval()


def tensor_bytes(model: nn.Module) -> int:
    """Bytes of every tensor the model holds (parameters and buffers, each storage once)."""
    seen, total = set(), 0
    for tensor in list(model.parameters()) + list(model.buffers()):
        key = (tensor.untyped_storage().data_ptr(), tensor.device)
        if key not in seen:
            seen.add(key)
            total += tensor.untyped_storage().nbytes()
    return total
