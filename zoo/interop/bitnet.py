"""transformers' BitNet b1.58 checkpoints (``model_type: bitnet``; Ma et al. 2025, arXiv 2504.12285,
the recipe of arXiv 2402.17764) into the zoo's inference form: the one public family of ternary
LLMs, e.g. ``microsoft/bitnet-b1.58-2B-4T`` (packed weights) and ``microsoft/bitnet-b1.58-2B-4T-bf16``
(its bf16 master weights).

The architecture is the zoo decoder with BitNet's sub-norms (before ``o_proj`` and ``down_proj``),
a squared-ReLU GLU and int8 per-token inputs to every projection. Three differences are mapped:

- transformers quantises q, k, v, gate and up as separate tensors, each with its own absmean
  scale, where the zoo fuses them (``wqkv``, ``w_gate_up``): the fused packed projection holds one
  scale per output row (``PackedTernaryLinear.set_ternary``), so every segment keeps its own;
- q and k rows go from transformers' ``rotate_half`` RoPE layout to the zoo's interleaved pairs
  (the function is unchanged);
- the weights come in the checkpoint's ``quantization_config``: ``online`` master weights
  (ternarised here as transformers' ``WeightQuant`` does: ``t = round(w / α)`` clamped, with
  ``α = 1 / (1 / mean|w|)``), or ``offline`` ternary values packed four to a byte along the output
  rows with a ``weight_scale`` that is ``α`` (``autobitlinear``) or ``1 / α`` (``bitlinear``).

The result is an inference-form decoder only: per-segment scales have no training form (the
training form ternarises the fused weight with one absmean), so a BitNet checkpoint is generated
from, benchmarked and evaluated, not written as a zoo release. Reading never imports transformers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from zoo.interop.convert import _hf_error, _require, _rope, _rotate_half_to_interleaved
from zoo.models.config import ModelConfig
from zoo.models.decoder import Block, Decoder
from zoo.models.inference.convert import fuse_norms, replace_modules
from zoo.models.inference.decode_step import forget_decode_step

LINEAR_CLASSES = ("autobitlinear", "bitlinear")
MODES = ("offline", "online")


def quantization_of(hf_config: Mapping[str, Any]) -> tuple[str, str]:
    """(linear class, mode) of a BitNet ``config.json``, or one line naming the field it cannot run."""
    spec = hf_config.get("quantization_config")
    if not isinstance(spec, dict) or spec.get("quant_method") != "bitnet":
        raise _hf_error(
            "quantization_config", "a BitNet checkpoint needs quant_method 'bitnet' (without it transformers runs full precision)"
        )
    linear = spec.get("linear_class", "bitlinear")
    mode = spec.get("quantization_mode", "offline")
    if linear not in LINEAR_CLASSES:
        raise _hf_error("quantization_config.linear_class", f"must be one of {LINEAR_CLASSES}, got {linear!r}")
    if mode not in MODES or (linear == "bitlinear" and mode != "offline"):
        raise _hf_error("quantization_config.quantization_mode", f"must be 'offline' (or 'online' for autobitlinear), got {mode!r}")
    if spec.get("use_rms_norm", False):
        raise _hf_error("quantization_config.use_rms_norm", "must be false; the zoo has no extra norm inside a projection")
    return linear, mode


def config_from_bitnet(hf_config: Mapping[str, Any]) -> ModelConfig:
    """The :class:`ModelConfig` of a transformers BitNet ``config.json`` (as a dict)."""
    if hf_config.get("model_type") != "bitnet":
        raise _hf_error("model_type", f"must be 'bitnet', got {hf_config.get('model_type')!r}")
    quantization_of(hf_config)
    dim, n_heads = int(_require(hf_config, "hidden_size")), int(_require(hf_config, "num_attention_heads"))
    head_dim = hf_config.get("head_dim")
    if head_dim is not None and head_dim * n_heads != dim:
        raise _hf_error("head_dim", f"must be hidden_size/num_attention_heads = {dim}/{n_heads}, got {head_dim!r}")
    acts = {"relu2": "relu2", "silu": "swiglu"}
    if hf_config.get("hidden_act", "relu2") not in acts:
        raise _hf_error("hidden_act", f"must be 'relu2' or 'silu', got {hf_config.get('hidden_act')!r}")
    if hf_config.get("attention_bias", False):
        raise _hf_error("attention_bias", "must be false; the zoo's BitNet projections have no biases")
    return ModelConfig(
        vocab_size=int(_require(hf_config, "vocab_size")),
        dim=dim,
        n_layers=int(_require(hf_config, "num_hidden_layers")),
        n_heads=n_heads,
        n_kv_heads=int(hf_config.get("num_key_value_heads") or n_heads),
        ffn_dim=int(_require(hf_config, "intermediate_size")),
        max_seq_len=int(_require(hf_config, "max_position_embeddings")),
        **_rope({"rope_theta": 500000.0, **hf_config}),  # BitNetConfig's default theta
        norm_eps=float(hf_config.get("rms_norm_eps", 1e-5)),
        tie_embeddings=bool(hf_config.get("tie_word_embeddings", False)),
        weight_quant="ternary",
        act_quant="int8",
        ffn_act=acts[hf_config.get("hidden_act", "relu2")],
        sub_norm=True,
    )


def unpack_rows(packed: torch.Tensor) -> torch.Tensor:
    """transformers' packed layout (``pack_weights``: output row ``r`` of ``4 R`` in byte row
    ``r % R`` at bit pair ``r // R``, codes ``t + 1``) → int8 ternary values ``[4 R, in]``."""
    return torch.cat([((packed >> (2 * i)) & 3).to(torch.int8) - 1 for i in range(4)])


def ternary_of(state: Mapping[str, torch.Tensor], name: str, linear: str, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 values ``[out, in]``, scale α) of one projection as transformers computes it."""
    weight = state[name + ".weight"]
    if mode == "online":  # transformers' WeightQuant: scale = 1 / mean|w|, t = round(w * scale).clamp(-1, 1)
        weight = weight.float()
        scale = 1.0 / weight.abs().mean().clamp(min=1e-5)
        return (weight * scale).round().clamp(-1, 1).to(torch.int8), 1.0 / scale
    values = unpack_rows(weight) if weight.dtype == torch.uint8 else weight.round().clamp(-1, 1).to(torch.int8)
    stored = state[name + ".weight_scale"].float().reshape(())
    return values, stored if linear == "autobitlinear" else 1.0 / stored


def fused(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Segments stacked along the output rows, each segment's scale repeated over its rows."""
    values = torch.cat([v for v, _ in parts])
    scales = torch.cat([torch.full((v.shape[0],), float(a)) for v, a in parts])
    return values, scales


@torch.no_grad()
def bitnet_model(hf_config: Mapping[str, Any], state: Mapping[str, torch.Tensor], embedding_dtype: torch.dtype | None = None) -> Decoder:
    """The zoo inference form of a transformers BitNet checkpoint (``state``: its tensors under
    transformers' names), built block by block as ``zoo.models.inference.shapes`` does."""
    config = config_from_bitnet(hf_config)
    linear, mode = quantization_of(hf_config)
    model = Decoder.on_meta(config)
    embedding = state["model.embed_tokens.weight"]
    model.tok_embeddings = torch.nn.Embedding.from_pretrained(embedding.to(embedding_dtype or embedding.dtype), freeze=False)
    head = embedding if config.tie_embeddings else state["lm_head.weight"]
    model.lm_head = torch.nn.Linear(config.dim, config.vocab_size, bias=False, dtype=embedding_dtype or head.dtype)
    if config.tie_embeddings:
        model.lm_head.weight = model.tok_embeddings.weight
    else:
        model.lm_head.weight.copy_(head)
    model.norm = type(model.norm)(config.dim, config.norm_eps, config.kernel)
    model.norm.weight.copy_(state["model.norm.weight"])
    kv = config.kv_heads
    for i in range(config.n_layers):
        hf = f"model.layers.{i}."
        with torch.device("meta"):  # no storage: every tensor of the block is set from the checkpoint below
            block = Block(config)
            replace_modules(block)
        q, k, v = (ternary_of(state, hf + f"self_attn.{p}_proj", linear, mode) for p in "qkv")
        q = (_rotate_half_to_interleaved(q[0], config.n_heads), q[1])
        k = (_rotate_half_to_interleaved(k[0], kv), k[1])
        block.attn.wqkv.set_ternary(*fused([q, k, v]))
        block.attn.wo.set_ternary(*ternary_of(state, hf + "self_attn.o_proj", linear, mode))
        gate, up = (ternary_of(state, hf + f"mlp.{p}_proj", linear, mode) for p in ("gate", "up"))
        block.ffn.w_gate_up.set_ternary(*fused([gate, up]))
        block.ffn.w_down.set_ternary(*ternary_of(state, hf + "mlp.down_proj", linear, mode))
        for zoo_norm, hf_norm in (
            (block.attn_norm, "input_layernorm"),
            (block.ffn_norm, "post_attention_layernorm"),
            (block.attn.sub_norm, "self_attn.attn_sub_norm"),
            (block.ffn.sub_norm, "mlp.ffn_sub_norm"),
        ):
            zoo_norm.weight = torch.nn.Parameter(state[hf + hf_norm + ".weight"].float().clone())
        if any(t.is_meta for t in block.state_dict().values()):
            raise ValueError(f"bitnet: block {i} has a tensor the checkpoint did not set")  # the mapping above is incomplete
        model.layers[i] = block
    fuse_norms(model)
    forget_decode_step(model)
    return model.eval()
