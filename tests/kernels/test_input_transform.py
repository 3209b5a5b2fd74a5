"""The input transform of a projection, ``Q_x(S(x))``: the compiled CPU kernel against the torch
reference, compared with ``torch.equal`` (masks and int8 values are discrete), on both paths of
the dispatch (the ``cpu_isa`` fixture)."""

import pytest
import torch

from zoo.kernels import InputRule, compiled, input_transform, pack_ternary
from zoo.kernels.topk import reference

pytestmark = pytest.mark.skipif(not compiled.available(), reason="no C compiler: the torch path is used instead")

RULES = [
    ("none", 0, 1, True),
    ("topk", 16, 1, False),
    ("topk", 16, 1, True),
    ("topk", 1, 1, True),
    ("topk", 64, 1, True),
    ("block", 2, 8, False),
    ("block", 8, 32, True),
]


def _rows(shape, seed):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    x.reshape(-1, shape[-1])[0, :9] = 0.5  # ties at the threshold: the lower index must win
    x.reshape(-1, shape[-1])[-1] = 0.0  # an all-zero row: the int8 scale's clamp
    return x


@pytest.mark.parametrize("shape", [(7, 64), (3, 5, 128), (301, 256)])
@pytest.mark.parametrize("sparsity,n_keep,block,int8", RULES)
def test_compiled_transform_equals_the_reference(shape, sparsity, n_keep, block, int8, cpu_isa):
    x = _rows(shape, seed=shape[0])
    rule = InputRule(sparsity, n_keep, block, int8)
    got = input_transform(x, rule, impl="cpu")
    expected = input_transform(x, rule, impl="torch")
    assert got.dtype == x.dtype and got.shape == x.shape
    assert torch.equal(got, expected)
    if sparsity != "none":
        mask = reference.topk_mask(x, n_keep) if sparsity == "topk" else reference.block_topk_mask(x, n_keep, block)
        assert torch.equal(got != 0, (x != 0) & mask & (got != 0))  # nothing outside the mask survives


def test_compiled_transform_counts_and_threads_agree():
    x = _rows((64, 96), seed=3)
    rule = InputRule("topk", 24, int8=True)
    reference_out = input_transform(x, rule, impl="torch")
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            out, nonzero = compiled.topk_rows(x, rule)
            assert torch.equal(out, reference_out)
            assert nonzero == int((reference_out != 0).sum())
    finally:
        torch.set_num_threads(before)


def test_compiled_transform_in_bf16_and_on_strided_input():
    x = _rows((16, 64), seed=4)
    for value in (x.bfloat16(), x.t().contiguous().t()):
        got = input_transform(value, InputRule("topk", 8, int8=True), impl="cpu")
        expected = input_transform(value, InputRule("topk", 8, int8=True), impl="torch")
        assert got.dtype == value.dtype
        assert torch.equal(got, expected.to(value.dtype))


def test_compiled_transform_trains_straight_through():
    x = _rows((5, 32), seed=5).requires_grad_()
    y = input_transform(x, InputRule("block", 2, 8, int8=True), impl="cpu")
    grad = torch.randn_like(y)
    y.backward(grad)
    assert torch.equal(x.grad, grad)  # the identity: every channel gets its gradient, kept or not


def test_bad_rules_are_refused():
    x = torch.randn(2, 12)
    with pytest.raises(ValueError, match="sparsity"):
        InputRule("magic", 2)
    with pytest.raises(ValueError, match="at least 1 channel"):
        InputRule("topk", 0)
    with pytest.raises(ValueError, match="at most 4"):
        InputRule("block", 5, 4)
    with pytest.raises(ValueError, match="block_size"):
        compiled.topk_rows(x, InputRule("block", 2, 5))
    with pytest.raises(ValueError, match="n_keep"):
        compiled.topk_rows(x, InputRule("topk", 13))
    with pytest.raises(ValueError, match="input_transform: block_size"):
        input_transform(x, InputRule("block", 2, 5), impl="torch")
    with pytest.raises(TypeError):
        compiled.topk_rows(x.int(), InputRule("topk", 2))
    with pytest.raises(ValueError, match="int8"):
        compiled.PackedLinear(pack_ternary(torch.zeros(4, 12, dtype=torch.int8)), 1.0, 4, None, InputRule("topk", 2))
