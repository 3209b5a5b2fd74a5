"""The inference form of a zoo model: BitNet b1.58 ternary projections (arXiv 2402.17764) held as
2-bit packed weights plus their absmean scale, no full-precision latent copy, and run as exact
integer GEMVs over the int8 inputs that Q-Sparse's top-K (arXiv 2407.10969) left non-zero.

``to_inference(model)`` converts a trained (training-form) :class:`~zoo.models.Decoder` in place:
every ternary :class:`~zoo.models.linear.ZooLinear` whose inputs are int8 becomes a
:class:`PackedTernaryLinear`. The input goes through the same rule as in training (top-K or N:M,
then per-token absmax int8), so ``y = (Σ_k q_k·t_nk) · α / s`` is the training form's
``F.linear(q/s, t·α)`` summed exactly in integers first; greedy tokens agree. A full-precision
projection with top-K inputs becomes a :class:`SparseInputLinear` (its weight transposed, dtype
kept: only the kept channels' rows are read), a dense one a :class:`FullPrecisionLinear` (the
same weight, ``F.linear`` without the training form's per-call input-rule dispatch).
A MoE FFN becomes an :class:`InferenceMoE`: each expert's projections converted the same way,
and a token reads only the weights of the experts its router chose. Not converted: ternary
projections without int8 inputs (none of the zoo's entries has them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import zoo.kernels as kernels
from zoo.kernels import moe as moe_ops
from zoo.kernels.ternary_matmul import prepare_packed_ternary_linear, prepare_sparse_projection
from zoo.models.ffn import GatedFeedForward, glu_activation
from zoo.models.linear import TransformedInput, ZooLinear
from zoo.models.moe import ExpertBank, MoEFeedForward
from zoo.models.norm import RMSNorm


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


class PackedTernaryLinear(PreparedProjection, TransformedInput, nn.Module):
    """``y = (x_q · T) · α / s_x (+ b)`` with ``T`` packed 2 bits a weight (``[in, ceil(out/4)]`` uint8).

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
        values, alpha = kernels.ternary_quantize_raw(source.weight.detach().float())
        self.register_buffer("packed", kernels.pack_ternary(values.to(torch.int8)))
        self.register_buffer("scale", alpha.reshape(()).float())
        self.register_buffer("bias", None if source.bias is None else source.bias.detach().clone())
        self.register_buffer("norm_weight", None)

    def prepare(self):
        return prepare_packed_ternary_linear(
            self.packed,
            float(self.scale),
            self.out_features,
            self.bias,
            sparsity=self.sparsity,
            n_keep=self.n_keep,
            block_size=self.block_size,
            impl=self.kernel,
            norm=self.norm,
        )

    def accounting_entry(self):
        from zoo.models.accounting import SCALE_BYTES, TERNARY_PACKED_BITS, LinearAccount

        return LinearAccount(self.in_features * self.out_features, self.site, TERNARY_PACKED_BITS, SCALE_BYTES, self.usage)

    def extra_repr(self) -> str:
        rule = ", ".join(self.input_transform.describe())
        return f"in={self.in_features}, out={self.out_features}, site={self.site}, packed 2-bit, {rule}"


class SparseInputLinear(PreparedProjection, TransformedInput, nn.Module):
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
            sparsity=self.sparsity,
            n_keep=self.n_keep,
            block_size=self.block_size,
            impl=self.kernel,
            norm=self.norm,
        )

    def accounting_entry(self):
        from zoo.models.accounting import BF16_BITS, LinearAccount

        return LinearAccount(self.in_features * self.out_features, self.site, BF16_BITS, 0, self.usage)

    def extra_repr(self) -> str:
        rule = ", ".join(self.input_transform.describe())
        return f"in={self.in_features}, out={self.out_features}, site={self.site}, {self.weight_t.dtype}, {rule}"


class FullPrecisionLinear(TransformedInput, nn.Module):
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
        return F.linear(x, self.weight, self.bias)

    def accounting_entry(self):
        from zoo.models.accounting import BF16_BITS, LinearAccount

        return LinearAccount(self.weight.numel(), self.site, BF16_BITS, 0, self.usage)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, site={self.site}, {self.weight.dtype}"


def inference_module(module: nn.Module) -> nn.Module | None:
    """The inference-form replacement of a training-form projection or MoE FFN, or None to keep it."""
    if isinstance(module, MoEFeedForward):
        return InferenceMoE(module)
    if not isinstance(module, ZooLinear):
        return None
    if module.weight_quant == "ternary" and module.act_quant == "int8":
        return PackedTernaryLinear(module)
    if module.weight_quant == "none" and module.act_quant == "none":
        return SparseInputLinear(module) if module.sparsity != "none" else FullPrecisionLinear(module)
    return None


def fuse_norm_into(owner: nn.Module, norm_name: str, projection: nn.Module) -> None:
    """Folds ``owner.<norm_name>`` (an RMSNorm whose output only ``projection`` reads) into it."""
    norm = getattr(owner, norm_name)
    if isinstance(norm, RMSNorm) and isinstance(projection, PreparedProjection) and projection.norm_weight is None:
        projection.fuse_norm(norm.weight, norm.eps)
        setattr(owner, norm_name, nn.Identity())


def fuse_norms(model: nn.Module) -> None:
    """The four norms of a block that each feed one projection (pre-attention, BitNet's two
    sub-norms, pre-FFN for a dense FFN) go into that projection; a MoE's pre-FFN norm also feeds
    the router and stays."""
    for block in getattr(model, "layers", []):
        fuse_norm_into(block, "attn_norm", block.attn.wqkv)
        fuse_norm_into(block.attn, "sub_norm", block.attn.wo)
        if isinstance(block.ffn, GatedFeedForward):
            fuse_norm_into(block, "ffn_norm", block.ffn.w_gate_up)
            fuse_norm_into(block.ffn, "sub_norm", block.ffn.w_down)


@torch.no_grad()
def to_inference(model: nn.Module) -> nn.Module:
    """Converts ``model`` in place into its inference form (see the module docstring); returns it in eval mode."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            replacement = inference_module(child)
            if replacement is not None:
                setattr(parent, name, replacement)
    fuse_norms(model)
    model.inference_form = True
    from zoo.models.decode_step import DecodeStep  # it builds on this module's classes

    model.decode_step = DecodeStep(model)  # what zoo.generate decodes one token with
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


class InferenceMoE(nn.Module):
    """A dropless MoE FFN (MegaBlocks semantics) for inference: each expert's two projections in
    inference form, and a token reads only the weights of the experts its router chose."""

    def __init__(self, source: MoEFeedForward) -> None:
        super().__init__()
        self.dim, self.n_experts, self.top_k, self.act = source.dim, source.n_experts, source.top_k, source.act
        self.renormalize = source.renormalize
        self.router = source.router
        usage = source.top_k / source.n_experts  # each expert is read by this share of tokens, on average
        self.gate_up = nn.ModuleList(expert_projection(source.w_gate_up, e, usage) for e in range(source.n_experts))
        self.down = nn.ModuleList(expert_projection(source.w_down, e, usage) for e in range(source.n_experts))
        self.sub_norm = source.sub_norm  # per-expert gains, applied to each expert's rows
        if self.sub_norm is not None and all(isinstance(p, PreparedProjection) for p in self.down):
            for expert, projection in enumerate(self.down):  # folded into each expert's down projection
                projection.fuse_norm(self.sub_norm.weight[expert], self.sub_norm.eps)
            self.sub_norm = None
        self.shared = source.shared
        self.register_buffer("selection_bias", None if source.selection_bias is None else source.selection_bias.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.dim)
        weights, experts = moe_ops.route(self.router(flat), self.top_k, self.renormalize, self.selection_bias)
        if flat.shape[0] == 1:  # decoding one token: no grouping needed, k experts in turn
            return self._one_token(flat, weights[0].tolist(), experts[0].tolist()).reshape(x.shape)
        out = torch.zeros_like(flat, dtype=torch.float32)
        for expert in experts.unique().tolist():
            rows, choice = (experts == expert).nonzero(as_tuple=True)
            gate, up = self.gate_up[expert](flat.index_select(0, rows)).chunk(2, dim=-1)
            h = glu_activation(gate, up, self.act)
            if self.sub_norm is not None:
                h = self.sub_norm(h, torch.full_like(rows, expert))
            y = self.down[expert](h).float() * weights[rows, choice].unsqueeze(-1)
            out.index_add_(0, rows, y)
        out = out.to(x.dtype)
        if self.shared is not None:
            out = out + self.shared(flat)
        return out.reshape(x.shape)

    def _one_token(self, flat: torch.Tensor, weights: list[float], experts: list[int]) -> torch.Tensor:
        # Routing read back as Python numbers (two small copies) rather than indexed tensor by
        # tensor: at decode widths each torch op costs as much as a tiny expert's GEMV.
        out = None
        for weight, expert in zip(weights, experts):
            gate, up = self.gate_up[expert](flat).chunk(2, dim=-1)
            h = glu_activation(gate, up, self.act)
            if self.sub_norm is not None:
                h = self.sub_norm(h, torch.tensor([expert]))
            y = self.down[expert](h).float()
            out = y * weight if out is None else torch.add(out, y, alpha=weight)
        out = out.to(flat.dtype)
        return out + self.shared(flat) if self.shared is not None else out

    def extra_repr(self) -> str:
        return f"experts={self.n_experts}, top_k={self.top_k}, reads only the chosen experts"


def expert_projection(bank: ExpertBank, expert: int, usage: float) -> nn.Module:
    """Expert ``expert`` of a stacked bank as one projection, in inference form where one exists."""
    single = ZooLinear(bank.in_features, bank.out_features, site=bank.site, weight_quant=bank.weight_quant, kernel=bank.kernel)
    single.input_transform = bank.input_transform  # every expert keeps the bank's rule, and counts into it
    single.weight = nn.Parameter(bank.weight.detach()[expert].clone(), requires_grad=False)
    projection = inference_module(single) or single
    projection.usage = usage
    return projection
