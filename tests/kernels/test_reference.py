"""The reference ops are the spec: exact-K masks, STE gradients, int8/ternary ranges, 2-bit packing."""

import pytest
import torch

from zoo import kernels
from zoo.kernels.quant.reference import absmean_scale
from zoo.kernels.topk.reference import block_topk_mask, topk_mask


def tie_free(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    # A random permutation of distinct magnitudes with random signs has no ties by construction.
    n = int(torch.tensor(shape).prod())
    values = (torch.randperm(n, generator=g).float() + 1) / n
    signs = torch.randint(0, 2, (n,), generator=g).float() * 2 - 1
    return (values * signs).reshape(shape)


@pytest.mark.parametrize("d,k", [(10, 7), (64, 1), (64, 45), (33, 32)])
def test_topk_keeps_exactly_k_largest(d, k):
    x = tie_free(5, d)
    y = kernels.topk_sparsify(x, k)
    assert torch.equal((y != 0).sum(-1), torch.full((5,), k))
    expected = torch.zeros_like(x).scatter(-1, x.abs().topk(k, dim=-1).indices, 1.0).bool()
    assert torch.equal(y != 0, expected)
    assert torch.equal(y[expected], x[expected])


def test_topk_ties_keep_exactly_k_lower_index_first():
    x = torch.tensor([[1.0, -1.0, 1.0, 0.5, 1.0]])
    assert torch.equal(topk_mask(x, 2), torch.tensor([[True, True, False, False, False]]))
    assert torch.equal(topk_mask(torch.zeros(2, 6), 3).sum(-1), torch.tensor([3, 3]))


def test_topk_k_equal_d_is_dense_and_bad_k_raises():
    x = torch.randn(3, 8)
    assert torch.equal(kernels.topk_sparsify(x, 8), x)
    with pytest.raises(ValueError, match="k must be in"):
        topk_mask(x, 9)
    with pytest.raises(ValueError, match="k must be in"):
        topk_mask(x, 0)


@pytest.mark.parametrize("op", ["topk", "block", "topk_int8", "int8"])
def test_straight_through_gradient_is_identity(op):
    x = tie_free(4, 64).requires_grad_()
    fns = {
        "topk": lambda t: kernels.topk_sparsify(t, 20),
        "block": lambda t: kernels.block_topk_sparsify(t, 8, 32),
        "topk_int8": lambda t: kernels.topk_int8_quantize(t, 20),
        "int8": kernels.int8_quantize,
    }
    upstream = torch.randn(4, 64)
    fns[op](x).backward(upstream)
    assert torch.equal(x.grad, upstream)


def test_ternary_gradient_is_identity():
    w = torch.randn(16, 8, requires_grad=True)
    upstream = torch.randn(16, 8)
    kernels.ternary_quantize(w).backward(upstream)
    assert torch.equal(w.grad, upstream)


def test_block_topk_keeps_n_per_block():
    x = tie_free(3, 96)
    y = kernels.block_topk_sparsify(x, 16, 32)
    assert torch.equal((y != 0).reshape(3, 3, 32).sum(-1), torch.full((3, 3), 16))
    assert torch.equal(block_topk_mask(x, 16, 32), topk_mask(x.reshape(3, 3, 32), 16).reshape(3, 96))
    with pytest.raises(ValueError, match="block must divide"):
        block_topk_mask(x, 4, 40)


def test_int8_quantize_range_scale_and_round_half_even():
    x = torch.randn(6, 50) * 3
    q, scale = kernels.int8_quantize_raw(x)
    assert q.dtype == torch.int8 and int(q.abs().max()) == 127
    assert torch.allclose(scale, 127 / x.abs().amax(-1, keepdim=True))
    assert torch.allclose(kernels.int8_quantize(x), q.float() / scale)
    # 0.5 and 2.5 units round to even: 0 and 2 (torch.round semantics).
    halves = torch.tensor([[127.0, 0.5, 2.5, -1.5]])
    assert torch.equal(kernels.int8_quantize_raw(halves)[0], torch.tensor([[127, 0, 2, -2]], dtype=torch.int8))


def test_topk_int8_equals_mask_times_quantised_row():
    x = tie_free(4, 40)
    fused = kernels.topk_int8_quantize(x, 12)
    q, scale = kernels.int8_quantize_raw(x)
    assert torch.equal(fused, (q.float() / scale) * topk_mask(x, 12))


def test_ternary_values_and_absmean_scale():
    w = torch.randn(32, 48)
    values, alpha = kernels.ternary_quantize_raw(w)
    assert set(values.unique().tolist()) <= {-1, 0, 1}
    assert torch.allclose(alpha, w.abs().mean())
    assert torch.allclose(kernels.ternary_quantize(w), values.float() * alpha)
    stacked = torch.randn(3, 8, 4)
    per_expert = absmean_scale(stacked, per_leading_dim=True)
    assert per_expert.shape == (3, 1, 1)
    assert torch.allclose(per_expert.flatten(), stacked.abs().mean(dim=(1, 2)))


@pytest.mark.parametrize("n_out,k_in", [(4, 3), (7, 5), (33, 16), (1, 1)])
def test_pack_unpack_round_trip_exact(n_out, k_in):
    w = torch.randint(-1, 2, (n_out, k_in), dtype=torch.int8)
    packed = kernels.pack_ternary(w)
    assert packed.dtype == torch.uint8 and packed.shape == (k_in, -(-n_out // 4))
    assert torch.equal(kernels.unpack_ternary(packed, n_out), w)


def test_pack_layout_is_along_output_dimension():
    w = torch.tensor([[1], [0], [-1], [1]], dtype=torch.int8)  # one input channel, four outputs
    # codes w+1 = 2, 1, 0, 2 at bit offsets 0, 2, 4, 6
    assert kernels.pack_ternary(w).tolist() == [[2 | 1 << 2 | 0 << 4 | 2 << 6]]


def test_pack_rejects_non_ternary():
    with pytest.raises(ValueError, match=r"\{-1, 0, 1\}"):
        kernels.pack_ternary(torch.tensor([[2, 0]]))


def test_impl_triton_without_kernel_raises_and_bad_impl_names_choices(monkeypatch):
    x = torch.randn(2, 8)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv("ZOO_KERNEL", raising=False)
    from zoo.kernels import moe

    with pytest.raises(NotImplementedError, match="no Triton kernel exists"):
        moe.route(x, 2, True, impl="triton")  # routing has no Triton kernel
    with pytest.raises(RuntimeError, match="needs triton installed and a CUDA tensor"):
        kernels.topk_sparsify(x, 4, impl="triton")  # a kernel exists, but not for a CPU tensor
    with pytest.raises(ValueError, match="impl must be one of"):
        kernels.topk_sparsify(x, 4, impl="cuda")
