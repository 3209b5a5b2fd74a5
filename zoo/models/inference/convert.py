"""Conversion of a trained (training-form) zoo decoder into its inference form, in place: every
BitNet b1.58 ternary projection with int8 inputs (arXiv 2402.17764) becomes a packed 2-bit
:class:`~zoo.models.inference.layers.PackedTernaryLinear`, a full-precision one with Q-Sparse top-K
inputs (arXiv 2407.10969) a :class:`~zoo.models.inference.layers.SparseInputLinear`, a dense one a
:class:`~zoo.models.inference.layers.FullPrecisionLinear`, a MoE FFN an
:class:`~zoo.models.inference.moe.InferenceMoE`; and the RMSNorms that each feed one projection are
folded into it.

Nothing is planted on the model: the compiled decode step that ``zoo.generate`` uses is found by
:func:`zoo.models.inference.decode_step.decode_step_for`, which recognises the inference form by
its layers (and is told to look again when a model is converted).
"""

from __future__ import annotations

import torch
from torch import nn

from zoo.models.decoder import Decoder
from zoo.models.ffn import GatedFeedForward
from zoo.models.inference.decode_step import forget_decode_step
from zoo.models.inference.int8_table import int8_table
from zoo.models.inference.layers import PreparedProjection, inference_projection
from zoo.models.inference.moe import InferenceMoE
from zoo.models.linear import ZooLinear
from zoo.models.moe import MoEFeedForward
from zoo.models.norm import RMSNorm


def inference_module(module: nn.Module) -> nn.Module | None:
    """The inference-form replacement of a training-form projection or MoE FFN, or None to keep it."""
    if isinstance(module, MoEFeedForward):
        return InferenceMoE(module)
    if isinstance(module, ZooLinear):
        return inference_projection(module)
    return None


def replace_modules(root: nn.Module) -> None:
    """Replaces every training-form projection and MoE FFN under ``root`` by its inference form."""
    for parent in list(root.modules()):
        for name, child in list(parent.named_children()):
            replacement = inference_module(child)
            if replacement is not None:
                setattr(parent, name, replacement)


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
    for block in model.layers if isinstance(model, Decoder) else []:
        fuse_norm_into(block, "attn_norm", block.attn.wqkv)
        fuse_norm_into(block.attn, "sub_norm", block.attn.wo)
        if isinstance(block.ffn, GatedFeedForward):
            fuse_norm_into(block, "ffn_norm", block.ffn.w_gate_up)
            fuse_norm_into(block.ffn, "sub_norm", block.ffn.w_down)


@torch.no_grad()
def to_inference(model: nn.Module, *, embedding_dtype: torch.dtype | None = None) -> nn.Module:
    """Converts ``model`` in place into its inference form (see the module docstring); returns it in
    eval mode. ``embedding_dtype`` (``torch.bfloat16``) casts the embedding and LM head, which at a
    vocabulary of 128k are the largest tensors a decoding step reads, to half the bytes;
    ``torch.int8`` holds them as int8 rows with one scale each (:mod:`~zoo.models.inference.int8_table`)."""
    if embedding_dtype == torch.int8 and isinstance(model, Decoder):
        int8_table(model)  # one absmax scale per row, weight-only
    elif embedding_dtype is not None and isinstance(model, Decoder):
        model.tok_embeddings.to(embedding_dtype)
        model.lm_head.to(embedding_dtype)  # the same tensor when the embeddings are tied
    replace_modules(model)
    fuse_norms(model)
    forget_decode_step(model)  # a training-form model that generated before is an inference form now
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
