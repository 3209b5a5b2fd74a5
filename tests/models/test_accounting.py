"""Activated parameters as Q-Sparse §3.6 defines them, on the meta device and measured on data."""

import pytest
import torch

from zoo.models import Decoder, ModelConfig
from zoo.models.accounting import account, count_params
from zoo.models.counts import config_counts

MISTRAL_7B = ModelConfig(
    vocab_size=32000, dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, ffn_dim=14336, max_seq_len=4096, tie_embeddings=False
)


def test_mistral_7b_activated_count_matches_the_paper():
    # Q-Sparse §3.6: per-projection sparsity QKV/Out/Up/Gate/Down = 42.0/40/40/40/60.4 % gives 3.8B activated.
    model = Decoder.on_meta(MISTRAL_7B)
    assert model.tok_embeddings.weight.is_meta
    stats = account(model, {"attn_in": 0.42, "attn_out": 0.40, "ffn_in": 0.40, "ffn_down": 0.604})
    assert stats.total_params == 7_241_732_096  # Mistral-7B's published parameter count
    assert stats.activated_params == pytest.approx(3.8e9, rel=0.01)
    assert stats.non_embedding_params == stats.total_params - 2 * 32000 * 4096


def test_weight_bytes_per_token_counts_bits():
    dense = account(Decoder.on_meta(MISTRAL_7B))
    ternary = account(Decoder.on_meta(MISTRAL_7B.replace(weight_quant="ternary")))
    head_bytes = 32000 * 4096 * 2 + 4096 * 2
    linear_params = dense.activated_params
    assert dense.weight_bytes_per_token == pytest.approx(linear_params * 2 + head_bytes)
    # 2 bits per weight plus one fp32 scale per projection (4 per layer).
    assert ternary.weight_bytes_per_token == pytest.approx(linear_params / 4 + 4 * 32 * 4 + head_bytes)


def test_nominal_sparsity_from_k_ratio_and_measured_on_data():
    config = ModelConfig(vocab_size=64, dim=32, n_layers=2, n_heads=4, ffn_dim=64, sparsity="topk", k_ratio=0.5, ffn_act="relu2")
    model = Decoder(config)
    nominal = account(model)
    _, non_embedding = count_params(model)
    linear_params = sum(m.weight.numel() for m in model.modules() if hasattr(m, "accounting_entry"))
    assert nominal.basis == "nominal" and nominal.activated_params == pytest.approx(0.5 * linear_params)
    batches = [torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(i)) for i in range(2)]
    measured = account(model, batches=batches)
    assert measured.basis == "measured"
    # Top-K guarantees at least half zeros; ReLU^2 may add natural zeros at the down projection.
    assert all(s >= 0.5 - 1e-9 for s in measured.input_sparsity.values())
    assert measured.activated_params <= nominal.activated_params + 1e-6
    assert measured.activated_params < non_embedding


def test_dense_model_activates_every_linear_weight():
    model = Decoder(ModelConfig(vocab_size=64, dim=32, n_layers=1, n_heads=4, ffn_dim=64))
    linear_params = sum(m.weight.numel() for m in model.modules() if hasattr(m, "accounting_entry"))
    assert account(model).activated_params == linear_params


def test_sparsity_out_of_range_is_refused():
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        account(Decoder.on_meta(MISTRAL_7B), {"attn_in": 1.2})


def registered_and_edge_configs():
    from zoo.hub.registry import list_models, model_config
    from zoo.models.inference.shapes import PUBLIC_SHAPES, VARIANTS, shape_config

    configs = {name: model_config(name) for name in list_models()}
    configs |= {f"{v}@{s}": shape_config(s, v) for s in PUBLIC_SHAPES for v in VARIANTS}
    base = model_config("bitnet-qsparse-moe-tiny")
    configs["shared-experts-untied-bias"] = base.replace(n_shared_experts=2, tie_embeddings=False, qkv_bias=True)
    configs["sub-norm-full-precision-block"] = MISTRAL_7B.replace(sub_norm=True, sparsity="block", k_ratio=0.5, n_layers=2)
    return configs


@pytest.mark.parametrize("name", sorted(registered_and_edge_configs()))
def test_config_arithmetic_equals_the_built_models_count(name):
    """zoo list counts from the config alone (zoo.models.counts); the built model is the truth."""
    config = registered_and_edge_configs()[name]
    built, counted = account(Decoder.on_meta(config)), config_counts(config)
    assert (counted.total_params, counted.non_embedding_params) == (built.total_params, built.non_embedding_params)
    assert counted.activated_params == pytest.approx(built.activated_params, rel=1e-12)
    assert counted.weight_bytes_per_token == pytest.approx(built.weight_bytes_per_token, rel=1e-12)


def test_zoo_list_imports_no_torch():
    import subprocess
    import sys

    code = "import sys; from zoo.cli import main; main(['list']); print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "['numpy']"  # numpy: the scaling commands' parser; torch never
