"""BitNet b1.58 quantiser and 2-bit packing Triton kernels vs the torch reference, exactly,
through the interpreter: int8 values and scales, ternary values, fake-quantised tensors and
packed bytes must all be equal (``torch.equal``)."""

from __future__ import annotations

import pytest
import torch

from zoo import kernels
from zoo.kernels import pack, quant
from zoo.kernels.pack import reference as pack_ref
from zoo.kernels.quant import reference as quant_ref

interpreted = pytest.mark.interpreter  # run in a TRITON_INTERPRET=1 child process (see conftest.py)


def test_interpreted_kernels(interpreter_subprocess):
    """Every ``@interpreted`` test of this file, run through the Triton interpreter."""
    interpreter_subprocess()


def _randn(*shape, seed: int, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


@interpreted
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(3, 17), (5, 64), (2, 3, 96), (1, 1)])
def test_int8_quantize_matches_reference(shape, dtype):
    x = _randn(*shape, seed=sum(shape), dtype=dtype) * 2.7
    q, scale = quant.int8_quantize_raw(x, impl="triton")
    ref_q, ref_scale = quant_ref.int8_quantize_raw(x)
    assert q.dtype == torch.int8 and scale.shape == (*shape[:-1], 1)
    assert torch.equal(q, ref_q) and torch.equal(scale, ref_scale)
    fake = kernels.int8_quantize(x, impl="triton")
    assert fake.dtype == dtype and torch.equal(fake, quant_ref.int8_quantize(x))


@interpreted
def test_int8_rounds_half_to_even_and_handles_zero_rows():
    x = torch.tensor([[127.0, 2.5, -2.5, 3.5, -0.5, 0.5, 1.5, -127.0], [0.0] * 8])
    q, scale = quant.int8_quantize_raw(x, impl="triton")
    assert torch.equal(q[0], torch.tensor([127, 2, -2, 4, 0, 0, 2, -127], dtype=torch.int8))
    assert torch.equal(q[1], torch.zeros(8, dtype=torch.int8))
    assert torch.equal(scale, quant_ref.int8_quantize_raw(x)[1])


@interpreted
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_ternary_quantize_matches_reference(dtype):
    w = _randn(19, 23, seed=1, dtype=dtype)
    values, alpha = quant.ternary_quantize_raw(w, impl="triton")
    ref_values, ref_alpha = quant_ref.ternary_quantize_raw(w)
    assert torch.equal(values, ref_values) and torch.equal(alpha, ref_alpha)
    assert torch.equal(kernels.ternary_quantize(w, impl="triton"), quant_ref.ternary_quantize(w))
    stacked = _randn(3, 7, 10, seed=2, dtype=dtype)
    assert torch.equal(kernels.ternary_quantize(stacked, True, impl="triton"), quant_ref.ternary_quantize(stacked, True))
    assert torch.equal(quant.ternary_quantize_raw(stacked, True, impl="triton")[0], quant_ref.ternary_quantize_raw(stacked, True)[0])


@interpreted
def test_ternary_rounding_boundaries():
    # mean|w| = 1, so w/α is w itself: 0.5 rounds to 0 (half to even), 1.5 clips to 1
    w = torch.tensor([[0.5, -0.5, 1.5, -1.5, 0.25, 0.75, 0.0, 2.0, -1.0, 1.0, 0.5, 2.5]])
    assert torch.equal(quant_ref.absmean_scale(w), torch.tensor(1.0))
    values, _ = quant.ternary_quantize_raw(w, impl="triton")
    assert torch.equal(values, torch.tensor([[0, 0, 1, -1, 0, 1, 0, 1, -1, 1, 0, 1]], dtype=torch.int8))
    assert torch.equal(values, quant_ref.ternary_quantize_raw(w)[0])


@interpreted
def test_quantiser_gradients_are_identity():
    x = _randn(3, 17, seed=4).requires_grad_()
    grad = _randn(3, 17, seed=5)
    kernels.int8_quantize(x, impl="triton").backward(grad)
    assert torch.equal(x.grad, grad)
    w = _randn(2, 5, 6, seed=6).requires_grad_()
    grad_w = _randn(2, 5, 6, seed=7)
    kernels.ternary_quantize(w, True, impl="triton").backward(grad_w)
    assert torch.equal(w.grad, grad_w)


@interpreted
@pytest.mark.parametrize("n_out,k_in", [(1, 1), (5, 3), (17, 9), (64, 33), (35, 70)])
def test_pack_unpack_match_reference(n_out, k_in):
    w = _randn(n_out, k_in, seed=n_out * k_in)
    values, alpha = quant_ref.ternary_quantize_raw(w)
    packed = kernels.pack_ternary(values, impl="triton")
    ref_packed = pack_ref.pack_ternary(values)
    assert packed.shape == (k_in, -(-n_out // 4)) and packed.dtype == torch.uint8
    assert torch.equal(packed, ref_packed)
    assert torch.equal(kernels.pack_ternary(values.float(), impl="triton"), ref_packed)
    assert torch.equal(kernels.unpack_ternary(packed, n_out, impl="triton"), values)
    fused, fused_alpha = pack.quantize_pack_ternary(w, impl="triton")
    assert torch.equal(fused, ref_packed) and torch.equal(fused_alpha, alpha)
    assert torch.equal(pack.quantize_pack_ternary(w, impl="torch")[0], ref_packed)


@interpreted
def test_pack_validates_like_the_reference():
    with pytest.raises(ValueError):
        kernels.pack_ternary(torch.tensor([[2, 0, 1]]), impl="triton")
    with pytest.raises(ValueError):
        kernels.pack_ternary(torch.zeros(3), impl="triton")
    with pytest.raises(ValueError):
        kernels.unpack_ternary(torch.zeros(2, 3, dtype=torch.uint8), 13, impl="triton")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_quant_and_pack_on_gpu_at_model_shapes(no_interpret):
    x = _randn(64, 4096, seed=0, dtype=torch.bfloat16).cuda()
    q, scale = quant.int8_quantize_raw(x, impl="triton")
    ref_q, ref_scale = quant_ref.int8_quantize_raw(x)
    assert torch.equal(q, ref_q) and torch.equal(scale, ref_scale)
    assert torch.equal(kernels.int8_quantize(x, impl="triton"), quant_ref.int8_quantize(x))
    w = _randn(1024, 4096, seed=1).cuda()
    values, alpha = quant_ref.ternary_quantize_raw(w)
    assert torch.equal(kernels.ternary_quantize(w, impl="triton"), quant_ref.ternary_quantize(w))
    packed = kernels.pack_ternary(values, impl="triton")
    assert torch.equal(packed, pack_ref.pack_ternary(values))
    assert torch.equal(pack.quantize_pack_ternary(w, impl="triton")[0], packed)
    assert torch.equal(kernels.unpack_ternary(packed, 1024, impl="triton"), values)


def test_kernels_compile_for_sm90(compile_for_gpu):
    from zoo.kernels.pack import _triton as pack_triton
    from zoo.kernels.quant import _triton as quant_triton

    ptx = compile_for_gpu(
        quant_triton._int8_rows_kernel,
        dict(x_ptr="*bf16", q_ptr="*i8", fake_ptr="*bf16", scale_ptr="*fp32", n_rows="i32", D="i32", stride_x="i32"),
        dict(R=1, BLOCK_D=4096, WRITE_Q=True, WRITE_FAKE=True),
        num_warps=8,
    )
    assert "div.rn.f32" in ptx and "div.full" not in ptx
    ptx = compile_for_gpu(
        quant_triton._ternary_kernel,
        dict(w_ptr="*fp32", alpha_ptr="*fp32", q_ptr="*i8", fake_ptr="*fp32", per_slice="i32"),
        dict(BLOCK=1024, WRITE_Q=True, WRITE_FAKE=True),
    )
    assert "div.rn.f32" in ptx and "div.full" not in ptx
    pack_signature = dict(w_ptr="*bf16", alpha_ptr="*fp32", packed_ptr="*u8", N="i32", K="i32", NB="i32")
    compile_for_gpu(pack_triton._pack_kernel, pack_signature, dict(BLOCK_J=16, BLOCK_K=64, QUANTIZE=True))
    compile_for_gpu(pack_triton._pack_kernel, {**pack_signature, "w_ptr": "*i8"}, dict(BLOCK_J=16, BLOCK_K=64, QUANTIZE=False))
    compile_for_gpu(
        pack_triton._unpack_kernel, dict(packed_ptr="*u8", out_ptr="*i8", N="i32", K="i32", NB="i32"), dict(BLOCK_J=16, BLOCK_K=64)
    )
