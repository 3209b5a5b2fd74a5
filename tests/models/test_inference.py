"""The inference form: packed ternary projections hold 2-bit weights and no latent copy, run the
same input rule as training, and give the training form's logits and greedy tokens."""

import pytest
import torch
import torch.nn.functional as F

from zoo.kernels import compiled
from zoo.kernels.norm.reference import rms_norm as reference_rms_norm
from zoo.models import Decoder
from zoo.models.config import ModelConfig
from zoo.models.generate import generate
from zoo.models.inference import (
    FullPrecisionLinear,
    PackedTernaryLinear,
    PreparedProjection,
    SparseInputLinear,
    tensor_bytes,
    to_inference,
)
from zoo.models.linear import ZooLinear

TINY = dict(vocab_size=64, dim=64, n_layers=2, n_heads=4, ffn_dim=128, max_seq_len=64)
VARIANTS = {
    "bitnet": dict(weight_quant="ternary", act_quant="int8", ffn_act="relu2"),
    "bitnet-qsparse": dict(weight_quant="ternary", act_quant="int8", sparsity="topk", k_ratio=0.5, ffn_act="relu2"),
    "bitnet-block": dict(weight_quant="ternary", act_quant="int8", sparsity="block", k_ratio=0.5, block_size=16),
    "qsparse": dict(sparsity="topk", k_ratio=0.5),
    "moe": dict(n_experts=4, top_k=2),
    "qsparse-moe": dict(n_experts=4, top_k=2, sparsity="topk", k_ratio=0.5, ffn_act="relu2"),
    "bitnet-qsparse-moe-shared": dict(
        n_experts=4, top_k=2, n_shared_experts=1, weight_quant="ternary", act_quant="int8", sparsity="topk", k_ratio=0.5
    ),
    "moe-top1-switch": dict(n_experts=4, top_k=1, renormalize_router=False),
}


def trained_pair(variant, kernel="auto"):
    torch.manual_seed(0)
    model = Decoder(ModelConfig(**TINY, **VARIANTS[variant], kernel=kernel)).eval()
    with torch.no_grad():  # spread the weights so ternarisation and top-K have something to choose
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(std=0.3)
    fast = Decoder(model.config)
    fast.load_state_dict(model.state_dict())
    return model, to_inference(fast)


def training_projection(model: Decoder, name: str, projection):
    """The training form's computation that the inference projection ``name`` replaced, as a
    function of that projection's own input (its fused norm, if any, applied first)."""
    *parent, last = name.split(".")
    if parent[-1] in ("gate_up", "down"):  # expert ``last`` of a MoE bank
        bank = model.get_submodule(".".join(parent[:-1]) + (".w_gate_up" if parent[-1] == "gate_up" else ".w_down"))
        expert = int(last)
        linear = lambda x: F.linear(bank.transform_input(x), bank.effective_weight()[expert])
    else:
        linear = model.get_submodule(name)
    if not isinstance(projection, PreparedProjection) or projection.norm_weight is None:
        return linear
    return lambda x: linear(reference_rms_norm(x, projection.norm_weight, projection.norm_eps))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_projection_matches_the_training_form_on_the_same_input(variant):
    """Tie-free where it matters: given the same input, each packed / sparse projection's int8 and
    top-K choices are the training form's, so outputs agree to fp32 rounding. (Across a whole
    model the two forms' float sums differ in order, which can move an activation across an int8
    rounding edge a few layers on; the model-level check is therefore the greedy tokens.)"""
    model, fast = trained_pair(variant)
    projections = [(n, m) for n, m in fast.named_modules() if isinstance(m, (PackedTernaryLinear, SparseInputLinear, FullPrecisionLinear))]
    assert projections
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, projection in projections:
            x = torch.randn(6, projection.in_features, generator=generator) * 2
            torch.testing.assert_close(projection(x), training_projection(model, name, projection)(x), rtol=1e-4, atol=1e-4, msg=name)
    tokens = torch.randint(0, 64, (2, 24), generator=torch.Generator().manual_seed(1))
    prompt = tokens[:1, :8]
    assert torch.equal(generate(fast, prompt, 24, temperature=0), generate(model, prompt, 24, temperature=0))


@pytest.mark.parametrize("variant", ["bitnet-qsparse", "bitnet-block", "qsparse", "bitnet-qsparse-moe-shared"])
def test_the_torch_path_of_the_inference_form_agrees_with_the_compiled_one(variant):
    """``kernel: torch`` (and machines without a C compiler) run the references end to end."""
    _, fast = trained_pair(variant)
    _, slow = trained_pair(variant, kernel="torch")
    tokens = torch.randint(0, 64, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(slow(tokens), fast(tokens), rtol=1e-4, atol=1e-4)
    prompt = tokens[:1, :8]
    assert torch.equal(generate(slow, prompt, 24, temperature=0), generate(fast, prompt, 24, temperature=0))


def test_ternary_projections_hold_packed_weights_only():
    model, fast = trained_pair("bitnet-qsparse")
    packed = [m for m in fast.modules() if isinstance(m, PackedTernaryLinear)]
    assert len(packed) == 4 * TINY["n_layers"]  # qkv, o, gate/up, down per layer
    assert not any(isinstance(m, ZooLinear) for m in fast.modules())
    state = fast.state_dict()
    assert not any(k.endswith(("wqkv.weight", "wo.weight", "w_gate_up.weight", "w_down.weight")) for k in state)
    assert all(m.packed.dtype == torch.uint8 and m.packed.shape == (m.in_features, -(-m.out_features // 4)) for m in packed)
    # every norm in front of a projection is folded into it: one kernel call per site
    assert all(m.norm_weight is not None for m in packed)
    assert all(isinstance(getattr(b, n), torch.nn.Identity) for b in fast.layers for n in ("attn_norm", "ffn_norm"))
    # one copy, in the decoding tiles (2 bits a weight, outputs padded to 128), which the compiled
    # kernel reads in place
    assert all(m.tiles.numel() == -(-m.out_features // 128) * 32 * m.in_features for m in packed)
    if compiled.available():
        assert all(m.prepared_call().tiles.data_ptr() == m.tiles.data_ptr() for m in packed)
    # only embeddings and norms stay fp32: the projections shrink 16x (32 bits -> 2 bits) but for the padding
    projection_bytes = sum(4 * m.in_features * m.out_features for m in packed)
    assert tensor_bytes(model) - tensor_bytes(fast) == projection_bytes - sum(m.tiles.numel() + 4 for m in packed)


def test_full_precision_sparse_projections_hold_one_transposed_copy():
    model, fast = trained_pair("qsparse")
    assert not any(isinstance(m, PackedTernaryLinear) for m in fast.modules())
    sparse = [m for m in fast.modules() if isinstance(m, SparseInputLinear)]
    assert len(sparse) == 4 * TINY["n_layers"] and all(m.weight_t.dtype == torch.float32 for m in sparse)
    assert tensor_bytes(fast) == tensor_bytes(model)  # the same weights, transposed, and no second copy


def test_dense_projections_are_left_alone():
    torch.manual_seed(0)
    model = to_inference(Decoder(ModelConfig(**TINY)))
    assert all(type(m) is ZooLinear for m in model.modules() if isinstance(m, (ZooLinear, SparseInputLinear, PackedTernaryLinear)))


def test_zeros_are_counted_through_the_inference_form():
    from zoo.models.accounting import account

    model, fast = trained_pair("bitnet-qsparse")
    batches = [torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(2))]
    slow_stats, fast_stats = account(model, batches=batches), account(fast, batches=batches)
    assert fast_stats.basis == "measured"
    # The first layer's inputs are bit-identical, so its counts are too; later layers see inputs that
    # differ by float rounding (integer sums scaled once vs float products), which can move a value
    # across int8's rounding edge at zero: a few in ten thousand.
    first = [m for m in fast.modules() if isinstance(m, PackedTernaryLinear)][0].input_transform
    reference = [m for m in model.modules() if isinstance(m, ZooLinear)][0].input_transform
    assert (
        first is not reference
        and first.input_numel > 0
        and (first.input_zeros, first.input_numel) == (reference.input_zeros, reference.input_numel)
    )
    assert fast_stats.input_sparsity == pytest.approx(slow_stats.input_sparsity, abs=2e-3)
    assert fast_stats.activated_params == pytest.approx(slow_stats.activated_params, rel=2e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("variant", ["bitnet", "bitnet-qsparse"])
def test_inference_form_on_cuda_prefill_and_decode(variant):
    model, fast = trained_pair(variant)
    model, fast = model.cuda(), fast.cuda()
    tokens = torch.randint(0, 64, (2, 48), generator=torch.Generator().manual_seed(4)).cuda()
    with torch.no_grad():
        torch.testing.assert_close(fast(tokens), model(tokens), rtol=1e-3, atol=1e-3)  # prefill: 2 x 48 rows
    prompt = tokens[:1, :8]
    assert torch.equal(generate(fast, prompt, 16, temperature=0), generate(model, prompt, 16, temperature=0))


def test_moe_inference_reads_only_chosen_experts_and_accounts_like_training():
    from zoo.models.accounting import account
    from zoo.models.inference import InferenceMoE

    model, fast = trained_pair("bitnet-qsparse-moe-shared")
    moe = fast.layers[0].ffn
    assert isinstance(moe, InferenceMoE) and len(moe.gate_up) == 4
    assert all(isinstance(p, PackedTernaryLinear) for p in list(moe.gate_up) + list(moe.down))
    assert tensor_bytes(fast) < tensor_bytes(model) / 4
    # a token read by experts 1 and 3 only: the other experts' projections are never called
    called = []
    for index, projection in enumerate(moe.gate_up):
        projection.register_forward_hook(lambda m, i, o, index=index: called.append(index))
    with torch.no_grad():
        moe(torch.randn(1, 1, TINY["dim"]))
    assert len(called) == 2 and len(set(called)) == 2
    batches = [torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(2))]
    assert account(fast).activated_params == pytest.approx(account(model).activated_params)  # nominal: k/E of each expert
    assert account(fast, batches=batches).activated_params == pytest.approx(account(model, batches=batches).activated_params, rel=0.02)
