"""Every invalid ModelConfig value fails with a ValueError naming the field."""

import pytest

from zoo.models import ModelConfig

BAD = [
    ({"k_ratio": 0.0}, "k_ratio"),
    ({"k_ratio": 1.5}, "k_ratio"),
    ({"k_ratio": -0.2}, "k_ratio"),
    ({"dim": 100, "n_heads": 3}, "dim"),
    ({"n_heads": 4, "n_kv_heads": 3}, "n_kv_heads"),
    ({"ffn_act": "gelu"}, "ffn_act"),
    ({"weight_quant": "binary"}, "weight_quant"),
    ({"act_quant": "int4"}, "act_quant"),
    ({"sparsity": "random"}, "sparsity"),
    ({"kernel": "cuda"}, "kernel"),
    ({"moe_impl": "tutel"}, "moe_impl"),
    ({"dim": 0}, "dim"),
    ({"n_layers": -1}, "n_layers"),
    ({"vocab_size": 2.5}, "vocab_size"),
    ({"sparsity": "block", "block_size": 48}, "dim"),
    ({"sparsity": "block", "block_size": 32, "k_ratio": 0.01}, "k_ratio"),
    ({"sparsity": "topk", "k_ratio": 0.001}, "k_ratio"),
    ({"n_experts": -1}, "n_experts"),
    ({"n_experts": 4, "top_k": 5}, "top_k"),
    ({"n_experts": 4, "top_k": 0}, "top_k"),
    ({"n_shared_experts": 1}, "n_shared_experts"),
    ({"aux_loss_coef": -1.0}, "aux_loss_coef"),
    ({"dim": 96, "n_heads": 32}, "dim"),  # odd head_dim cannot take RoPE
    ({"norm_eps": 0.0}, "norm_eps"),
]


@pytest.mark.parametrize("changes,field", BAD, ids=[f"{f}-{i}" for i, (_, f) in enumerate(BAD)])
def test_invalid_values_name_the_field(changes, field):
    with pytest.raises(ValueError, match=rf"ModelConfig\.{field} must be"):
        ModelConfig(**changes)


def test_unknown_field_is_named():
    with pytest.raises(ValueError, match=r"unknown ModelConfig field\(s\) \['k_ration'\]"):
        ModelConfig.from_dict({"k_ration": 0.5}, source="my.yaml")


def test_defaults_resolve():
    config = ModelConfig(n_heads=8, weight_quant="ternary")
    assert config.kv_heads == 8 and config.has_sub_norm is True
    assert config.n_kv_heads is None and config.sub_norm is None  # resolved when read, never written back
    assert config.resolved().n_kv_heads == 8 and config.resolved().sub_norm is True
    assert ModelConfig().has_sub_norm is False
    assert ModelConfig(k_ratio=0.7).n_kept(10) == 7  # floor without binary-rounding surprises
    assert ModelConfig(n_experts=4, top_k=2, expert_ffn_dim=64).hidden_dim == 64


@pytest.mark.parametrize(
    "field, value, allowed",
    [
        ("rope_theta", "abc", "a number"),
        ("norm_eps", None, "a number"),
        ("k_ratio", True, "a number"),  # a boolean is not a number here, though Python says True == 1
        ("dim", 64.0, "an integer"),
        ("tie_embeddings", "yes", "true or false"),
        ("sub_norm", 1, "true or false or null"),
    ],
)
def test_release_config_with_a_wrong_type_names_file_and_field(tmp_path, field, value, allowed):
    import yaml

    from zoo.hub.release import read_config

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({**ModelConfig().to_dict(), field: value}))
    with pytest.raises(ValueError) as info:
        read_config(path)
    message = str(info.value)
    assert str(path) in message and f"ModelConfig.{field} must be {allowed}" in message and repr(value) in message


def test_one_input_rule_from_the_config_down_to_c():
    """ModelConfig builds one InputRule per width; every projection holds it, the packed inference
    projection hands the same four values to C (zoo_input_rule)."""
    from zoo.kernels import InputRule, compiled
    from zoo.kernels.compiled import abi
    from zoo.models import Decoder
    from zoo.models.inference import PackedTernaryLinear, to_inference
    from zoo.models.linear import ZooLinear

    config = ModelConfig(
        vocab_size=64, dim=64, n_layers=1, n_heads=4, ffn_dim=128, weight_quant="ternary", act_quant="int8", sparsity="block", k_ratio=0.5
    )
    assert config.input_rule(64) == InputRule("block", n_keep=16, block_size=32, int8=True)
    model = Decoder(config)
    rules = {m.in_features: m.rule for m in model.modules() if isinstance(m, ZooLinear)}
    assert rules == {64: config.input_rule(64), 128: config.input_rule(128)}
    packed = [m for m in to_inference(model).modules() if isinstance(m, PackedTernaryLinear)]
    assert packed
    for projection in packed:
        call = projection.prepared_call()
        assert isinstance(call, compiled.PackedLinear) == compiled.available()
        c_rule = call.projection.rule if compiled.available() else abi.InputRule.of(projection.rule)
        assert (c_rule.sparsity, c_rule.int8, c_rule.n_keep, c_rule.block_size) == (abi.SPARSITY_MODES["block"], 1, 16, 32)
    topk = ModelConfig(vocab_size=64, dim=64, n_layers=1, n_heads=4, ffn_dim=128, sparsity="topk", k_ratio=0.7)
    assert topk.input_rule(128) == InputRule("topk", n_keep=89) and not topk.input_rule(128).int8
    assert ModelConfig(vocab_size=64, dim=64, n_layers=1, n_heads=4, ffn_dim=128).input_rule(64).identity
