"""RMSNorm: the compiled CPU kernel (forward and backward) against the torch reference. Floating
point sums in another order (double here), so the comparison is to fp32 rounding."""

import pytest
import torch

from zoo.kernels import compiled
from zoo.kernels.norm import reference, rms_norm

pytestmark = pytest.mark.skipif(not compiled.available(), reason="no C compiler: the torch path is used instead")


def _run(impl, x, weight, grad):
    x, weight = x.clone().requires_grad_(), weight.clone().requires_grad_()
    y = rms_norm(x, weight, 1e-5, impl=impl)
    y.backward(grad)
    return y.detach(), x.grad, weight.grad


@pytest.mark.parametrize("shape", [(3, 8), (2, 5, 96), (130, 768)])
def test_compiled_norm_and_gradients_match_the_reference(shape):
    gen = torch.Generator().manual_seed(shape[-1])
    x = torch.randn(*shape, generator=gen) * 3
    weight = torch.randn(shape[-1], generator=gen)
    grad = torch.randn(*shape, generator=gen)
    for got, expected in zip(_run("cpu", x, weight, grad), _run("torch", x, weight, grad)):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_threads_change_nothing_but_the_order_of_the_gain_gradient():
    x, weight, grad = torch.randn(64, 32), torch.randn(32), torch.randn(64, 32)
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append(_run("cpu", x, weight, grad))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    torch.testing.assert_close(results[0][2], results[1][2])


def test_other_dtypes_take_the_reference_and_bad_calls_are_refused():
    x, weight = torch.randn(4, 16).bfloat16(), torch.ones(16).bfloat16()
    assert torch.equal(rms_norm(x, weight, 1e-5), reference.rms_norm(x, weight, 1e-5))  # auto: not fp32, the reference
    with pytest.raises(TypeError):
        compiled.rms_norm_forward(x, weight, 1e-5)
    with pytest.raises(TypeError):
        compiled.rms_norm_forward(torch.randn(4, 16), torch.ones(8), 1e-5)
