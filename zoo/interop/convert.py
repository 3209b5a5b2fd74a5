"""Key maps between Hugging Face Llama, Mistral, Qwen2 and Mixtral checkpoints and the zoo decoder.

Pure dict-to-dict functions, no file I/O and no ``transformers``: :mod:`zoo.interop.hf` reads and writes
the files around them.

- :func:`config_from_hf` / :func:`config_to_hf`: a ``config.json`` mapping to a
  :class:`ModelConfig` and back (plain RoPE or Llama 3's scaling). Settings the zoo decoder cannot
  reproduce exactly (other RoPE scalings, an activation other than SiLU, biases other than Qwen2's q/k/v, a head_dim that is not
  dim/n_heads, ...) raise ``ValueError`` naming the field.
- :func:`state_dict_from_hf` / :func:`state_dict_to_hf`: the tensors. Three things change
  besides the names: q, k and v are one fused ``wqkv`` projection (rows ``[q; k; v]``), gate and
  up one ``w_gate_up`` (rows ``[gate; up]``), and the q/k rows of each head are permuted because
  the zoo's RoPE rotates interleaved channel pairs (2j, 2j+1) while Hugging Face's
  ``rotate_half`` pairs channel j with j + head_dim/2. The permutation is the same for q and k,
  so every attention score, and hence the model's function, is unchanged.
- Mixtral is the zoo's dropless MoE exactly (top-k of E SwiGLU experts, softmax weights
  renormalised over the k, no shared expert, no selection bias): its per-expert ``w1`` (gate),
  ``w3`` (up) and ``w2`` (down) files stack into the zoo's ``w_gate_up [E, 2h, d]`` (rows
  ``[gate; up]``) and ``w_down [E, d, h]``, its ``block_sparse_moe.gate`` is the router.

A sliding attention window (Mistral, Qwen2) is exact for sequences no longer than the window,
so the imported ``max_seq_len`` is capped at it instead of refusing the model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from zoo.models.config import ModelConfig

MODEL_TYPES = ("llama", "mistral", "qwen2", "mixtral")
ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM", "mixtral": "MixtralForCausalLM"}

# Zoo field → the config.json field it comes from, to name the latter in errors.
_HF_FIELDS = {
    "vocab_size": "vocab_size",
    "dim": "hidden_size",
    "n_layers": "num_hidden_layers",
    "n_heads": "num_attention_heads",
    "n_kv_heads": "num_key_value_heads",
    "ffn_dim": "intermediate_size",
    "max_seq_len": "max_position_embeddings",
    "rope_theta": "rope_theta",
    "norm_eps": "rms_norm_eps",
    "init_std": "initializer_range",
}

_HF_PREFIX = "model."
# Old Llama checkpoints stored RoPE's inverse frequencies; they are derived from the config.
_DERIVED_SUFFIXES = ("rotary_emb.inv_freq",)


def _hf_error(field: str, problem: str) -> ValueError:
    return ValueError(f"Hugging Face config field {field!r}: {problem}")


def _require(hf_config: Mapping[str, Any], field: str) -> Any:
    if hf_config.get(field) is None:
        raise _hf_error(field, "missing; the zoo decoder needs it")
    return hf_config[field]


def _rope(hf_config: Mapping[str, Any]) -> dict[str, Any]:
    """RoPE fields from the transformers 4 keys (``rope_theta``, ``rope_scaling``) or 5's
    ``rope_parameters``: plain RoPE or Llama 3's scaling (``rope_type: llama3``)."""
    params = hf_config.get("rope_parameters")
    if params is not None and not isinstance(params, dict):
        raise _hf_error("rope_parameters", f"must be a mapping, got {params!r}")
    scaling = hf_config.get("rope_scaling")
    if scaling is not None and not isinstance(scaling, dict):
        raise _hf_error("rope_scaling", f"must be a mapping or null, got {scaling!r}")
    field, spec = ("rope_parameters", params) if params is not None else ("rope_scaling", scaling or {})
    for where, values in ((field, spec), ("partial_rotary_factor", hf_config)):
        if values.get("partial_rotary_factor", 1.0) != 1.0:
            raise _hf_error(where, f"partial_rotary_factor must be 1.0 (RoPE on every channel), got {values['partial_rotary_factor']!r}")
    theta = float(spec.get("rope_theta", hf_config.get("rope_theta", 10000.0)))
    kind = spec.get("rope_type", spec.get("type", "default"))
    if kind == "default":
        return {"rope_theta": theta}
    if kind != "llama3":
        raise _hf_error(field, f"rope_type must be 'default' or 'llama3', got {kind!r}")
    try:
        return {
            "rope_theta": theta,
            "rope_scaling": "llama3",
            "rope_factor": float(spec["factor"]),
            "rope_low_freq_factor": float(spec["low_freq_factor"]),
            "rope_high_freq_factor": float(spec["high_freq_factor"]),
            "rope_original_max_seq_len": int(spec["original_max_position_embeddings"]),
        }
    except (KeyError, TypeError, ValueError) as error:
        raise _hf_error(
            field, f"llama3 scaling needs factor, low_freq_factor, high_freq_factor and original_max_position_embeddings ({error})"
        ) from None


def _sliding_window(hf_config: Mapping[str, Any], model_type: str) -> int | None:
    """The attention window when some layer uses one, else None (Llama has no window)."""
    window = hf_config.get("sliding_window")
    if window is None or model_type == "llama":
        return None
    if model_type == "qwen2":
        # Qwen2 only windows when asked to, and then only the layers past max_window_layers.
        layer_types = hf_config.get("layer_types") or ()
        if not hf_config.get("use_sliding_window", False) and "sliding_attention" not in layer_types:
            return None
    if not isinstance(window, int) or window < 1:
        raise _hf_error("sliding_window", f"must be a positive integer or null, got {window!r}")
    return window


def config_from_hf(hf_config: Mapping[str, Any]) -> ModelConfig:
    """The :class:`ModelConfig` of a Llama, Mistral or Qwen2 ``config.json`` (as a dict)."""
    model_type = hf_config.get("model_type")
    if model_type not in MODEL_TYPES:
        raise _hf_error("model_type", f"must be one of {MODEL_TYPES}, got {model_type!r}")
    dim = int(_require(hf_config, "hidden_size"))
    n_heads = int(_require(hf_config, "num_attention_heads"))
    n_kv_heads = int(hf_config.get("num_key_value_heads") or n_heads)
    head_dim = hf_config.get("head_dim")
    if head_dim is not None and head_dim * n_heads != dim:
        raise _hf_error("head_dim", f"must be hidden_size/num_attention_heads = {dim}/{n_heads}, got {head_dim!r}")
    act = hf_config.get("hidden_act", "silu")
    if act not in ("silu", "swish"):
        raise _hf_error("hidden_act", f"must be 'silu' (SwiGLU), got {act!r}")
    if hf_config.get("mlp_bias", False):
        raise _hf_error("mlp_bias", "must be false; the zoo FFN has no biases")
    if model_type == "qwen2":
        qkv_bias = True  # Qwen2 hard-codes biases on q, k, v and none on o_proj
    else:
        if hf_config.get("attention_bias", False):
            raise _hf_error("attention_bias", f"must be false for {model_type}; it also biases o_proj, which the zoo decoder has not")
        qkv_bias = False
    if hf_config.get("use_qk_norm", False):
        raise _hf_error("use_qk_norm", "must be false; the zoo decoder has no q/k norms")
    max_seq_len = int(_require(hf_config, "max_position_embeddings"))
    window = _sliding_window(hf_config, model_type)
    if window is not None:
        max_seq_len = min(max_seq_len, window)
    values = {
        "vocab_size": int(_require(hf_config, "vocab_size")),
        "dim": dim,
        "n_layers": int(_require(hf_config, "num_hidden_layers")),
        "n_heads": n_heads,
        "n_kv_heads": n_kv_heads,
        "ffn_dim": int(_require(hf_config, "intermediate_size")),
        "max_seq_len": max_seq_len,
        **_rope(hf_config),
        "norm_eps": float(hf_config.get("rms_norm_eps", 1e-6)),
        # Every one of the three defaults to untied when the key is absent.
        "tie_embeddings": bool(hf_config.get("tie_word_embeddings", False)),
        "qkv_bias": qkv_bias,
        "ffn_act": "swiglu",
    }
    if model_type == "mixtral":  # dropless top-k of E SwiGLU experts, softmax weights renormalised over the k
        values.update(
            n_experts=int(_require(hf_config, "num_local_experts")),
            top_k=int(_require(hf_config, "num_experts_per_tok")),
            expert_ffn_dim=values["ffn_dim"],
            renormalize_router=True,
            aux_loss_coef=float(hf_config.get("router_aux_loss_coef", 0.01)),
        )
    if hf_config.get("initializer_range") is not None:
        values["init_std"] = float(hf_config["initializer_range"])
    try:
        return ModelConfig.from_dict(values, source=f"Hugging Face {model_type} config")
    except ValueError as error:
        field = re.search(r"ModelConfig\.(\w+)", str(error))
        hf_field = _HF_FIELDS.get(field.group(1)) if field else None
        if hf_field is None:
            raise
        raise ValueError(f"Hugging Face config field {hf_field!r}: {error}") from None


def check_exportable(config: ModelConfig, model_type: str) -> None:
    """Raises ``ValueError`` naming the first field a ``model_type`` checkpoint cannot express."""
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}")
    plain = {"weight_quant": "none", "act_quant": "none", "sparsity": "none", "ffn_act": "swiglu", "sub_norm": False}
    if model_type == "mixtral":
        plain.update(n_shared_experts=0, renormalize_router=True, balance_bias_rate=0.0)
        if not config.n_experts:
            raise ValueError(f"ModelConfig.n_experts=0 has no {model_type} equivalent; export a dense model as llama")
    else:
        plain["n_experts"] = 0
    resolved = config.resolved()
    for field, wanted in plain.items():
        if getattr(resolved, field) != wanted:
            raise ValueError(
                f"ModelConfig.{field}={getattr(resolved, field)!r} has no {model_type} equivalent; "
                f"only {field}={wanted!r} exports to Hugging Face"
            )
    if config.qkv_bias and model_type != "qwen2":
        raise ValueError(f"ModelConfig.qkv_bias=True has no {model_type} equivalent; export it as model_type='qwen2'")


def _rope_scaling_to_hf(config: ModelConfig) -> dict[str, Any] | None:
    if config.rope_scaling == "none":
        return None
    return {
        "rope_type": "llama3",
        "factor": config.rope_factor,
        "low_freq_factor": config.rope_low_freq_factor,
        "high_freq_factor": config.rope_high_freq_factor,
        "original_max_position_embeddings": config.rope_original_max_seq_len,
    }


def config_to_hf(config: ModelConfig, model_type: str) -> dict[str, Any]:
    """A ``config.json`` mapping that transformers 4.44+ and 5 read as the same model.

    RoPE is written with the transformers 4 keys (``rope_theta``, ``rope_scaling``), which 5 still
    reads, so one file serves both.
    """
    check_exportable(config, model_type)
    hf: dict[str, Any] = {
        "architectures": [ARCHITECTURES[model_type]],
        "model_type": model_type,
        "vocab_size": config.vocab_size,
        "hidden_size": config.dim,
        "intermediate_size": config.resolved().expert_ffn_dim if model_type == "mixtral" else config.ffn_dim,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": config.kv_heads,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": config.max_seq_len,
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_theta,
        "rope_scaling": _rope_scaling_to_hf(config),
        "tie_word_embeddings": config.tie_embeddings,
        "initializer_range": config.init_std,
        "attention_dropout": 0.0,
        "torch_dtype": "float32",
    }
    if model_type == "llama":
        hf.update(attention_bias=False, mlp_bias=False)
    elif model_type == "mistral":
        hf.update(sliding_window=None)
    elif model_type == "mixtral":
        hf.update(
            sliding_window=None,
            num_local_experts=config.n_experts,
            num_experts_per_tok=config.top_k,
            router_aux_loss_coef=config.aux_loss_coef,
            output_router_logits=False,
        )
    else:
        hf.update(use_sliding_window=False, sliding_window=None, max_window_layers=config.n_layers)
    return hf


# RoPE layout -------------------------------------------------------------------------------------
def _rotate_half_to_interleaved(rows: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Rows of each head reordered from (j, j + d/2) pairs to (2j, 2j+1) pairs; works for biases too."""
    head_dim = rows.shape[0] // n_heads
    return rows.reshape(n_heads, 2, head_dim // 2, *rows.shape[1:]).transpose(1, 2).reshape(rows.shape)


def _interleaved_to_rotate_half(rows: torch.Tensor, n_heads: int) -> torch.Tensor:
    head_dim = rows.shape[0] // n_heads
    return rows.reshape(n_heads, head_dim // 2, 2, *rows.shape[1:]).transpose(1, 2).reshape(rows.shape)


# State dicts -------------------------------------------------------------------------------------
def _layer_map(i: int, config: ModelConfig) -> dict[str, str]:
    """HF name → zoo name for the tensors of layer ``i`` that map one to one (a Mixtral layer's
    router; its experts are stacked and split in :func:`state_dict_from_hf` / :func:`state_dict_to_hf`)."""
    hf, zoo = f"{_HF_PREFIX}layers.{i}.", f"layers.{i}."
    names = {
        hf + "input_layernorm.weight": zoo + "attn_norm.weight",
        hf + "post_attention_layernorm.weight": zoo + "ffn_norm.weight",
        hf + "self_attn.o_proj.weight": zoo + "attn.wo.weight",
        hf + "mlp.down_proj.weight": zoo + "ffn.w_down.weight",
    }
    if config.n_experts:
        del names[hf + "mlp.down_proj.weight"]
        names[hf + "block_sparse_moe.gate.weight"] = zoo + "ffn.router.weight"
    return names


def _global_map(config: ModelConfig) -> dict[str, str]:
    names = {_HF_PREFIX + "embed_tokens.weight": "tok_embeddings.weight", _HF_PREFIX + "norm.weight": "norm.weight"}
    if not config.tie_embeddings:
        names["lm_head.weight"] = "lm_head.weight"
    return names


def _expected_hf_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    d, hd = config.dim, config.head_dim
    q, kv = config.n_heads * hd, config.kv_heads * hd
    shapes: dict[str, tuple[int, ...]] = {
        _HF_PREFIX + "embed_tokens.weight": (config.vocab_size, d),
        _HF_PREFIX + "norm.weight": (d,),
    }
    if not config.tie_embeddings:
        shapes["lm_head.weight"] = (config.vocab_size, d)
    for i in range(config.n_layers):
        p = f"{_HF_PREFIX}layers.{i}."
        shapes.update(
            {
                p + "input_layernorm.weight": (d,),
                p + "post_attention_layernorm.weight": (d,),
                p + "self_attn.q_proj.weight": (q, d),
                p + "self_attn.k_proj.weight": (kv, d),
                p + "self_attn.v_proj.weight": (kv, d),
                p + "self_attn.o_proj.weight": (d, q),
            }
        )
        shapes.update(_ffn_shapes(config, p + "mlp.", "hf"))
        if config.qkv_bias:
            shapes.update({p + "self_attn.q_proj.bias": (q,), p + "self_attn.k_proj.bias": (kv,), p + "self_attn.v_proj.bias": (kv,)})
    return shapes


def _ffn_shapes(config: ModelConfig, prefix: str, naming: str) -> dict[str, tuple[int, ...]]:
    """The FFN tensors of one layer in ``naming`` ``"hf"`` or ``"zoo"``: a dense SwiGLU, or
    ``n_experts`` SwiGLU experts and their router (Mixtral)."""
    d, hf = config.dim, naming == "hf"
    if not config.n_experts:
        h = config.ffn_dim
        if hf:
            return {prefix + "gate_proj.weight": (h, d), prefix + "up_proj.weight": (h, d), prefix + "down_proj.weight": (d, h)}
        return {prefix + "w_gate_up.weight": (2 * h, d), prefix + "w_down.weight": (d, h)}
    e, h = config.n_experts, config.resolved().expert_ffn_dim
    if not hf:
        return {prefix + "router.weight": (e, d), prefix + "w_gate_up.weight": (e, 2 * h, d), prefix + "w_down.weight": (e, d, h)}
    # Mixtral's files (as transformers 4 and 5 write them): per expert w1 (gate), w3 (up), w2 (down)
    moe = prefix.removesuffix("mlp.") + "block_sparse_moe."
    shapes = {moe + "gate.weight": (e, d)}
    for j in range(e):
        shapes |= {f"{moe}experts.{j}.w1.weight": (h, d), f"{moe}experts.{j}.w3.weight": (h, d), f"{moe}experts.{j}.w2.weight": (d, h)}
    return shapes


def _check_keys(state: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]], what: str) -> None:
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{what} does not match the config: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for name, shape in expected.items():
        if tuple(state[name].shape) != shape:
            raise ValueError(f"{what}: {name} has shape {tuple(state[name].shape)}, the config expects {shape}")


def state_dict_from_hf(hf_state: Mapping[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """Zoo decoder tensors from a Hugging Face Llama/Mistral/Qwen2 state dict (same dtypes).

    A tied model's ``lm_head.weight`` is dropped if present (the tie is in the config); RoPE
    inverse-frequency buffers are ignored. Any other missing, unexpected or misshapen tensor
    raises ``ValueError`` naming it.
    """
    hf_state = {k: v for k, v in hf_state.items() if not k.endswith(_DERIVED_SUFFIXES)}
    if config.tie_embeddings:
        hf_state.pop("lm_head.weight", None)
    _check_keys(hf_state, _expected_hf_shapes(config), "Hugging Face state dict")

    state = {zoo: hf_state[hf] for hf, zoo in _global_map(config).items()}
    for i in range(config.n_layers):
        state.update({zoo: hf_state[hf] for hf, zoo in _layer_map(i, config).items()})
        attn, mlp = f"{_HF_PREFIX}layers.{i}.self_attn.", f"{_HF_PREFIX}layers.{i}.mlp."
        for kind in ("weight", "bias") if config.qkv_bias else ("weight",):
            q = _rotate_half_to_interleaved(hf_state[f"{attn}q_proj.{kind}"], config.n_heads)
            k = _rotate_half_to_interleaved(hf_state[f"{attn}k_proj.{kind}"], config.kv_heads)
            state[f"layers.{i}.attn.wqkv.{kind}"] = torch.cat([q, k, hf_state[f"{attn}v_proj.{kind}"]])
        if not config.n_experts:
            state[f"layers.{i}.ffn.w_gate_up.weight"] = torch.cat([hf_state[mlp + "gate_proj.weight"], hf_state[mlp + "up_proj.weight"]])
        else:
            experts = [f"{_HF_PREFIX}layers.{i}.block_sparse_moe.experts.{j}." for j in range(config.n_experts)]
            state[f"layers.{i}.ffn.w_gate_up.weight"] = torch.stack(
                [torch.cat([hf_state[x + "w1.weight"], hf_state[x + "w3.weight"]]) for x in experts]
            )
            state[f"layers.{i}.ffn.w_down.weight"] = torch.stack([hf_state[x + "w2.weight"] for x in experts])
    return state


def _expected_zoo_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    d, hd = config.dim, config.head_dim
    qkv = (config.n_heads + 2 * config.kv_heads) * hd
    shapes: dict[str, tuple[int, ...]] = {"tok_embeddings.weight": (config.vocab_size, d), "norm.weight": (d,)}
    if not config.tie_embeddings:
        shapes["lm_head.weight"] = (config.vocab_size, d)
    for i in range(config.n_layers):
        p = f"layers.{i}."
        shapes.update(
            {
                p + "attn_norm.weight": (d,),
                p + "ffn_norm.weight": (d,),
                p + "attn.wqkv.weight": (qkv, d),
                p + "attn.wo.weight": (d, d),
            }
        )
        shapes.update(_ffn_shapes(config, p + "ffn.", "zoo"))
        if config.qkv_bias:
            shapes[p + "attn.wqkv.bias"] = (qkv,)
    return shapes


def state_dict_to_hf(state: Mapping[str, torch.Tensor], config: ModelConfig, model_type: str) -> dict[str, torch.Tensor]:
    """Hugging Face ``model_type`` tensors from a zoo decoder state dict (same dtypes).

    The inverse of :func:`state_dict_from_hf`. A tied model gets no ``lm_head.weight``; a zoo
    model without q/k/v biases exported as Qwen2 gets zero biases, which Qwen2 always has.
    The q/k/v tensors may be views into one ``wqkv`` storage: clone before writing safetensors.
    """
    check_exportable(config, model_type)
    state = dict(state)
    if config.tie_embeddings:
        state.pop("lm_head.weight", None)
    _check_keys(state, _expected_zoo_shapes(config), "zoo state dict")

    hd = config.head_dim
    sizes = [config.n_heads * hd, config.kv_heads * hd, config.kv_heads * hd]
    hf = {name: state[zoo] for name, zoo in _global_map(config).items()}
    for i in range(config.n_layers):
        hf.update({name: state[zoo] for name, zoo in _layer_map(i, config).items()})
        attn, mlp = f"{_HF_PREFIX}layers.{i}.self_attn.", f"{_HF_PREFIX}layers.{i}.mlp."
        weight = state[f"layers.{i}.attn.wqkv.weight"]
        bias = state.get(f"layers.{i}.attn.wqkv.bias")
        if bias is None and model_type == "qwen2":
            bias = weight.new_zeros(weight.shape[0])
        for kind, fused in (("weight", weight), ("bias", bias)):
            if fused is None:
                continue
            q, k, v = fused.split(sizes)
            hf[f"{attn}q_proj.{kind}"] = _interleaved_to_rotate_half(q, config.n_heads)
            hf[f"{attn}k_proj.{kind}"] = _interleaved_to_rotate_half(k, config.kv_heads)
            hf[f"{attn}v_proj.{kind}"] = v
        if not config.n_experts:
            gate, up = state[f"layers.{i}.ffn.w_gate_up.weight"].chunk(2)
            hf[mlp + "gate_proj.weight"], hf[mlp + "up_proj.weight"] = gate, up
        else:
            down = state[f"layers.{i}.ffn.w_down.weight"]
            for j, gate_up in enumerate(state[f"layers.{i}.ffn.w_gate_up.weight"]):
                expert = f"{_HF_PREFIX}layers.{i}.block_sparse_moe.experts.{j}."
                hf[expert + "w1.weight"], hf[expert + "w3.weight"] = gate_up.chunk(2)
                hf[expert + "w2.weight"] = down[j]
    return hf
