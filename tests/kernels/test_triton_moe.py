"""The Triton grouped expert matmul against the per-expert loop, through the interpreter on CPU."""

import pytest
import torch

from zoo.kernels import moe as moe_ops

interpreted = pytest.mark.interpreter  # run in a TRITON_INTERPRET=1 child process (see conftest.py)


def test_interpreted_kernels(interpreter_subprocess):
    """Every ``@interpreted`` test of this file, run through the Triton interpreter."""
    interpreter_subprocess()


@interpreted
@pytest.mark.parametrize("sizes", [[5, 0, 17, 3], [0, 0, 9], [33], [1, 1, 1, 1, 1]])
def test_grouped_linear_matches_the_loop_forward_and_backward(sizes):
    gen = torch.Generator().manual_seed(len(sizes))
    n_experts, k_in, n_out = len(sizes), 24, 40  # odd widths: partial K and N tiles
    x = torch.randn(sum(sizes), k_in, generator=gen, requires_grad=True)
    w = torch.randn(n_experts, n_out, k_in, generator=gen, requires_grad=True)
    counts = torch.tensor(sizes)
    offsets = counts.cumsum(0)
    y = moe_ops.grouped_linear(x, w, counts, offsets, impl="triton", sizes=sizes)
    upstream = torch.randn(y.shape, generator=gen)
    (y * upstream).sum().backward()
    grads = x.grad.clone(), w.grad.clone()
    x.grad = w.grad = None
    expected = moe_ops.grouped_linear(x, w, counts, offsets, impl="reference", sizes=sizes)
    (expected * upstream).sum().backward()
    torch.testing.assert_close(y, expected)
    torch.testing.assert_close(grads[0], x.grad)
    torch.testing.assert_close(grads[1], w.grad)


@interpreted
def test_moe_layer_triton_backend_matches_reference():
    from zoo.models import ModelConfig
    from zoo.models.initialization import init_weights
    from zoo.models.moe import MoEFeedForward

    config = ModelConfig(
        dim=32, n_heads=2, ffn_dim=48, n_experts=4, top_k=2, weight_quant="ternary", act_quant="int8", sparsity="topk", k_ratio=0.5
    )
    torch.manual_seed(0)
    reference = MoEFeedForward(config.replace(moe_impl="reference"))
    init_weights(reference, config)
    triton_layer = MoEFeedForward(config.replace(moe_impl="triton"))
    triton_layer.load_state_dict(reference.state_dict())
    x = torch.randn(11, 32)
    assert triton_layer.backend(x) == "triton"
    torch.testing.assert_close(triton_layer(x), reference(x))


@interpreted
@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_permute_and_unpermute_match_the_reference_with_gradients(top_k):
    gen = torch.Generator().manual_seed(top_k)
    n_tokens, dim, n_experts = 13, 20, 5
    x = torch.randn(n_tokens, dim, generator=gen, requires_grad=True)
    experts = torch.stack([torch.randperm(n_experts, generator=gen)[:top_k] for _ in range(n_tokens)])
    experts[:4] = torch.arange(top_k)  # a crowded expert next to empty ones
    weights = torch.rand(n_tokens, top_k, generator=gen, requires_grad=True)
    results = {}
    for impl in ("triton", "torch"):
        x.grad = weights.grad = None
        x_sorted, order, counts, offsets = moe_ops.permute(x, experts, n_experts, impl=impl)
        y = moe_ops.unpermute(x_sorted * 2.0, order, weights, n_tokens, impl=impl)
        upstream = torch.randn(y.shape, generator=torch.Generator().manual_seed(0))
        (y * upstream).sum().backward()
        results[impl] = (x_sorted.detach(), order, counts, offsets, y.detach(), x.grad.clone(), weights.grad.clone())
    for got, want in zip(results["triton"], results["torch"]):
        if got.is_floating_point():
            torch.testing.assert_close(got, want)
        else:
            assert torch.equal(got, want)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_moe_layer_triton_bf16_error_is_no_worse_than_torch_bf16():
    from zoo.models import ModelConfig
    from zoo.models.initialization import init_weights
    from zoo.models.moe import MoEFeedForward

    config = ModelConfig(dim=256, n_heads=4, ffn_dim=512, n_experts=8, top_k=2)
    torch.manual_seed(0)
    exact = MoEFeedForward(config.replace(moe_impl="reference"))
    init_weights(exact, config)
    exact = exact.cuda()
    x = torch.randn(512, 256, device="cuda")
    want = exact(x)
    errors = {}
    for impl in ("reference", "triton"):
        layer = MoEFeedForward(config.replace(moe_impl=impl)).cuda().to(torch.bfloat16)
        layer.load_state_dict(exact.state_dict())
        errors[impl] = (layer(x.bfloat16()).float() - want).abs().max().item()
    assert errors["triton"] <= 2 * errors["reference"] + 1e-3, errors
