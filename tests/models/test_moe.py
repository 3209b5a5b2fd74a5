"""Dropless MoE FFN: against a per-token loop, 1 expert = dense, dropless routing, aux losses,
backends, validation, decoder integration and accounting."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
import torch.nn.functional as F

from zoo.kernels import moe as moe_ops
from zoo.models.accounting import account, count_params
from zoo.models.config import ModelConfig
from zoo.models.decoder import Decoder
from zoo.models.ffn import GatedFeedForward, glu_activation
from zoo.models.initialization import init_weights
from zoo.models.moe import ExpertBank, MoEBackendUnavailable, MoEFeedForward, Router, from_megablocks, to_megablocks

BASE = dict(vocab_size=64, dim=32, n_layers=2, n_heads=4, ffn_dim=48, max_seq_len=32)


def moe_config(**changes) -> ModelConfig:
    return ModelConfig(**{**BASE, "n_experts": 4, "top_k": 2, **changes})


def moe_layer(config: ModelConfig) -> MoEFeedForward:
    """A MoE layer built on its own, initialised as a decoder's would be."""
    layer = MoEFeedForward(config)
    init_weights(layer, config)
    return layer


def naive_moe(m: MoEFeedForward, x: torch.Tensor) -> torch.Tensor:
    """Token by token, choice by choice: the definition the permuted dispatch must reproduce."""
    flat = x.reshape(-1, x.shape[-1])
    logits = F.linear(flat.float(), m.router.weight.float())
    probs = torch.softmax(logits, dim=-1)
    w_gate_up, w_down = m.w_gate_up.effective_weight(), m.w_down.effective_weight()
    rows = []
    for t in range(flat.shape[0]):
        weights, experts = probs[t].topk(m.top_k)
        if m.renormalize:
            weights = weights / weights.sum()
        token = m.w_gate_up.transform_input(flat[t : t + 1])
        acc = torch.zeros(1, flat.shape[-1])
        for w, e in zip(weights, experts.tolist()):
            gate, up = (token @ w_gate_up[e].t()).chunk(2, dim=-1)
            h = glu_activation(gate, up, m.act)
            if m.sub_norm is not None:
                h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + m.sub_norm.eps) * m.sub_norm.weight[e]
            acc = acc + w * (m.w_down.transform_input(h) @ w_down[e].t()).float()
        rows.append(acc.to(x.dtype))
    out = torch.cat(rows)
    if m.shared is not None:
        out = out + m.shared(flat)
    return out.reshape(x.shape)


def grads(module, x, fn, grad_out):
    module.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    y = fn(x)
    y.backward(grad_out)
    return y.detach(), x.grad, {name: p.grad.clone() for name, p in module.named_parameters()}


VARIANTS = {
    "swiglu": dict(),
    "relu2-norenorm": dict(ffn_act="relu2", renormalize_router=False, top_k=3),
    "bitnet-qsparse-shared": dict(weight_quant="ternary", act_quant="int8", sparsity="topk", k_ratio=0.5, n_shared_experts=1),
    "block-relu2-fine": dict(ffn_act="relu2", sparsity="block", k_ratio=0.5, block_size=8, expert_ffn_dim=16, n_experts=8),
    "top1-renorm": dict(top_k=1),  # weight 1.0 per token (Mixtral / MegaBlocks normalisation)
    "top1-switch": dict(top_k=1, renormalize_router=False),  # weight p_max (Switch)
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_reference_matches_per_token_loop(variant):
    torch.manual_seed(0)
    m = moe_layer(moe_config(moe_impl="reference", **VARIANTS[variant]))
    with torch.no_grad():
        m.router.weight.normal_(std=0.5)  # spread the routing so several experts are used
        if m.sub_norm is not None:
            m.sub_norm.weight.uniform_(0.5, 1.5)  # so a row normalised with the wrong expert's gain shows
    x = torch.randn(2, 5, 32)
    grad_out = torch.randn(2, 5, 32)
    y, gx, gp = grads(m, x, m, grad_out)
    y_ref, gx_ref, gp_ref = grads(m, x, lambda x: naive_moe(m, x), grad_out)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(gx, gx_ref)
    assert gp.keys() == gp_ref.keys()
    for name in gp:
        torch.testing.assert_close(gp[name], gp_ref[name], msg=lambda msg: f"{name}: {msg}")


@pytest.mark.parametrize("act", ["swiglu", "relu2"])
@pytest.mark.parametrize("projections", ["plain", "bitnet-qsparse"])
def test_one_expert_top1_equals_dense_ffn(act, projections):
    choices = dict(weight_quant="ternary", act_quant="int8", sparsity="topk", k_ratio=0.5) if projections != "plain" else {}
    torch.manual_seed(0)
    config = moe_config(n_experts=1, top_k=1, ffn_act=act, moe_impl="reference", **choices)
    m = moe_layer(config)
    dense = GatedFeedForward(config.replace(n_experts=0, n_shared_experts=0), hidden_dim=config.hidden_dim)
    with torch.no_grad():
        dense.w_gate_up.weight.copy_(m.w_gate_up.weight[0])
        dense.w_down.weight.copy_(m.w_down.weight[0])
        if m.sub_norm is not None:
            m.sub_norm.weight.uniform_(0.5, 1.5)
            dense.sub_norm.weight.copy_(m.sub_norm.weight[0])
    x = torch.randn(3, 4, 32)
    grad_out = torch.randn(3, 4, 32)
    y, gx, gp = grads(m, x, m, grad_out)
    y_dense, gx_dense, gp_dense = grads(dense, x, dense, grad_out)
    torch.testing.assert_close(y, y_dense)
    torch.testing.assert_close(gx, gx_dense)
    torch.testing.assert_close(gp["w_gate_up.weight"][0], gp_dense["w_gate_up.weight"])
    torch.testing.assert_close(gp["w_down.weight"][0], gp_dense["w_down.weight"])
    # A single expert with top-1 gets weight 1 whatever the router says, so the router learns
    # only from the auxiliary losses.
    assert not gp["router.weight"].any()


def test_ternary_experts_have_one_scale_each():
    from zoo.kernels import ternary_quantize

    bank = ExpertBank(3, 16, 8, weight_quant="ternary", site="ffn_in")
    init_weights(bank, moe_config())
    with torch.no_grad():
        bank.weight[1] *= 10.0  # a per-tensor scale would zero most of experts 0 and 2
    quantised = bank.effective_weight()
    for e in range(3):
        assert torch.equal(quantised[e], ternary_quantize(bank.weight[e]))
    assert all((quantised[e] != 0).float().mean() > 0.4 for e in range(3))


def force_router(m: MoEFeedForward, first: int, second: int) -> None:
    """Logits ``100·x₀`` for ``first``, ``50·x₀`` for ``second``, ~0 elsewhere (inputs have x₀ = 1)."""
    with torch.no_grad():
        m.router.weight.normal_(std=1e-3)
        m.router.weight[first, 0] = 100.0
        m.router.weight[second, 0] = 50.0


def test_dropless_all_tokens_to_one_expert_and_empty_experts():
    torch.manual_seed(0)
    m = moe_layer(moe_config(n_experts=6, top_k=2, moe_impl="reference"))
    force_router(m, first=4, second=1)
    x = torch.randn(64, 32)
    x[:, 0] = 1.0
    y = m(x)
    assert torch.equal(m.tokens_per_expert, torch.tensor([0, 64, 0, 0, 64, 0]))
    # No capacity factor: every token got both of its experts, even at 64 tokens on one expert.
    torch.testing.assert_close(y, naive_moe(m, x))
    weights, experts = moe_ops.route(m.router(x), 2, renormalize=True)
    assert torch.equal(experts, torch.tensor([[4, 1]]).expand(64, 2))
    manual = torch.zeros(64, 32)
    for w, e in zip(weights.t(), (4, 1)):
        gate, up = (x @ m.w_gate_up.weight[e].t()).chunk(2, dim=-1)
        manual += w[:, None] * (F.silu(gate) * up) @ m.w_down.weight[e].t()
    torch.testing.assert_close(y, manual)


def hand_router(m: MoEFeedForward, logits: torch.Tensor) -> torch.Tensor:
    """An input whose router logits are exactly ``logits`` (router reads the first E channels)."""
    n_tokens, n_experts = logits.shape
    with torch.no_grad():
        m.router.weight.zero_()
        m.router.weight[:, :n_experts] = torch.eye(n_experts)
    x = torch.randn(n_tokens, m.dim)
    x[:, :n_experts] = logits
    return x


def test_load_balance_and_z_loss_match_their_formulas():
    m = moe_layer(moe_config(n_experts=4, top_k=1, aux_loss_coef=0.1, z_loss_coef=0.01, moe_impl="reference"))
    logits = [[2.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 3.0]]
    m(hand_router(m, torch.tensor(logits)))
    assert torch.equal(m.tokens_per_expert, torch.tensor([2, 1, 0, 1]))

    def softmax(row):
        z = sum(math.exp(v) for v in row)
        return [math.exp(v) / z for v in row]

    probs = [softmax(row) for row in logits]
    fraction = [2 / 4, 1 / 4, 0.0, 1 / 4]
    mean_prob = [sum(p[e] for p in probs) / 4 for e in range(4)]
    load_balance = 0.1 * 4 * sum(f * p for f, p in zip(fraction, mean_prob))
    z_loss = 0.01 * sum(math.log(sum(math.exp(v) for v in row)) ** 2 for row in logits) / 4
    assert m.last_aux_losses.keys() == {"load_balance", "router_z"}
    assert m.last_aux_losses["load_balance"].item() == pytest.approx(load_balance, rel=1e-6)
    assert m.last_aux_losses["router_z"].item() == pytest.approx(z_loss, rel=1e-6)


def test_load_balance_counts_every_choice_of_top_k():
    m = moe_layer(moe_config(n_experts=3, top_k=2, aux_loss_coef=1.0, z_loss_coef=0.0, moe_impl="reference"))
    logits = torch.tensor([[3.0, 2.0, 0.0], [0.0, 2.0, 3.0]])
    m(hand_router(m, logits))
    fraction = torch.tensor([1.0, 2.0, 1.0]) / 4
    expected = 3 * (fraction * torch.softmax(logits, -1).mean(0)).sum()
    torch.testing.assert_close(m.last_aux_losses["load_balance"], expected)
    assert "router_z" not in m.last_aux_losses  # a zero coefficient leaves its term out


def test_aux_losses_train_the_router():
    torch.manual_seed(0)
    m = moe_layer(moe_config(moe_impl="reference"))
    m(torch.randn(10, 32))
    sum(m.last_aux_losses.values()).backward()
    assert m.router.weight.grad.abs().sum() > 0
    assert m.w_gate_up.weight.grad is None


def test_no_aux_losses_when_coefficients_are_zero():
    m = moe_layer(moe_config(aux_loss_coef=0.0, z_loss_coef=0.0))
    m(torch.randn(3, 32))
    assert m.last_aux_losses == {}


CPU_GROUPED_MM = moe_ops.grouped_mm_supported("cpu", torch.float32, 32, 96, 48)


@pytest.mark.skipif(not CPU_GROUPED_MM, reason="this torch build has no CPU grouped matmul")
@pytest.mark.parametrize("variant", ["swiglu", "bitnet-qsparse-shared"])
@pytest.mark.parametrize("broadcast_grad", [True, False])
def test_grouped_mm_backend_matches_reference(variant, broadcast_grad):
    torch.manual_seed(0)
    ref = moe_layer(moe_config(moe_impl="reference", n_experts=6, **VARIANTS[variant]))
    fast = moe_layer(moe_config(moe_impl="grouped_mm", n_experts=6, **VARIANTS[variant]))
    fast.load_state_dict(ref.state_dict())
    with torch.no_grad():
        ref.router.weight.normal_(std=0.5)
        if ref.sub_norm is not None:
            ref.sub_norm.weight.uniform_(0.5, 1.5)
        fast.load_state_dict(ref.state_dict())
    assert ref.backend(torch.randn(1, 32)) == "reference" and fast.backend(torch.randn(1, 32)) == "grouped_mm"
    x = torch.randn(3, 7, 32)
    x[0, :, 0] = 40.0  # a crowded expert next to empty ones
    grad_out = None if broadcast_grad else torch.randn(3, 7, 32)
    results = []
    for m in (ref, fast):
        xi = x.clone().requires_grad_()
        y = m(xi)
        # sum() hands the grouped matmul an expanded, zero-stride gradient.
        y.sum().backward() if broadcast_grad else y.backward(grad_out)
        results.append((y.detach(), xi.grad, {n: p.grad for n, p in m.named_parameters()}))
    (y_r, gx_r, gp_r), (y_f, gx_f, gp_f) = results
    torch.testing.assert_close(y_f, y_r)
    torch.testing.assert_close(gx_f, gx_r)
    for name in gp_r:
        torch.testing.assert_close(gp_f[name], gp_r[name], msg=lambda msg: f"{name}: {msg}")


def test_auto_picks_grouped_mm_only_where_it_runs():
    aligned = moe_layer(moe_config(moe_impl="auto"))
    assert aligned.backend(torch.randn(2, 32)) == ("grouped_mm" if CPU_GROUPED_MM else "reference")
    odd = moe_layer(moe_config(moe_impl="auto", expert_ffn_dim=10))  # 10 fp32 = 40 bytes per row
    assert odd.backend(torch.randn(2, 32)) == "reference"
    assert odd(torch.randn(2, 32)).shape == (2, 32)
    explicit = moe_layer(moe_config(moe_impl="grouped_mm", expert_ffn_dim=10))
    with pytest.raises(MoEBackendUnavailable, match="grouped_mm"):
        explicit(torch.randn(2, 32))


@pytest.mark.parametrize("impl", ["reference", "auto"])
def test_bf16_forward_backward(impl):
    torch.manual_seed(0)
    m = moe_layer(moe_config(moe_impl=impl, n_shared_experts=1)).to(torch.bfloat16)
    x = torch.randn(2, 6, 32, dtype=torch.bfloat16, requires_grad=True)
    y = m(x)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert x.grad.dtype == torch.bfloat16
    assert all(p.grad is not None for p in m.parameters())


def test_megablocks_backend_raises_a_clear_error_without_cuda():
    m = moe_layer(moe_config(moe_impl="megablocks"))
    with pytest.raises(MoEBackendUnavailable, match="megablocks") as info:
        m(torch.randn(2, 32))
    if importlib.util.find_spec("megablocks") is None:
        assert "pip install --no-deps megablocks" in str(info.value)
    else:  # installed, but these are CPU tensors
        assert "CUDA" in str(info.value)


def test_triton_backend_on_a_cpu_tensor_without_the_interpreter_is_a_clear_error():
    import os

    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("under the interpreter the Triton backend runs (tests/kernels/test_triton_moe.py)")
    m = moe_layer(moe_config(moe_impl="triton"))
    with pytest.raises(MoEBackendUnavailable, match="needs triton and a CUDA tensor"):
        m(torch.randn(2, 32))


def test_every_backend_has_the_same_state_dict_keys_and_shapes():
    shapes = None
    for impl in ("auto", "reference", "grouped_mm", "megablocks", "triton"):
        state = moe_layer(moe_config(moe_impl=impl, n_shared_experts=2, weight_quant="ternary")).state_dict()
        current = {k: tuple(v.shape) for k, v in state.items()}
        assert shapes is None or current == shapes
        shapes = current
    assert shapes["w_gate_up.weight"] == (4, 96, 32)
    assert shapes["w_down.weight"] == (4, 32, 48)
    assert shapes["sub_norm.weight"] == (4, 48)
    assert shapes["router.weight"] == (4, 32)
    assert shapes["shared.w_gate_up.weight"] == (192, 32)


def test_megablocks_layout_round_trip():
    m = moe_layer(moe_config(n_experts=3, expert_ffn_dim=8))
    converted = to_megablocks(m)
    assert converted["experts.mlp.w1"].shape == (24, 32) and converted["experts.mlp.w2"].shape == (24, 32)
    back = from_megablocks(converted, 3)
    for name, value in back.items():
        assert torch.equal(value, m.state_dict()[name])


@pytest.mark.parametrize(
    "changes, field",
    [
        (dict(n_experts=2, top_k=3), "top_k"),
        (dict(n_experts=4, top_k=0), "top_k"),
        (dict(n_experts=-1), "n_experts"),
        (dict(n_experts=0, n_shared_experts=1), "n_shared_experts"),
        (dict(n_experts=4, n_shared_experts=-1), "n_shared_experts"),
        (dict(n_experts=4, expert_ffn_dim=0), "expert_ffn_dim"),
        (dict(n_experts=4, moe_impl="cutlass"), "moe_impl"),
        (dict(n_experts=4, aux_loss_coef=-0.1), "aux_loss_coef"),
        (dict(n_experts=4, z_loss_coef=-1.0), "z_loss_coef"),
        (dict(n_experts=4, sparsity="block", block_size=8, expert_ffn_dim=12), "expert_ffn_dim"),
    ],
)
def test_invalid_settings_raise_naming_the_field(changes, field):
    with pytest.raises(ValueError, match=field):
        ModelConfig(**{**BASE, **changes})


def test_moe_module_rejects_dense_config_and_bad_bias_rate():
    with pytest.raises(ValueError, match="n_experts"):
        moe_layer(ModelConfig(**BASE))
    with pytest.raises(ValueError, match="balance_bias_rate"):
        moe_layer(moe_config(balance_bias_rate=-1.0))


def test_bias_balancing_moves_selection_towards_balance():
    torch.manual_seed(0)
    m = moe_layer(moe_config(n_experts=4, top_k=1, moe_impl="reference", balance_bias_rate=0.05))
    assert "selection_bias" in m.state_dict()
    x = torch.randn(32, 32)
    x[:, 0] = 1.0
    force_router(m, first=2, second=0)
    with torch.no_grad():
        m.router.weight[2, 0] = 1.0  # expert 2 wins every token, but only by a margin of ~1
        m.router.weight[0, 0] = 0.0
    m.train()
    m(x)
    first_load = m.tokens_per_expert.clone()
    assert first_load[2] == 32
    for _ in range(60):
        m(x)
        m.update_selection_bias()  # what the training loop does once per optimizer step
    assert m.selection_bias[2] < 0 and (m.selection_bias[[0, 1, 3]] > 0).all()
    assert m.tokens_per_expert.max() < 32
    # The bias picks experts; weights stay the unbiased probabilities of the picked experts.
    logits = m.router(x)
    weights, experts = moe_ops.route(logits, 1, False, m.selection_bias)
    torch.testing.assert_close(weights, torch.softmax(logits, -1).gather(-1, experts))
    m.eval()
    before = m.selection_bias.clone()
    m(x)
    assert torch.equal(m.selection_bias, before)  # evaluation never moves it


def tiny_moe_decoder(**changes) -> Decoder:
    return Decoder(moe_config(n_shared_experts=1, **changes))


@pytest.mark.parametrize("choices", [dict(), dict(weight_quant="ternary", act_quant="int8", sparsity="topk", k_ratio=0.5)])
def test_decoder_with_experts_trains_every_parameter(choices):
    torch.manual_seed(0)
    model = tiny_moe_decoder(**choices)
    tokens = torch.randint(0, 64, (2, 16))
    logits = model(tokens)
    aux = model.aux_losses()
    assert aux.keys() == {"load_balance", "router_z"}
    moes = [mod for mod in model.modules() if isinstance(mod, MoEFeedForward)]
    assert len(moes) == 2
    for name in aux:
        torch.testing.assert_close(aux[name], sum(mod.last_aux_losses[name] for mod in moes))
    loss = F.cross_entropy(logits.flatten(0, 1), tokens.flatten()) + sum(aux.values())
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing


def test_decoder_init_uses_residual_std_for_expert_down_projections():
    torch.manual_seed(0)
    model = Decoder(moe_config(n_layers=8, n_shared_experts=1, dim=64, expert_ffn_dim=128, ffn_dim=128, init_std=0.02))
    ffn = model.layers[0].ffn
    residual = 0.02 / math.sqrt(16)
    assert ffn.w_gate_up.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert ffn.w_down.weight.std().item() == pytest.approx(residual, rel=0.05)
    assert ffn.shared.w_down.weight.std().item() == pytest.approx(residual, rel=0.1)
    assert ffn.router.weight.std().item() == pytest.approx(0.02, rel=0.15)


def linear_params(model) -> int:
    """Every non-embedding matrix (attention, router, experts, shared FFN); norms are vectors."""
    return sum(
        p.numel()
        for n, p in model.named_parameters()
        if p.dim() >= 2 and not n.startswith(("tok_embeddings", "lm_head")) and not n.endswith("sub_norm.weight")
    )


def test_accounting_counts_k_of_e_experts():
    model = tiny_moe_decoder(n_experts=8, top_k=2)
    acc = account(model)
    total, non_embedding = count_params(model)
    assert acc.activated_params < non_embedding
    per_layer = 8 * (2 * 48 * 32 + 32 * 48)
    # 6 of 8 experts are idle for every token.
    assert acc.activated_params == pytest.approx(linear_params(model) - 2 * per_layer * 6 / 8)
    entries = {m.accounting_entry().site for m in model.modules() if isinstance(m, (ExpertBank, Router))}
    assert entries == {"ffn_in", "ffn_down", "router"}


def test_accounting_with_all_experts_active_counts_every_linear():
    model = tiny_moe_decoder(n_experts=4, top_k=4)
    assert account(model).activated_params == pytest.approx(linear_params(model))


def test_accounting_of_ternary_experts_reads_k_scales_per_token():
    dense_bits = account(tiny_moe_decoder(n_experts=4, top_k=2))
    ternary = account(tiny_moe_decoder(n_experts=4, top_k=2, weight_quant="ternary"))
    assert ternary.weight_bytes_per_token < dense_bits.weight_bytes_per_token
    bank = Decoder(moe_config(weight_quant="ternary")).layers[0].ffn.w_gate_up
    entry = bank.accounting_entry()
    assert (entry.bits_per_weight, entry.scale_bytes, entry.usage) == (2, 4 * 4, 0.5)


def test_measured_sparsity_of_expert_inputs():
    torch.manual_seed(0)
    model = tiny_moe_decoder(sparsity="topk", k_ratio=0.5, n_experts=4, top_k=2)
    acc = account(model, batches=[torch.randint(0, 64, (2, 8))])
    assert acc.basis == "measured"
    bank = model.layers[0].ffn.w_gate_up
    assert bank.nominal_input_sparsity == 0.5
    assert bank.input_sparsity >= 0.5
    assert acc.input_sparsity["ffn_in"] >= 0.5


def test_meta_device_construction_for_accounting():
    with torch.device("meta"):
        model = Decoder(moe_config(n_experts=8, top_k=2, dim=64, ffn_dim=128))
    # Per layer: q/k/v + o (4·dim²), the router (dim·E), and k of E experts' gate/up + down.
    dim, hidden, experts, k, layers = 64, 128, 8, 2, 2
    per_layer = 4 * dim * dim + dim * experts + k * (dim * 2 * hidden + hidden * dim)
    assert account(model).activated_params == pytest.approx(layers * per_layer)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("impl", ["grouped_mm", "megablocks"])
def test_cuda_bf16_backend_error_no_worse_than_reference_bf16(impl):
    if impl == "megablocks":
        pytest.importorskip("megablocks")
    config = moe_config(moe_impl=impl, dim=128, n_heads=4, ffn_dim=256, n_experts=8)
    torch.manual_seed(0)
    exact = moe_layer(config.replace(moe_impl="reference")).cuda()
    fast = moe_layer(config).cuda().bfloat16()
    ref16 = moe_layer(config.replace(moe_impl="reference")).cuda().bfloat16()
    fast.load_state_dict(exact.state_dict())
    ref16.load_state_dict(exact.state_dict())
    if impl == "grouped_mm" and fast.backend(torch.randn(1, 128, device="cuda", dtype=torch.bfloat16)) != "grouped_mm":
        pytest.skip("grouped matmul does not run on this GPU")
    x = torch.randn(512, 128, device="cuda")
    want = exact(x)
    err_fast = (fast(x.bfloat16()).float() - want).abs().max()
    err_ref = (ref16(x.bfloat16()).float() - want).abs().max()
    assert err_fast <= 2 * err_ref + 1e-6


def test_backends_are_one_registry_with_the_config_vocabulary():
    from zoo.models.config import MOE_IMPLS
    from zoo.models.moe_backends import MOE_BACKENDS, ExpertShapes, MoEBackend, register_moe_backend, resolve_moe_backend

    assert set(MOE_IMPLS) == {"auto", *MOE_BACKENDS}  # ModelConfig accepts exactly the registered names
    x = torch.randn(4, 32)
    assert resolve_moe_backend("reference", x, ExpertShapes(32, 48)).name == "reference"
    with pytest.raises(MoEBackendUnavailable, match="megablocks"):
        resolve_moe_backend("megablocks", x, ExpertShapes(32, 48))
    with pytest.raises(ValueError, match="moe_impl"):
        resolve_moe_backend("tutel", x, ExpertShapes(32, 48))
    with pytest.raises(ValueError, match="taken"):
        register_moe_backend(MoEBackend("reference", "again", lambda x, s: None, lambda x, w, g: x))


def test_a_registered_backend_serves_the_layer():
    from zoo.models import moe_backends

    calls = []

    def counting_linear(x, weight, groups):
        calls.append(groups.backend)
        return moe_backends.MOE_BACKENDS["reference"].grouped_linear(x, weight, groups)

    backend = moe_backends.MoEBackend("counting", "test double", lambda x, s: None, counting_linear)
    moe_backends.register_moe_backend(backend)
    try:
        reference = moe_layer(moe_config(moe_impl="reference"))
        layer = moe_layer(moe_config(moe_impl="reference"))
        layer.load_state_dict(reference.state_dict())
        layer.moe_impl = "counting"
        x = torch.randn(2, 5, 32)
        assert torch.equal(layer(x), reference(x)) and calls == ["counting", "counting"]
    finally:
        del moe_backends.MOE_BACKENDS["counting"]


def test_bias_balancing_steps_once_per_optimizer_step_on_the_summed_loads():
    """Gradient accumulation: two micro-batches, one step, on their loads added (as one batch)."""
    torch.manual_seed(0)
    config = moe_config(n_experts=4, top_k=1, moe_impl="reference", balance_bias_rate=0.1)
    m = moe_layer(config)
    assert "selection_bias" in m.state_dict() and "pending_load" not in m.state_dict()
    m.train()
    first, second = torch.randn(16, 32), torch.randn(16, 32)
    m(first)
    load = m.tokens_per_expert.float()
    m(second)
    load = load + m.tokens_per_expert.float()
    assert torch.equal(m.selection_bias, torch.zeros(4))  # forwards alone never move it
    m.update_selection_bias()
    torch.testing.assert_close(m.selection_bias, 0.1 * torch.sign(load.mean() - load))
    m.update_selection_bias()  # nothing gathered since: no move
    torch.testing.assert_close(m.selection_bias, 0.1 * torch.sign(load.mean() - load))
    m.eval()
    m(first)  # evaluation forwards are not counted
    assert m.pending_load.sum() == 0


def test_bias_balancing_is_a_config_field():
    model = Decoder(ModelConfig(**BASE, n_experts=4, top_k=2, balance_bias_rate=0.01))
    assert all(layer.ffn.selection_bias is not None for layer in model.layers)
    assert Decoder(ModelConfig(**BASE, n_experts=4, top_k=2)).layers[0].ffn.selection_bias is None
    with pytest.raises(ValueError, match="balance_bias_rate"):
        ModelConfig(**BASE, balance_bias_rate=0.01)  # a dense model has no experts to balance
    with pytest.raises(ValueError, match="balance_bias_rate"):
        ModelConfig(**BASE, n_experts=4, balance_bias_rate=-1.0)


def _balance_on_rank(rank: int, world: int, init_file: str, loads: list, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        m = moe_layer(moe_config(n_experts=4, top_k=1, balance_bias_rate=0.1))
        m.pending_load.copy_(torch.tensor(loads[rank]))
        m.update_selection_bias()
        torch.save(m.selection_bias.clone(), f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_bias_balancing_sums_the_loads_of_every_rank(tmp_path):
    """Two gloo ranks with different loads move their biases alike, on the summed load."""
    import torch.multiprocessing as mp

    loads = [[10.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0]]  # summed: [10, 0, 0, 2], mean 3
    mp.spawn(_balance_on_rank, args=(2, str(tmp_path / "init"), loads, str(tmp_path)), nprocs=2, join=True)
    expected = torch.tensor([-0.1, 0.1, 0.1, 0.1])  # rank 1 alone would have pushed expert 3 down
    for rank in range(2):
        torch.testing.assert_close(torch.load(tmp_path / f"{rank}.pt"), expected)
