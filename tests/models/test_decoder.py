"""The composable decoder: degenerate cases equal their dense counterparts, KV-cache decoding equals
recomputation, top-K sits at exactly the four Q-Sparse sites, and everything gets gradients."""

import pytest
import torch
import torch.nn.functional as F

from zoo.models import Decoder, ModelConfig, ZooLinear

TINY = dict(vocab_size=64, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, max_seq_len=32)
VARIANTS = {
    "dense": {},
    "qsparse": dict(sparsity="topk", k_ratio=0.5, ffn_act="relu2"),
    "block": dict(sparsity="block", k_ratio=0.5, block_size=16, ffn_act="relu2"),
    "bitnet": dict(weight_quant="ternary", act_quant="int8", ffn_act="relu2"),
    "bitnet-qsparse": dict(weight_quant="ternary", act_quant="int8", sparsity="topk", k_ratio=0.6),
    "untied": dict(tie_embeddings=False),
}


def tokens(batch=2, seq=12, seed=0):
    return torch.randint(0, TINY["vocab_size"], (batch, seq), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("variant", VARIANTS)
def test_kv_cache_decoding_equals_full_recomputation(variant):
    torch.manual_seed(0)
    model = Decoder(ModelConfig(**TINY, **VARIANTS[variant])).eval()
    ids = tokens()
    full = model(ids)
    caches = model.new_cache(batch=2)
    pieces = [model(ids[:, :5], caches)] + [model(ids[:, t : t + 1], caches) for t in range(5, 12)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full)


@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_backward_reaches_every_parameter(variant):
    torch.manual_seed(0)
    model = Decoder(ModelConfig(**TINY, **VARIANTS[variant]))
    logits = model(tokens())
    F.cross_entropy(logits.flatten(0, 1), tokens(seed=1).flatten()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_k_equal_d_equals_dense():
    torch.manual_seed(0)
    dense = Decoder(ModelConfig(**TINY))
    full_k = Decoder(ModelConfig(**TINY, sparsity="topk", k_ratio=1.0))
    full_k.load_state_dict(dense.state_dict())
    torch.testing.assert_close(full_k(tokens()), dense(tokens()), rtol=0, atol=0)


def test_ternary_layer_on_ternary_weights_equals_f_linear():
    layer = ZooLinear(24, 10, weight_quant="ternary")
    alpha = 0.37
    with torch.no_grad():  # {-α, +α}: absmean recovers α exactly, so quantisation is the identity
        layer.weight.copy_((torch.randint(0, 2, (10, 24)).float() * 2 - 1) * alpha)
    x = torch.randn(3, 24)
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight))


def test_ternary_with_zeros_keeps_the_pattern_and_rescales_to_absmean():
    # With zeros, absmean is α·(non-zero fraction): BitNet keeps the {-1, 0, 1} pattern, not α.
    from zoo import kernels

    pattern = torch.randint(-1, 2, (10, 24)).float()
    values, scale = kernels.ternary_quantize_raw(pattern * 0.37)
    assert torch.equal(values.float(), pattern)
    torch.testing.assert_close(scale, (pattern * 0.37).abs().mean())


def test_sparsity_only_at_the_four_sites_and_never_on_embeddings_or_head():
    model = Decoder(ModelConfig(**TINY, sparsity="topk", k_ratio=0.5))
    sites = sorted({m.site for m in model.modules() if isinstance(m, ZooLinear)})
    assert sites == sorted(["attn_in", "attn_out", "ffn_in", "ffn_down"])
    assert sum(isinstance(m, ZooLinear) for m in model.modules()) == 4 * TINY["n_layers"]
    assert not isinstance(model.lm_head, ZooLinear) and not isinstance(model.tok_embeddings, ZooLinear)
    # Each site's input really is sparse: exactly K of D non-zero per token.
    seen = {}

    def capture(name):
        def hook(module, inputs, output):
            seen[name] = module.transform_input(inputs[0])

        return hook

    hooks = [m.register_forward_hook(capture(n)) for n, m in model.named_modules() if isinstance(m, ZooLinear)]
    model(tokens())
    for hook in hooks:
        hook.remove()
    for name, x in seen.items():
        kept = (x != 0).sum(-1)
        assert torch.equal(kept, torch.full_like(kept, x.shape[-1] // 2)), name


def test_tied_head_shares_the_embedding():
    model = Decoder(ModelConfig(**TINY))
    assert model.lm_head.weight is model.tok_embeddings.weight
    untied = Decoder(ModelConfig(**TINY, tie_embeddings=False))
    assert untied.lm_head.weight is not untied.tok_embeddings.weight
    assert untied.lm_head.weight.data_ptr() != untied.tok_embeddings.weight.data_ptr()
    assert "lm_head.weight" in dict(untied.named_parameters())  # a parameter of its own, trained apart


def test_sequence_longer_than_max_seq_len_is_refused():
    model = Decoder(ModelConfig(**TINY))
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, 33, dtype=torch.long))


def test_bitnet_sub_norms_only_with_ternary_weights():
    ternary = Decoder(ModelConfig(**TINY, weight_quant="ternary"))
    dense = Decoder(ModelConfig(**TINY))
    assert "layers.0.attn.sub_norm.weight" in ternary.state_dict()
    assert "layers.0.ffn.sub_norm.weight" in ternary.state_dict()
    assert not any("sub_norm" in k for k in dense.state_dict())


def test_kernel_choice_never_changes_state_dict_keys():
    keys = {kernel: list(Decoder(ModelConfig(**TINY, kernel=kernel)).state_dict()) for kernel in ("auto", "torch", "triton")}
    assert keys["auto"] == keys["torch"] == keys["triton"]


@pytest.mark.parametrize("variant", ["qsparse", "block", "bitnet-qsparse"])
def test_kernel_choice_changes_no_value_of_the_training_form(variant):
    """``kernel: auto`` (the compiled input transform and RMSNorm on a CPU) and ``torch`` (the
    references) give the same logits, in training and in cached decoding: the transforms agree bit
    for bit (tests/kernels/test_input_transform.py), the norms to fp32 rounding."""
    torch.manual_seed(0)
    config = ModelConfig(**TINY, **VARIANTS[variant])
    fast = Decoder(config)
    reference = Decoder(config.replace(kernel="torch"))
    reference.load_state_dict(fast.state_dict())
    ids = tokens(batch=2)
    close = dict(rtol=1e-4, atol=1e-5)  # a norm's rounding can move one int8 value by one step
    torch.testing.assert_close(fast(ids), reference(ids), **close)
    with torch.no_grad():
        caches_fast, caches_ref = fast.new_cache(1), reference.new_cache(1)
        torch.testing.assert_close(fast(ids[:1, :4], caches_fast), reference(ids[:1, :4], caches_ref), **close)
        for t in range(4, 12):
            torch.testing.assert_close(fast(ids[:1, t : t + 1], caches_fast), reference(ids[:1, t : t + 1], caches_ref), **close)


def test_frozen_weight_cache_follows_weight_updates():
    layer = ZooLinear(16, 8, weight_quant="ternary")
    x = torch.randn(2, 16)
    with torch.no_grad():
        first = layer(x)
        assert torch.equal(layer(x), first)  # served from the cache
        layer.weight.add_(torch.randn_like(layer.weight))  # bumps the version counter
        torch.testing.assert_close(layer(x), F.linear(x, layer.effective_weight()))
        assert not torch.allclose(layer(x), first)
    y = layer(x)  # autograd on: no cache, gradients reach the latent weight
    y.sum().backward()
    assert layer.weight.grad is not None
