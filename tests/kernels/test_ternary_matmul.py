"""Ternary linear on 2-bit packed weights: the reference and the Triton sparse-input GEMV and
packed projection (through the interpreter); the compiled CPU paths are in test_cpu_kernel.py.

Integer accumulators of int8 activations are compared exactly; float paths at torch.testing
defaults (fp32), and bf16 by comparing the kernel's error with torch's bf16 error.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zoo.kernels import InputRule
from zoo.kernels import ternary_matmul as tm
from zoo.kernels._dispatch import resolve_impl
from zoo.kernels.pack.reference import pack_ternary
from zoo.kernels.ternary_matmul import reference
from zoo.kernels.topk.reference import topk_int8_quantize_raw, topk_sparsify

interpreted = pytest.mark.interpreter  # run in a TRITON_INTERPRET=1 child process (see conftest.py)


def test_interpreted_kernels(interpreter_subprocess):
    """Every ``@interpreted`` test of this file, run through the Triton interpreter."""
    interpreter_subprocess()


def _gemv(*args, **kwargs):
    from zoo.kernels.ternary_matmul import _triton  # imported once the fixture picked the mode

    return _triton.ternary_gemv(*args, **kwargs)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _ternary(n_out: int, k_in: int, seed: int) -> torch.Tensor:
    return torch.randint(-1, 2, (n_out, k_in), generator=_gen(seed), dtype=torch.int8)


def _sparse_batch(batch: int, k_in: int, keep: int, seed: int) -> torch.Tensor:
    x = torch.randn(batch, k_in, generator=_gen(seed))
    x = topk_sparsify(x, keep)
    x[-1] = 0.0  # a token with nothing kept
    return x


# -- reference ---------------------------------------------------------------------------------


def test_reference_equals_f_linear_on_ternary_weights():
    weight = _ternary(13, 22, seed=0)
    x = torch.randn(4, 22, generator=_gen(1))
    y = reference.ternary_linear(x, pack_ternary(weight), 0.5, 13)
    torch.testing.assert_close(y, F.linear(x, weight.float() * 0.5))


def test_reference_int8_path_is_integer_accumulation_then_rescale():
    weight = _ternary(9, 30, seed=2)
    q, scale, _ = topk_int8_quantize_raw(torch.randn(3, 30, generator=_gen(3)), 12)
    q = q.to(torch.int8)
    acc = reference.ternary_accumulate(q, pack_ternary(weight), 9)
    assert acc.dtype == torch.int32
    assert torch.equal(acc, (q.long() @ weight.long().t()).int())
    y = reference.ternary_linear(q, pack_ternary(weight), torch.tensor(0.25), 9, scale)
    assert torch.equal(y, acc.float() / scale * 0.25)


# -- Triton GEMV through the interpreter ------------------------------------------------------


@interpreted
@pytest.mark.parametrize("batch", [1, 3, 16, 19])
@pytest.mark.parametrize("n_out,k_in", [(37, 50), (64, 33)])
def test_triton_int8_accumulators_are_exact(batch, n_out, k_in):
    weight = _ternary(n_out, k_in, seed=n_out + k_in)
    packed = pack_ternary(weight)
    x = _sparse_batch(batch, k_in, keep=k_in // 3, seed=batch)
    q, scale, _ = topk_int8_quantize_raw(x, k_in // 3)
    q = q.to(torch.int8)
    expected = reference.ternary_accumulate(q, packed, n_out)
    for split_k in (1, 3):
        acc = _gemv(q, packed, 1.0, n_out, accumulate_only=True, split_k=split_k, block_k=16, block_j=16)
        assert torch.equal(acc, expected.float()), split_k
    # unsplit, the rescale is the reference's, operation for operation
    y = _gemv(q, packed, torch.tensor(0.37), n_out, scale, split_k=1, block_k=16, block_j=16)
    assert torch.equal(y, reference.ternary_linear(q, packed, torch.tensor(0.37), n_out, scale))
    assert torch.equal(tm.ternary_accumulate(q, packed, n_out, impl="triton"), expected)


@interpreted
@pytest.mark.parametrize("batch", [1, 5, 16])
def test_triton_fp32_matches_reference(batch):
    weight = _ternary(37, 50, seed=4)
    packed = pack_ternary(weight)
    x = _sparse_batch(batch, 50, keep=20, seed=5)
    expected = reference.ternary_linear(x, packed, 0.37, 37)
    for split_k in (1, 2):
        y = _gemv(x, packed, 0.37, 37, split_k=split_k, block_k=16, block_j=16)
        assert y.dtype == torch.float32
        torch.testing.assert_close(y, expected)
    torch.testing.assert_close(tm.ternary_linear(x, packed, 0.37, 37, impl="triton"), expected)


@interpreted
@pytest.mark.parametrize("batch", [1, 4])
def test_triton_bf16_error_no_worse_than_torch_bf16(batch):
    weight = _ternary(64, 96, seed=6)
    packed = pack_ternary(weight)
    x = _sparse_batch(batch, 96, keep=38, seed=7).to(torch.bfloat16)
    exact = F.linear(x.double(), weight.double() * 0.37)
    torch_bf16 = F.linear(x, (weight.float() * 0.37).to(torch.bfloat16))
    y = _gemv(x, packed, 0.37, 64, block_k=16, block_j=16)
    assert y.dtype == torch.bfloat16
    kernel_error = (y.double() - exact).abs().max()
    torch_error = (torch_bf16.double() - exact).abs().max()
    assert kernel_error <= 2 * torch_error


@interpreted
@pytest.mark.parametrize("sparsity,n_keep,block", [("none", 0, 1), ("topk", 20, 1), ("block", 4, 8)])
def test_triton_packed_projection_matches_the_reference(sparsity, n_keep, block):
    """The inference form's whole projection on the Triton path (opt-in): the same int8 inputs and
    zero count as the reference, the same outputs to fp32 rounding, with a bias and a folded norm."""
    weight = _ternary(24, 40, seed=10)
    packed = pack_ternary(weight)
    x = torch.randn(3, 40, generator=_gen(11))
    bias = torch.randn(24, generator=_gen(12))
    norm = (torch.rand(40, generator=_gen(13)) + 0.5, 1e-5)
    options = dict(rule=InputRule(sparsity, n_keep, block, int8=True), norm=norm)
    y, nonzero = tm.packed_ternary_linear(x, packed, 0.3, 24, bias, impl="triton", **options)
    expected, expected_nonzero = tm.packed_ternary_linear(x, packed, 0.3, 24, bias, impl="torch", **options)
    torch.testing.assert_close(y, expected)
    assert int(nonzero) == expected_nonzero


@interpreted
def test_triton_leading_dims_and_dispatch():
    weight = _ternary(21, 40, seed=8)
    packed = pack_ternary(weight)
    x = _sparse_batch(6, 40, keep=10, seed=9).reshape(2, 3, 40)
    assert resolve_impl("auto", x, op="ternary_linear", has_triton=tm.HAS_TRITON) == "triton"
    y = tm.ternary_linear(x, packed, 1.5, 21)
    assert y.shape == (2, 3, 21)
    torch.testing.assert_close(y, reference.ternary_linear(x, packed, 1.5, 21))
    with pytest.raises(ValueError):
        tm.ternary_linear(x.to(torch.int8), packed, 1.5, 21, impl="triton")  # int8 needs its scale
    with pytest.raises(ValueError):
        tm.ternary_linear(x, packed, 1.5, 30, impl="triton")  # 30 outputs do not fit 6 bytes


@interpreted
def test_triton_prefill_tiles_match_reference():
    weight = _ternary(21, 40, seed=17)
    packed = pack_ternary(weight)
    x = _sparse_batch(70, 40, keep=16, seed=18)
    expected = reference.ternary_linear(x, packed, 0.5, 21)
    for block_m in (None, 16, 32, 1):
        torch.testing.assert_close(_gemv(x, packed, 0.5, 21, block_m=block_m, block_k=16, block_j=16), expected)
    with pytest.raises(ValueError):
        _gemv(x, packed, 0.5, 21, block_m=8)


@interpreted
@pytest.mark.parametrize("tokens", [3, 40])
def test_triton_ternary_matmul_forward_and_gradients_match_torch(tokens):
    weight = torch.randn(21, 40, generator=_gen(19))
    x = _sparse_batch(tokens, 40, keep=16, seed=20).reshape(1, tokens, 40)
    grad = torch.randn(1, tokens, 21, generator=_gen(21))
    results = []
    for impl in ("triton", "torch"):
        w = weight.clone().requires_grad_()
        xi = x.clone().requires_grad_()
        y = tm.ternary_matmul(xi, w, impl=impl)
        y.backward(grad)
        results.append((y.detach(), xi.grad, w.grad))
    for got, expected in zip(*results):
        torch.testing.assert_close(got, expected)


# -- GPU -------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("batch", [1, 4, 16])
def test_ternary_gemv_on_gpu_at_model_shapes(batch, no_interpret):
    n_out, k_in = 14336, 4096
    weight = _ternary(n_out, k_in, seed=15)
    packed = pack_ternary(weight).cuda()
    x = _sparse_batch(batch, k_in, keep=1638, seed=16)
    q, scale, _ = topk_int8_quantize_raw(x, 1638)
    q, scale = q.to(torch.int8).cuda(), scale.cuda()
    expected = reference.ternary_accumulate(q, packed, n_out)
    assert torch.equal(tm.ternary_accumulate(q, packed, n_out, impl="triton"), expected)
    xb = x.to(torch.bfloat16).cuda()
    exact = F.linear(xb.double(), weight.double().cuda() * 0.37)
    torch_error = (F.linear(xb, (weight.cuda().float() * 0.37).to(torch.bfloat16)).double() - exact).abs().max()
    kernel_error = (tm.ternary_linear(xb, packed, 0.37, n_out, impl="triton").double() - exact).abs().max()
    assert kernel_error <= 2 * torch_error


@pytest.mark.parametrize(
    "x_type,b_pad,atomic", [("bf16", 1, True), ("i8", 1, False), ("i8", 16, True), ("bf16", 16, False), ("fp16", 64, True)]
)
def test_gemv_compiles_for_sm90(compile_for_gpu, x_type, b_pad, atomic):
    from zoo.kernels.ternary_matmul import _triton

    int8 = x_type == "i8"
    signature = dict(
        x_ptr=f"*{x_type}",
        packed_ptr="*u8",
        y_ptr="*fp32" if (int8 or atomic) else f"*{x_type}",
        alpha_ptr="*fp32",
        x_scale_ptr="*fp32",
        B="i32",
        K="i32",
        N="i32",
        NB="i32",
        stride_xb="i32",
        k_per_split="i32",
    )
    constexprs = dict(
        B_PAD=b_pad,
        BLOCK_K=64,
        BLOCK_J=32,
        USE_DOT=b_pad > 1,
        INT8=int8,
        SCALE=True,
        ATOMIC=atomic,
        HALF_AS_FP32=False,
    )
    ptx = compile_for_gpu(_triton._ternary_gemv_kernel, signature, constexprs, num_warps=8 if b_pad >= 64 else 4)
    if int8:
        assert "div.rn.f32" in ptx and "div.full" not in ptx
