"""MoE routing ops (MegaBlocks semantics): discrete results exactly, float results against loops."""

from __future__ import annotations

import pytest
import torch

from zoo.kernels import moe
from zoo.kernels.moe import reference


def test_route_top1_renormalised_weight_is_one_and_switch_weight_is_pmax():
    logits = torch.randn(6, 4)
    probs = torch.softmax(logits, dim=-1)
    weights, experts = moe.route(logits, 1, renormalize=True)
    assert torch.equal(weights, torch.ones(6, 1))
    assert torch.equal(experts[:, 0], probs.argmax(-1))
    switch, _ = moe.route(logits, 1, renormalize=False)
    assert torch.equal(switch[:, 0], probs.max(-1).values)


def test_route_softmax_topk_and_renormalisation():
    torch.manual_seed(0)
    logits = torch.randn(6, 5)
    probs = torch.softmax(logits, dim=-1)
    weights, experts = moe.route(logits, 2, renormalize=False)
    assert weights.dtype == torch.float32 and experts.dtype == torch.int64
    expected_w, expected_e = probs.topk(2, dim=-1)
    assert torch.equal(experts, expected_e)
    torch.testing.assert_close(weights, expected_w)
    renormed, experts_r = moe.route(logits, 2, renormalize=True)
    assert torch.equal(experts_r, expected_e)
    torch.testing.assert_close(renormed, expected_w / expected_w.sum(-1, keepdim=True))


def test_route_is_fp32_for_bf16_logits():
    weights, _ = moe.route(torch.randn(4, 8, dtype=torch.bfloat16), 2, renormalize=True)
    assert weights.dtype == torch.float32
    torch.testing.assert_close(weights.sum(-1), torch.ones(4))


def test_route_bias_moves_selection_not_weights():
    logits = torch.tensor([[3.0, 2.0, 0.0], [0.0, 1.0, 2.5]])
    bias = torch.tensor([0.0, 0.0, 5.0])
    weights, experts = moe.route(logits, 1, renormalize=False, bias=bias)
    assert torch.equal(experts, torch.tensor([[2], [2]]))
    probs = torch.softmax(logits, dim=-1)
    torch.testing.assert_close(weights, probs[:, 2:])


def test_route_rejects_top_k_above_experts():
    with pytest.raises(ValueError, match="top_k"):
        moe.route(torch.randn(3, 4), 5, renormalize=True)


def test_permute_is_a_stable_sort_with_histogram_and_offsets():
    experts = torch.tensor([[2, 0], [0, 2], [1, 2], [2, 0]])
    x = torch.arange(4 * 3, dtype=torch.float32).reshape(4, 3)
    x_sorted, order, counts, offsets = moe.permute(x, experts, n_experts=4)
    # Flattened assignments: [2, 0, 0, 2, 1, 2, 2, 0]; equal experts keep their batch order.
    assert torch.equal(order, torch.tensor([1, 2, 7, 4, 0, 3, 5, 6]))
    assert torch.equal(counts, torch.tensor([3, 1, 4, 0]))
    assert counts.dtype == torch.int64
    assert torch.equal(offsets, torch.tensor([3, 4, 8, 8]))
    assert torch.equal(x_sorted, x[torch.tensor([0, 1, 3, 2, 0, 1, 2, 3])])


def test_permute_rejects_out_of_range_experts():
    with pytest.raises(ValueError, match="n_experts"):
        moe.permute(torch.randn(2, 4), torch.tensor([[0], [3]]), n_experts=2)


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_unpermute_of_permute_is_identity(top_k):
    torch.manual_seed(top_k)
    x = torch.randn(7, 5)
    experts = torch.stack([torch.randperm(4)[:top_k] for _ in range(7)])
    x_sorted, order, _, _ = moe.permute(x, experts, 4)
    ones = torch.ones(7, top_k)
    # Sums of up to three equal values round once, like the product: exact.
    assert torch.equal(moe.unpermute(x_sorted, order, ones, 7), x * top_k)
    torch.testing.assert_close(moe.unpermute(x_sorted, order, ones / top_k, 7), x)


def test_unpermute_weights_rows_in_fp32_and_keeps_dtype():
    torch.manual_seed(0)
    x = torch.randn(9, 6)
    experts = torch.stack([torch.randperm(5)[:2] for _ in range(9)])
    weights = torch.rand(9, 2)
    y = torch.randn(18, 6)
    _, order, _, _ = moe.permute(x, experts, 5)
    out = moe.unpermute(y, order, weights, 9)
    expected = torch.zeros(9, 6)
    for p, assignment in enumerate(order.tolist()):
        t, j = divmod(assignment, 2)
        expected[t] += weights[t, j] * y[p]
    torch.testing.assert_close(out, expected)
    assert moe.unpermute(y.bfloat16(), order, weights, 9).dtype == torch.bfloat16


def test_permute_unpermute_gradients():
    torch.manual_seed(0)
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    weights = torch.rand(5, 2, dtype=torch.float64, requires_grad=True)
    experts = torch.stack([torch.randperm(3)[:2] for _ in range(5)])
    scale = torch.randn(10, 3, dtype=torch.float64)

    def fn(x, weights):
        x_sorted, order, _, _ = reference.permute(x, experts, 3)
        return reference.unpermute(x_sorted * scale, order, weights, 5)

    # unpermute accumulates in fp32 by design, so check the float64 graph at fp32 precision.
    assert torch.autograd.gradcheck(fn, (x, weights), eps=1e-3, atol=1e-3, rtol=1e-3)


def _naive_grouped(x, weight, sizes):
    out, start = [], 0
    for e, size in enumerate(sizes):
        for row in range(start, start + size):
            out.append(weight[e] @ x[row])
        start += size
    return torch.stack(out)


def test_grouped_linear_loop_skips_empty_experts():
    torch.manual_seed(0)
    counts = torch.tensor([3, 0, 4, 0])
    x = torch.randn(7, 8)
    w = torch.randn(4, 12, 8)
    y = moe.grouped_linear(x, w, counts, counts.cumsum(0))
    torch.testing.assert_close(y, _naive_grouped(x, w, counts.tolist()))
    empty = moe.grouped_linear(x[:0], w, torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long))
    assert empty.shape == (0, 12)


def test_grouped_linear_rejects_unknown_impl():
    with pytest.raises(ValueError, match="impl"):
        moe.grouped_linear(torch.randn(2, 4), torch.randn(1, 4, 4), torch.tensor([2]), torch.tensor([2]), impl="magic")


def test_grouped_mm_alignment_rule():
    assert moe.grouped_mm_widths_aligned(torch.float32, 16, 32, 12)
    assert not moe.grouped_mm_widths_aligned(torch.float32, 16, 10)
    assert moe.grouped_mm_widths_aligned(torch.bfloat16, 8, 24)
    assert not moe.grouped_mm_widths_aligned(torch.bfloat16, 12)
    assert not moe.grouped_mm_supported("cpu", torch.float32, 10)


CPU_GROUPED_MM = moe.grouped_mm_supported("cpu", torch.float32, 16)


@pytest.mark.skipif(not CPU_GROUPED_MM, reason="this torch build has no CPU grouped matmul")
@pytest.mark.parametrize("broadcast_grad", [True, False])
def test_grouped_mm_matches_loop_forward_and_backward(broadcast_grad):
    torch.manual_seed(0)
    counts = torch.tensor([5, 0, 3, 8])
    x = torch.randn(16, 16, requires_grad=True)
    w = torch.randn(4, 24, 16, requires_grad=True)
    x2, w2 = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    y = moe.grouped_linear(x, w, counts, counts.cumsum(0), impl="grouped_mm")
    y_ref = moe.grouped_linear(x2, w2, counts, counts.cumsum(0), impl="reference")
    torch.testing.assert_close(y, y_ref)
    if broadcast_grad:
        # out.sum().backward() hands the grouped matmul an expanded (zero-stride) gradient.
        y.sum().backward()
        y_ref.sum().backward()
    else:
        grad = torch.randn_like(y)
        y.backward(grad)
        y_ref.backward(grad)
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(w.grad, w2.grad)


@pytest.mark.skipif(not moe.grouped_mm_supported("cpu", torch.bfloat16, 16), reason="no CPU bf16 grouped matmul")
def test_grouped_mm_bf16_error_no_worse_than_torch_bf16():
    torch.manual_seed(0)
    counts = torch.tensor([7, 1, 0, 8])
    x = torch.randn(16, 32)
    w = torch.randn(4, 16, 32)
    exact = moe.grouped_linear(x.double(), w.double(), counts, counts.cumsum(0))
    grouped = moe.grouped_linear(x.bfloat16(), w.bfloat16(), counts, counts.cumsum(0), impl="grouped_mm")
    loop = moe.grouped_linear(x.bfloat16(), w.bfloat16(), counts, counts.cumsum(0), impl="reference")
    assert grouped.dtype == torch.bfloat16
    err_grouped = (grouped.double() - exact).abs().max()
    err_loop = (loop.double() - exact).abs().max()
    assert err_grouped <= 2 * err_loop + 1e-6


def test_grouped_mm_probe_keeps_the_random_stream():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    reference._grouped_mm_probe.cache_clear()
    moe.grouped_mm_supported("cpu", torch.float32, 16)
    assert torch.equal(torch.rand(3), expected)


def test_grouped_mm_probe_works_under_no_grad():
    reference._grouped_mm_probe.cache_clear()
    with torch.no_grad():
        inside = moe.grouped_mm_supported("cpu", torch.float32, 16)
    reference._grouped_mm_probe.cache_clear()
    assert inside == moe.grouped_mm_supported("cpu", torch.float32, 16)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_grouped_mm_cuda_bf16_matches_loop():
    if not moe.grouped_mm_supported("cuda", torch.bfloat16, 128):
        pytest.skip("grouped matmul does not run on this GPU")
    torch.manual_seed(0)
    counts = torch.tensor([300, 0, 17, 195], device="cuda")
    x = torch.randn(512, 128, device="cuda")
    w = torch.randn(4, 256, 128, device="cuda")
    exact = moe.grouped_linear(x, w, counts, counts.cumsum(0))
    grouped = moe.grouped_linear(x.bfloat16(), w.bfloat16(), counts, counts.cumsum(0), impl="grouped_mm")
    loop = moe.grouped_linear(x.bfloat16(), w.bfloat16(), counts, counts.cumsum(0), impl="reference")
    assert (grouped.float() - exact).abs().max() <= 2 * (loop.float() - exact).abs().max() + 1e-6


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_permute_on_cuda_matches_cpu_exactly():
    torch.manual_seed(0)
    experts = torch.randint(0, 8, (257, 2))
    x = torch.randn(257, 16)
    cpu = moe.permute(x, experts, 8)
    gpu = moe.permute(x.cuda(), experts.cuda(), 8)
    for a, b in zip(cpu, gpu):
        assert torch.equal(a, b.cpu())
