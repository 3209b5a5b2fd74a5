"""Q-Sparse top-K Triton kernels vs the torch reference, bit for bit, through the interpreter.

Masks, kept values, int8 values and scales must be equal (``torch.equal``), ties included: the
kernel breaks them towards the lower channel index exactly as ``reference.topk_mask`` does.
"""

from __future__ import annotations

import pytest
import torch

from zoo import kernels
from zoo.kernels import topk
from zoo.kernels._dispatch import resolve_impl
from zoo.kernels.topk import reference

interpreted = pytest.mark.interpreter  # run in a TRITON_INTERPRET=1 child process (see conftest.py)


def test_interpreted_kernels(interpreter_subprocess):
    """Every ``@interpreted`` test of this file, run through the Triton interpreter."""
    interpreter_subprocess()


def _with_ties(rows: int, d: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    """Coarsely rounded values: many equal magnitudes, of both signs, and exact zeros."""
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(rows, d, generator=gen) * 2).round() / 2
    x[0, : d // 2] = 0.0  # a row whose threshold is zero for small K
    return x.to(dtype)


def _tie_free(rows: int, d: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(rows, d, generator=gen).to(dtype)


@interpreted
@pytest.mark.parametrize("rows,d", [(3, 17), (5, 64), (7, 96)])
@pytest.mark.parametrize("make", [_with_ties, _tie_free])
def test_topk_mask_and_values_match_reference(rows, d, make):
    x = make(rows, d, seed=rows * d)
    for k in (1, 2, d // 3, d // 2 + 1, d - 1):
        mask = topk.topk_mask(x, k, impl="triton")
        assert torch.equal(mask, reference.topk_mask(x, k)), k
        assert torch.equal(mask.sum(-1), torch.full((rows,), k))
        assert torch.equal(kernels.topk_sparsify(x, k, impl="triton"), reference.topk_sparsify(x, k))


@interpreted
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_topk_half_precision_matches_reference(dtype):
    for make in (_with_ties, _tie_free):
        x = make(4, 33, seed=7, dtype=dtype)
        for k in (1, 11, 32):
            out = kernels.topk_sparsify(x, k, impl="triton")
            assert out.dtype == dtype
            assert torch.equal(out, reference.topk_sparsify(x, k))


@interpreted
def test_topk_on_leading_dims_and_all_equal_rows():
    x = _with_ties(6, 40, seed=3).reshape(2, 3, 40)
    assert torch.equal(topk.topk_mask(x, 9, impl="triton"), reference.topk_mask(x, 9))
    same = torch.full((3, 21), -1.5)
    mask = topk.topk_mask(same, 5, impl="triton")
    assert torch.equal(mask, reference.topk_mask(same, 5))
    assert mask[:, :5].all() and not mask[:, 5:].any()


@interpreted
def test_topk_k_equal_d_is_identity_and_bad_k_raises():
    x = _tie_free(3, 17, seed=1)
    assert torch.equal(kernels.topk_sparsify(x, 17, impl="triton"), x)
    with pytest.raises(ValueError):
        kernels.topk_sparsify(x, 18, impl="triton")
    with pytest.raises(ValueError):
        kernels.topk_sparsify(x, 0, impl="triton")


@interpreted
@pytest.mark.parametrize("block,n_keep", [(32, 16), (16, 1), (32, 31), (8, 3)])
def test_block_topk_matches_reference(block, n_keep):
    for make in (_with_ties, _tie_free):
        x = make(5, 96, seed=block + n_keep).reshape(5, 96)
        mask = topk.block_topk_mask(x, n_keep, block, impl="triton")
        assert torch.equal(mask, reference.block_topk_mask(x, n_keep, block))
        out = kernels.block_topk_sparsify(x, n_keep, block, impl="triton")
        assert torch.equal(out, reference.block_topk_sparsify(x, n_keep, block))
    with pytest.raises(ValueError):
        kernels.block_topk_sparsify(x, 4, 40, impl="triton")


@interpreted
@pytest.mark.parametrize("rows,d", [(3, 17), (5, 64), (7, 96)])
def test_topk_int8_matches_reference(rows, d):
    for make in (_with_ties, _tie_free):
        x = make(rows, d, seed=d + 1) * 3.1
        for k in (1, d // 2, d - 1, d):
            q, scale, mask = topk.topk_int8_quantize_raw(x, k, impl="triton")
            ref_q, ref_scale, ref_mask = reference.topk_int8_quantize_raw(x, k)
            assert q.dtype == torch.int8
            assert torch.equal(q, ref_q.to(torch.int8))
            assert torch.equal(scale, ref_scale)
            assert torch.equal(mask, ref_mask)
            assert torch.equal(kernels.topk_int8_quantize(x, k, impl="triton"), reference.topk_int8_quantize(x, k))


@interpreted
def test_topk_int8_rounds_half_to_even():
    # max |x| = 127 makes the scale exactly 1, so the halves reach the rounding unchanged
    x = torch.tensor([[127.0, 2.5, -2.5, 3.5, -0.5, 0.5, 1.5, 6.0, 0.1]])
    q, scale, _ = topk.topk_int8_quantize_raw(x, 8, impl="triton")
    assert torch.equal(scale, torch.ones(1, 1))
    assert torch.equal(q, torch.tensor([[127, 2, -2, 4, 0, 0, 2, 6, 0]], dtype=torch.int8))
    assert torch.equal(q, reference.topk_int8_quantize_raw(x, 8)[0].to(torch.int8))


@interpreted
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_topk_int8_half_precision(dtype):
    x = _tie_free(5, 64, seed=11, dtype=dtype)
    q, scale, mask = topk.topk_int8_quantize_raw(x, 20, impl="triton")
    ref_q, ref_scale, ref_mask = reference.topk_int8_quantize_raw(x, 20)
    assert torch.equal(q, ref_q.to(torch.int8)) and torch.equal(scale, ref_scale) and torch.equal(mask, ref_mask)
    fake = kernels.topk_int8_quantize(x, 20, impl="triton")
    # the reference divides by an fp32 scale and so returns fp32; rounding it gives the kernel's value
    assert fake.dtype == dtype
    assert torch.equal(fake, reference.topk_int8_quantize(x, 20).to(dtype))


@interpreted
def test_straight_through_gradients_are_identity():
    x = _tie_free(3, 64, seed=5).requires_grad_()
    grad = _tie_free(3, 64, seed=6)
    for fn in (
        lambda t: kernels.topk_sparsify(t, 10, impl="triton"),
        lambda t: kernels.block_topk_sparsify(t, 4, 16, impl="triton"),
        lambda t: kernels.topk_int8_quantize(t, 10, impl="triton"),
    ):
        x.grad = None
        fn(x).backward(grad)
        assert torch.equal(x.grad, grad)


@interpreted
def test_auto_picks_triton_under_the_interpreter():
    x = _with_ties(3, 17, seed=2)
    assert resolve_impl("auto", x, op="topk_sparsify", has_triton=topk.HAS_TRITON) == "triton"
    assert torch.equal(kernels.topk_sparsify(x, 5), reference.topk_sparsify(x, 5))
    assert torch.equal(kernels.topk_int8_quantize(x, 5), reference.topk_int8_quantize(x, 5))


@pytest.mark.usefixtures("no_interpret")
def test_cpu_without_interpreter_uses_torch():
    x = torch.randn(2, 8)
    assert resolve_impl("auto", x, op="topk_sparsify", has_triton=True) == "torch"
    with pytest.raises(RuntimeError):
        kernels.topk_sparsify(x, 3, impl="triton")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_topk_on_gpu_at_model_shapes(dtype, no_interpret):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4096, generator=gen).to(dtype).cuda()
    ties = ((torch.randn(16, 14336, generator=gen) * 4).round() / 4).to(dtype).cuda()
    for t, k in ((x, 1638), (ties, 5734)):
        assert torch.equal(topk.topk_mask(t, k, impl="triton"), reference.topk_mask(t, k))
        q, scale, mask = topk.topk_int8_quantize_raw(t, k, impl="triton")
        ref_q, ref_scale, ref_mask = reference.topk_int8_quantize_raw(t, k)
        assert torch.equal(q, ref_q.to(torch.int8)) and torch.equal(scale, ref_scale) and torch.equal(mask, ref_mask)
    assert torch.equal(kernels.block_topk_sparsify(x, 16, 32, impl="triton"), reference.block_topk_sparsify(x, 16, 32))


def test_kernels_compile_for_sm90(compile_for_gpu):
    from zoo.kernels.topk import _triton

    signature = dict(x_ptr="*bf16", out_ptr="*bf16", q_ptr="*i8", scale_ptr="*fp32", mask_ptr="*i8", n_rows="i32", D="i32", K="i32")
    fused = dict(R=1, BLOCK_D=4096, LOW_BIT=16, QUANT=True, WRITE_OUT=True, WRITE_Q=True, WRITE_MASK=True)
    ptx = compile_for_gpu(_triton._topk_rows_kernel, signature, fused, num_warps=8)
    # exact parity needs IEEE division (Triton's `/` would be div.full.f32)
    assert "div.rn.f32" in ptx and "div.full" not in ptx
    blocks = dict(R=64, BLOCK_D=32, LOW_BIT=0, QUANT=False, WRITE_OUT=True, WRITE_Q=False, WRITE_MASK=False)
    compile_for_gpu(_triton._topk_rows_kernel, {**signature, "x_ptr": "*fp32", "out_ptr": "*fp32"}, blocks)
