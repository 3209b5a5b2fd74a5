"""The Hugging Face key maps of zoo.interop.convert, without transformers: configs, state dicts, RoPE layout."""

import pytest
import torch

from zoo.interop.convert import config_from_hf, config_to_hf, state_dict_from_hf, state_dict_to_hf
from zoo.models.attention import apply_rope, rope_frequencies
from zoo.models.config import ModelConfig
from zoo.models.decoder import Decoder


def hf_config(model_type="llama", **changes):
    """A config.json as transformers 4 writes it (``rope_theta`` at the top level)."""
    config = {
        "model_type": model_type,
        "vocab_size": 300,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "hidden_act": "silu",
        "max_position_embeddings": 64,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "tie_word_embeddings": False,
        "initializer_range": 0.02,
    }
    if model_type == "llama":
        config.update(attention_bias=False, mlp_bias=False, head_dim=16)
    elif model_type == "mistral":
        config.update(sliding_window=None, head_dim=16)
    else:
        config.update(use_sliding_window=False, sliding_window=4096, max_window_layers=2)
    config.update(changes)
    return config


CASES = [  # (model_type, tied, qkv_bias)
    ("llama", False, False),
    ("llama", True, False),
    ("mistral", True, False),
    ("qwen2", False, True),
    ("qwen2", True, True),
]


def random_hf_state(config: ModelConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Distinct random values in every tensor, so a swapped row or tensor cannot go unnoticed."""
    gen = torch.Generator().manual_seed(seed)
    d, hd, f = config.dim, config.head_dim, config.ffn_dim
    q, kv = config.n_heads * hd, config.n_kv_heads * hd
    shapes = {"model.embed_tokens.weight": (config.vocab_size, d), "model.norm.weight": (d,)}
    if not config.tie_embeddings:
        shapes["lm_head.weight"] = (config.vocab_size, d)
    for i in range(config.n_layers):
        p = f"model.layers.{i}."
        shapes.update(
            {
                p + "input_layernorm.weight": (d,),
                p + "post_attention_layernorm.weight": (d,),
                p + "self_attn.q_proj.weight": (q, d),
                p + "self_attn.k_proj.weight": (kv, d),
                p + "self_attn.v_proj.weight": (kv, d),
                p + "self_attn.o_proj.weight": (d, q),
                p + "mlp.gate_proj.weight": (f, d),
                p + "mlp.up_proj.weight": (f, d),
                p + "mlp.down_proj.weight": (d, f),
            }
        )
        if config.qkv_bias:
            shapes.update({p + "self_attn.q_proj.bias": (q,), p + "self_attn.k_proj.bias": (kv,), p + "self_attn.v_proj.bias": (kv,)})
    return {name: torch.randn(shape, generator=gen) for name, shape in shapes.items()}


# Configs -----------------------------------------------------------------------------------------
def test_config_from_hf_reads_every_field():
    config = config_from_hf(hf_config("mistral", tie_word_embeddings=True, rope_theta=500000.0, rms_norm_eps=1e-5))
    assert (config.vocab_size, config.dim, config.n_layers, config.n_heads, config.n_kv_heads, config.ffn_dim) == (300, 64, 2, 4, 2, 128)
    assert (config.max_seq_len, config.rope_theta, config.norm_eps, config.tie_embeddings) == (64, 500000.0, 1e-5, True)
    assert (config.qkv_bias, config.ffn_act, config.sparsity, config.weight_quant) == (False, "swiglu", "none", "none")
    assert config_from_hf(hf_config("qwen2")).qkv_bias is True


def test_config_from_hf_reads_transformers_5_rope_parameters():
    config = hf_config("llama", rope_parameters={"rope_type": "default", "rope_theta": 1234.0})
    del config["rope_theta"], config["rope_scaling"]
    assert config_from_hf(config).rope_theta == 1234.0


def test_missing_kv_heads_and_tie_default_to_multi_head_untied():
    config = hf_config("llama")
    del config["num_key_value_heads"], config["tie_word_embeddings"], config["head_dim"]
    parsed = config_from_hf(config)
    assert parsed.n_kv_heads == 4 and parsed.tie_embeddings is False


@pytest.mark.parametrize(
    "model_type, window, use, expected",
    [
        ("mistral", 16, None, 16),
        ("mistral", 4096, None, 64),
        ("qwen2", 16, False, 64),  # Qwen2 ignores its window unless use_sliding_window
        ("qwen2", 16, True, 16),
        ("llama", 16, None, 64),  # Llama has no window, whatever its config says
    ],
)
def test_sliding_window_caps_max_seq_len(model_type, window, use, expected):
    changes = {"sliding_window": window} if use is None else {"sliding_window": window, "use_sliding_window": use}
    assert config_from_hf(hf_config(model_type, **changes)).max_seq_len == expected


@pytest.mark.parametrize("model_type, tied, qkv_bias", CASES)
def test_config_round_trip(model_type, tied, qkv_bias):
    config = ModelConfig(
        vocab_size=300,
        dim=64,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        ffn_dim=128,
        max_seq_len=96,
        rope_theta=20000.0,
        norm_eps=1e-6,
        tie_embeddings=tied,
        qkv_bias=qkv_bias,
        init_std=0.03,
    )
    hf = config_to_hf(config, model_type)
    assert hf["model_type"] == model_type and hf["tie_word_embeddings"] is tied
    assert config_from_hf(hf) == config


@pytest.mark.parametrize(
    "model_type, changes, field",
    [
        ("gpt2", {}, "model_type"),
        ("llama", {"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "rope_scaling"),
        ("llama", {"rope_scaling": {"type": "linear", "factor": 2.0}}, "rope_scaling"),
        ("llama", {"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}}, "rope_parameters"),
        ("llama", {"rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.5}}, "rope_parameters"),
        ("llama", {"rope_scaling": "linear"}, "rope_scaling"),
        ("llama", {"attention_bias": True}, "attention_bias"),
        ("mistral", {"attention_bias": True}, "attention_bias"),
        ("llama", {"mlp_bias": True}, "mlp_bias"),
        ("qwen2", {"hidden_act": "gelu"}, "hidden_act"),
        ("llama", {"head_dim": 32}, "head_dim"),
        ("llama", {"hidden_size": None}, "hidden_size"),
        ("mistral", {"num_key_value_heads": 3}, "num_key_value_heads"),
        ("llama", {"num_attention_heads": 3, "head_dim": None}, "hidden_size"),
        ("qwen2", {"sliding_window": 0, "use_sliding_window": True}, "sliding_window"),
    ],
)
def test_unsupported_hf_config_raises_naming_the_field(model_type, changes, field):
    with pytest.raises(ValueError, match=f"'{field}'"):
        config_from_hf(hf_config(model_type, **changes))


@pytest.mark.parametrize(
    "changes, model_type, field",
    [
        ({"sparsity": "topk", "k_ratio": 0.5}, "llama", "sparsity"),
        ({"weight_quant": "ternary"}, "llama", "weight_quant"),
        ({"act_quant": "int8"}, "qwen2", "act_quant"),
        ({"ffn_act": "relu2"}, "mistral", "ffn_act"),
        ({"n_experts": 4}, "llama", "n_experts"),
        ({"qkv_bias": True}, "llama", "qkv_bias"),
        ({"qkv_bias": True}, "mistral", "qkv_bias"),
        ({}, "gpt2", "model_type"),
    ],
)
def test_export_refuses_what_hf_cannot_express(changes, model_type, field):
    config = ModelConfig(vocab_size=300, dim=64, n_layers=2, n_heads=4, ffn_dim=128, **changes)
    with pytest.raises(ValueError, match=field):
        config_to_hf(config, model_type)
    with pytest.raises(ValueError, match=field):
        state_dict_to_hf(Decoder(config).state_dict(), config, model_type)


# State dicts -------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_type, tied, qkv_bias", CASES)
def test_state_dict_round_trip_is_exact(model_type, tied, qkv_bias):
    config = config_from_hf(hf_config(model_type, tie_word_embeddings=tied))
    assert config.qkv_bias is qkv_bias
    hf = random_hf_state(config)
    zoo_state = state_dict_from_hf(hf, config)
    expected_keys = {k for k in Decoder(config).state_dict() if not (tied and k == "lm_head.weight")}
    assert set(zoo_state) == expected_keys
    back = state_dict_to_hf(zoo_state, config, model_type)
    assert set(back) == set(hf)
    for name, tensor in hf.items():
        assert back[name].dtype == tensor.dtype and torch.equal(back[name], tensor), name


@pytest.mark.parametrize("model_type, tied, qkv_bias", CASES)
def test_zoo_state_round_trip_is_exact(model_type, tied, qkv_bias):
    config = config_from_hf(hf_config(model_type, tie_word_embeddings=tied))
    torch.manual_seed(0)
    state = Decoder(config).state_dict()
    if qkv_bias:
        for name in state:
            if name.endswith("wqkv.bias"):
                state[name] = torch.randn_like(state[name])
    back = state_dict_from_hf(state_dict_to_hf(state, config, model_type), config)
    assert set(back) == set(state) - ({"lm_head.weight"} if tied else set())
    assert all(torch.equal(back[name], state[name]) for name in back)


def test_bf16_tensors_keep_their_dtype():
    config = config_from_hf(hf_config("qwen2"))
    hf = {k: v.bfloat16() for k, v in random_hf_state(config).items()}
    assert {t.dtype for t in state_dict_from_hf(hf, config).values()} == {torch.bfloat16}


def test_fusion_layout_gate_up_and_qkv_rows():
    config = config_from_hf(hf_config("qwen2"))
    hf = random_hf_state(config)
    zoo_state = state_dict_from_hf(hf, config)
    gate, up = zoo_state["layers.1.ffn.w_gate_up.weight"].chunk(2)
    assert torch.equal(gate, hf["model.layers.1.mlp.gate_proj.weight"]) and torch.equal(up, hf["model.layers.1.mlp.up_proj.weight"])
    q, k, v = zoo_state["layers.0.attn.wqkv.bias"].split([64, 32, 32])
    assert torch.equal(v, hf["model.layers.0.self_attn.v_proj.bias"])  # v is not rotated, so it is not permuted
    hf_q = hf["model.layers.0.self_attn.q_proj.bias"].view(4, 16)
    # Interleaved pair j of a head is (rotate_half channel j, channel j + 8).
    assert torch.equal(q.view(4, 8, 2)[:, :, 0], hf_q[:, :8]) and torch.equal(q.view(4, 8, 2)[:, :, 1], hf_q[:, 8:])
    assert not torch.equal(q, hf["model.layers.0.self_attn.q_proj.bias"])


def rotate_half_rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    """Hugging Face Llama's RoPE, written out: channel j pairs with j + d/2."""
    seq, head_dim = x.shape[-2], x.shape[-1]
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(seq, dtype=torch.float32), inv_freq)
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
    rotated = torch.cat([-x[..., head_dim // 2 :], x[..., : head_dim // 2]], -1)
    return x * cos + rotated * sin


def test_permutation_turns_rotate_half_rope_into_interleaved_rope():
    config = config_from_hf(hf_config("llama", num_key_value_heads=4))
    hf = random_hf_state(config)
    zoo_state = state_dict_from_hf(hf, config)
    x = torch.randn(1, 12, config.dim) / 16  # scores of order 1, where fp32 defaults are meaningful
    heads = lambda t: t.view(1, 12, config.n_heads, config.head_dim).transpose(1, 2)  # noqa: E731

    hf_q = rotate_half_rope(heads(x @ hf["model.layers.0.self_attn.q_proj.weight"].T), config.rope_theta)
    hf_k = rotate_half_rope(heads(x @ hf["model.layers.0.self_attn.k_proj.weight"].T), config.rope_theta)
    q, k, _ = (x @ zoo_state["layers.0.attn.wqkv.weight"].T).split([64, 64, 64], -1)
    freqs = rope_frequencies(config.head_dim, 12, config.rope_theta)
    zoo_q, zoo_k = apply_rope(heads(q), freqs), apply_rope(heads(k), freqs)
    torch.testing.assert_close(zoo_q @ zoo_k.transpose(-1, -2), hf_q @ hf_k.transpose(-1, -2))
    # Without the permutation the scores differ: the check above can fail.
    plain_q = apply_rope(heads(x @ hf["model.layers.0.self_attn.q_proj.weight"].T), freqs)
    plain_k = apply_rope(heads(x @ hf["model.layers.0.self_attn.k_proj.weight"].T), freqs)
    assert not torch.allclose(plain_q @ plain_k.transpose(-1, -2), hf_q @ hf_k.transpose(-1, -2), atol=1e-3)


def test_tied_lm_head_and_rotary_buffers_are_dropped():
    config = config_from_hf(hf_config("llama", tie_word_embeddings=True))
    hf = random_hf_state(config)
    extra = {"lm_head.weight": hf["model.embed_tokens.weight"], "model.layers.0.self_attn.rotary_emb.inv_freq": torch.ones(8)}
    assert set(state_dict_from_hf({**hf, **extra}, config)) == set(state_dict_from_hf(hf, config))
    assert "lm_head.weight" not in state_dict_to_hf(state_dict_from_hf(hf, config), config, "llama")


def test_bad_hf_state_raises_naming_the_tensor():
    config = config_from_hf(hf_config("llama"))
    hf = random_hf_state(config)
    with pytest.raises(ValueError, match="model.layers.1.mlp.up_proj.weight"):
        state_dict_from_hf({k: v for k, v in hf.items() if k != "model.layers.1.mlp.up_proj.weight"}, config)
    with pytest.raises(ValueError, match="model.layers.2.mlp.up_proj.weight"):
        state_dict_from_hf({**hf, "model.layers.2.mlp.up_proj.weight": torch.zeros(1)}, config)
    with pytest.raises(ValueError, match=r"model.layers.0.self_attn.k_proj.weight has shape \(64, 64\)"):
        state_dict_from_hf({**hf, "model.layers.0.self_attn.k_proj.weight": torch.zeros(64, 64)}, config)
    with pytest.raises(ValueError, match="q_proj.bias"):  # Qwen2 needs its biases
        state_dict_from_hf(hf, config_from_hf(hf_config("qwen2")))


def test_qwen2_export_of_a_biasless_model_writes_zero_biases():
    config = ModelConfig(vocab_size=300, dim=64, n_layers=1, n_heads=4, n_kv_heads=2, ffn_dim=128)
    hf = state_dict_to_hf(Decoder(config).state_dict(), config, "qwen2")
    for name in ("q_proj", "k_proj", "v_proj"):
        assert torch.equal(hf[f"model.layers.0.self_attn.{name}.bias"], torch.zeros(hf[f"model.layers.0.self_attn.{name}.weight"].shape[0]))


@pytest.mark.parametrize("where", ["rope_scaling", "rope_parameters"])
def test_llama3_rope_scaling_round_trips(where):
    spec = {
        "rope_type": "llama3",
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    changes = {"rope_scaling": spec} if where == "rope_scaling" else {"rope_parameters": {**spec, "rope_theta": 500000.0}}
    config = config_from_hf(hf_config("llama", **changes))
    assert (config.rope_scaling, config.rope_factor, config.rope_high_freq_factor, config.rope_original_max_seq_len) == (
        "llama3",
        32.0,
        4.0,
        8192,
    )
    assert config_to_hf(config, "llama")["rope_scaling"] == {k: v for k, v in spec.items()}
    assert config_from_hf(config_to_hf(config, "llama")) == config
