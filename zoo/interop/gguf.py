"""A zoo model as one GGUF file, the format llama.cpp loads, so the zoo's engine can be measured
against llama.cpp on the same weights (``zoo bench``'s peer comparison).

What maps exactly:

- dense full-precision decoders (SwiGLU, plain RoPE, no biases) as llama.cpp's ``llama``
  architecture, in F32, F16, BF16 or Q8_0 (blocks of 32 with one fp16 scale: not exact);
- BitNet b1.58 decoders (arXiv 2402.17764) with ternary weights as TQ2_0 (2 bits a weight) or
  TQ1_0 (1.69 bits): blocks of 256 with one fp16 scale, which holds the tensor's absmean ``α``
  exactly up to fp16 rounding, so the ternary pattern survives bit for bit. Without sub-norms the
  ``llama`` architecture runs them; with BitNet's sub-norms (before the attention output and the
  down projection) llama.cpp's ``bitnet`` architecture, whose RoPE pairs channel ``j`` with
  ``j + d/2``: q and k rows are permuted to that layout (the function is unchanged).

What does not, and is refused with one line naming the field: Q-Sparse top-K or N:M inputs
(arXiv 2407.10969; llama.cpp has no input sparsity), squared-ReLU FFNs (llama.cpp's ``llama``
and ``bitnet`` graphs are SiLU-gated), mixtures of experts, q/k/v biases and Llama 3 RoPE scaling
(not written yet). llama.cpp quantises the activations of TQ2_0 / TQ1_0 / Q8_0 products per
block of 256 (or 32) values, the zoo per token: a ternary export computes nearly, not exactly,
the zoo's function.

The byte tokenizer goes in as a byte-level BPE vocabulary of 256 symbols and no merges (GPT-2's
byte alphabet, as in the transformers export), so token ``n`` is byte ``n`` in both; a larger
vocabulary (the public shapes' random-weight models, ``zoo.models.inference.shapes``) adds unused
placeholder tokens. Either form of a decoder is written: the training form, or the inference form
with its packed weights unpacked and its fused norms taken back, one tensor at a time.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.interop.convert import _interleaved_to_rotate_half
from zoo.interop.hf_export import byte_level_symbols
from zoo.models.config import ModelConfig
from zoo.models.linear import ZooLinear

FULL_PRECISION_TYPES = ("f32", "f16", "bf16", "q8_0")
TERNARY_TYPES = ("tq2_0", "tq1_0")
GGUF_TYPES = FULL_PRECISION_TYPES + TERNARY_TYPES


class GGUFExportError(ValueError):
    """A model (or a choice) that the GGUF export cannot write exactly; the message names the field."""


@dataclass(frozen=True)
class GGUFPlan:
    """What the file will be: llama.cpp's architecture, the type of the projections and of the
    embedding, and whether q/k rows go to the half-split RoPE layout."""

    architecture: str  # llama | bitnet
    weight_type: str
    embedding_type: str
    rotate_half: bool


def plan_export(config: ModelConfig, weight_type: str | None = None) -> GGUFPlan:
    """The export of ``config``, or :class:`GGUFExportError` naming what llama.cpp cannot run."""
    ternary = config.weight_quant == "ternary"
    weight_type = weight_type or ("tq2_0" if ternary else "f32")
    if weight_type not in GGUF_TYPES:
        raise GGUFExportError(f"--type must be one of {', '.join(GGUF_TYPES)}, got {weight_type!r}")
    refusals = [
        (config.sparsity != "none", f"sparsity={config.sparsity}: llama.cpp has no top-K / N:M input sparsity"),
        (config.ffn_act != "swiglu", f"ffn_act={config.ffn_act}: llama.cpp's llama and bitnet graphs are SiLU-gated (swiglu)"),
        (config.is_moe, f"n_experts={config.n_experts}: mixtures of experts are not written to GGUF yet"),
        (config.qkv_bias, "qkv_bias=true: q/k/v biases are not written to GGUF yet"),
        (config.rope_scaling != "none", f"rope_scaling={config.rope_scaling}: only plain RoPE is written to GGUF yet"),
        (ternary and weight_type not in TERNARY_TYPES, f"weight_quant=ternary needs --type tq2_0 or tq1_0, got {weight_type}"),
        (not ternary and weight_type in TERNARY_TYPES, f"--type {weight_type} is for ternary weights; weight_quant={config.weight_quant}"),
        (config.has_sub_norm and not ternary, "sub_norm=true without ternary weights: llama.cpp's bitnet graph expects ternary"),
        (
            config.has_sub_norm and not config.tie_embeddings,
            "tie_embeddings=false: llama.cpp's bitnet graph reads the LM head from the embedding",
        ),
    ]
    for refused, reason in refusals:
        if refused:
            raise GGUFExportError(f"cannot export to GGUF: {reason}")
    embedding = "f16" if ternary else weight_type
    return GGUFPlan("bitnet" if config.has_sub_norm else "llama", weight_type, embedding, rotate_half=config.has_sub_norm)


def training_state(model: torch.nn.Module) -> dict[str, Callable[[], torch.Tensor]]:
    """The training form's state-dict names → its tensors as fp32, made when asked (ternary
    projections as ``t · α``, the values the forward multiplies with, so a TQ block's scale is ``α``)."""
    state = {name: tensor.detach for name, tensor in model.state_dict().items()}
    for name, module in model.named_modules():  # the values the forward uses, not the latent weights
        if isinstance(module, ZooLinear) and module.weight_quant == "ternary":
            state[name + ".weight"] = module.effective_weight
    return {name: (lambda make=make: make().detach().float()) for name, make in state.items()}


def inference_state(model: torch.nn.Module) -> dict[str, Callable[[], torch.Tensor]]:
    """The same names and values from the inference form (``zoo.models.inference``): packed
    ternary weights unpacked to ``t · α``, the norms that were fused into a projection taken back
    from it. Each tensor is made when asked, so a 2B-parameter model is never whole in fp32."""
    from zoo.kernels import unpack_ternary
    from zoo.models.inference import FullPrecisionLinear, PackedTernaryLinear, SparseInputLinear
    from zoo.models.inference.int8_table import Int8Embedding, Int8Head

    state: dict[str, Callable[[], torch.Tensor]] = {}
    for name, tensor in model.state_dict().items():
        state[name] = lambda tensor=tensor: tensor.detach().float()
    for name, module in model.named_modules():
        prefix = name + "."
        if isinstance(module, (Int8Embedding, Int8Head)):  # int8 rows times their scales
            state[prefix + "weight"] = lambda m=module: m.weight.float() * m.row_scale[:, None]
            continue
        if isinstance(module, PackedTernaryLinear):
            state[prefix + "weight"] = lambda m=module: unpack_ternary(m.packed, m.out_features).float() * m.scale.float().reshape(-1, 1)
        elif isinstance(module, SparseInputLinear):
            state[prefix + "weight"] = lambda m=module: m.weight_t.t().float()
        elif not isinstance(module, FullPrecisionLinear):
            continue
        if getattr(module, "norm_weight", None) is not None:  # the fused RMSNorm in front
            owner, _, site = name.rpartition(".")
            norm = {"wqkv": "attn_norm", "wo": "sub_norm", "w_gate_up": "ffn_norm", "w_down": "sub_norm"}[site]
            block = owner.rpartition(".")[0] if site in ("wqkv", "w_gate_up") else owner
            state[f"{block}.{norm}.weight"] = lambda m=module: m.norm_weight.float()
    return state


def gguf_tensors(model: torch.nn.Module, plan: GGUFPlan) -> dict[str, Callable[[], torch.Tensor]]:
    """llama.cpp's tensor names → the fp32 tensors, each made when asked, from a zoo decoder in
    either form (:func:`training_state`, :func:`inference_state`)."""
    from zoo.models.inference import PreparedProjection

    config: ModelConfig = model.config
    inference = any(isinstance(m, PreparedProjection) for m in model.modules())
    state = inference_state(model) if inference else training_state(model)
    q_rows, kv_rows = config.dim, config.kv_heads * config.head_dim

    # a fused projection is made once for its two or three parts (they are written one after another)
    fused = functools.lru_cache(maxsize=2)(lambda name: state[name]())

    def qkv(layer: str, part: int) -> torch.Tensor:
        tensor = fused(layer + "attn.wqkv.weight").split([q_rows, kv_rows, kv_rows])[part]
        if plan.rotate_half and part < 2:
            tensor = _interleaved_to_rotate_half(tensor, config.n_heads if part == 0 else config.kv_heads)
        return tensor

    tensors = {"token_embd.weight": state["tok_embeddings.weight"], "output_norm.weight": state["norm.weight"]}
    if not config.tie_embeddings:
        tensors["output.weight"] = state["lm_head.weight"]
    for i in range(config.n_layers):
        layer, blk = f"layers.{i}.", f"blk.{i}."
        tensors |= {
            blk + "attn_norm.weight": state[layer + "attn_norm.weight"],
            blk + "attn_q.weight": lambda layer=layer: qkv(layer, 0),
            blk + "attn_k.weight": lambda layer=layer: qkv(layer, 1),
            blk + "attn_v.weight": lambda layer=layer: qkv(layer, 2),
            blk + "attn_output.weight": state[layer + "attn.wo.weight"],
            blk + "ffn_norm.weight": state[layer + "ffn_norm.weight"],
            blk + "ffn_gate.weight": lambda layer=layer: fused(layer + "ffn.w_gate_up.weight").chunk(2)[0],
            blk + "ffn_up.weight": lambda layer=layer: fused(layer + "ffn.w_gate_up.weight").chunk(2)[1],
            blk + "ffn_down.weight": state[layer + "ffn.w_down.weight"],
        }
        if plan.architecture == "bitnet":
            tensors[blk + "attn_sub_norm.weight"] = state[layer + "attn.sub_norm.weight"]
            tensors[blk + "ffn_sub_norm.weight"] = state[layer + "ffn.sub_norm.weight"]
    return tensors


def tensor_type(name: str, tensor: torch.Tensor, plan: GGUFPlan) -> str:
    """Norms stay f32 (llama.cpp adds them in fp32), the embedding takes the plan's embedding type,
    every projection the plan's weight type."""
    if tensor.dim() == 1:
        return "f32"
    if name in ("token_embd.weight", "output.weight"):
        return plan.embedding_type
    return plan.weight_type


def encoded(name: str, tensor: torch.Tensor, kind: str) -> tuple[np.ndarray, Any]:
    """(data, GGML type) of one tensor: gguf-py's own conversion for every type (a cast for F32 and
    F16, packed bytes for the block types, whose rows must hold whole blocks)."""
    import gguf

    qtype = gguf.GGMLQuantizationType[kind.upper()]
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if tensor.shape[-1] % block:
        raise GGUFExportError(f"cannot export to GGUF: {name} has rows of {tensor.shape[-1]} values; {kind} needs a multiple of {block}")
    return gguf.quants.quantize(tensor.numpy().astype(np.float32), qtype), qtype


def write_gguf(model: torch.nn.Module, out: str | Path, weight_type: str | None = None, *, name: str = "moezoo") -> Path:
    """Writes ``model`` (a zoo decoder with the byte tokenizer) to ``out`` (see the module docstring);
    the file appears whole or not at all."""
    import gguf

    config: ModelConfig = model.config
    if config.vocab_size < 256:
        raise GGUFExportError(f"cannot export to GGUF: vocab_size={config.vocab_size}; the byte tokenizer needs at least 256 ids")
    plan = plan_export(config, weight_type)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial")
    os.close(handle)
    try:
        writer = gguf.GGUFWriter(partial, plan.architecture)
        writer.add_name(name)
        writer.add_context_length(config.max_seq_len)
        writer.add_embedding_length(config.dim)
        writer.add_block_count(config.n_layers)
        writer.add_feed_forward_length(config.hidden_dim)
        writer.add_head_count(config.n_heads)
        writer.add_head_count_kv(config.kv_heads)
        writer.add_rope_dimension_count(config.head_dim)
        writer.add_rope_freq_base(config.rope_theta)
        writer.add_layer_norm_rms_eps(config.norm_eps)
        writer.add_vocab_size(config.vocab_size)
        writer.add_file_type(_file_type(plan.weight_type))
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("default")
        # ids past the 256 bytes (the public shapes' 128k vocabulary) are rows the byte tokenizer
        # never emits: named placeholders of llama.cpp's "unused" type
        unused = config.vocab_size - 256
        writer.add_token_list(byte_level_symbols() + [f"<unused_{n}>" for n in range(256, config.vocab_size)])
        writer.add_token_types([gguf.TokenType.NORMAL] * 256 + [gguf.TokenType.UNUSED] * unused)
        # llama.cpp refuses a BPE vocabulary without merges and gguf-py writes no empty array: one
        # merge of the symbols of bytes 0 and 1, whose result is no token, so llama.cpp falls back
        # to the two byte tokens and every text still tokenises byte by byte
        symbols = byte_level_symbols()
        writer.add_token_merges([f"{symbols[0]} {symbols[1]}"])
        writer.add_bos_token_id(0)
        writer.add_eos_token_id(0)
        writer.add_add_bos_token(False)
        for tensor_name, make in gguf_tensors(model, plan).items():
            tensor = make()
            data, qtype = encoded(tensor_name, tensor, tensor_type(tensor_name, tensor, plan))
            writer.add_tensor(tensor_name, data, raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(partial, out)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return out


def _file_type(weight_type: str) -> int:
    import gguf

    names = {
        "f32": "ALL_F32",
        "f16": "MOSTLY_F16",
        "bf16": "MOSTLY_BF16",
        "q8_0": "MOSTLY_Q8_0",
        "tq2_0": "MOSTLY_TQ2_0",
        "tq1_0": "MOSTLY_TQ1_0",
    }
    return getattr(gguf.LlamaFileType, names[weight_type])
