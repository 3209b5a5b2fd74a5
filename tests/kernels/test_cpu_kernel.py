"""The compiled CPU kernels (``ternary_gemv.c``) against their torch reference: integer accumulators
compared with ``torch.equal``, on both paths of the dispatch (the ``cpu_isa`` fixture: AVX2 where
the CPU has it, and scalar, forced through ``zoo_force_isa``)."""

import pytest
import torch

from zoo.kernels import InputRule, compiled, pack_ternary
from zoo.kernels.pack import reference as pack_reference
from zoo.kernels.ternary_matmul import reference, ternary_accumulate

pytestmark = pytest.mark.skipif(not compiled.available(), reason="no C compiler: the torch path is used instead")


def case(n_out, k_in, rows, density, seed=0):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randint(-1, 2, (n_out, k_in), generator=generator)
    x = torch.randint(-127, 128, (rows, k_in), generator=generator, dtype=torch.int8)
    x[torch.rand(rows, k_in, generator=generator) >= density] = 0
    return x, pack_ternary(weight)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    "n_out, k_in, rows, density",
    [
        (4096, 512, 1, 0.4),  # many 32-byte slices, a Q-Sparse density
        (8320, 96, 2, 0.5),  # wide rows
        (4096, 2048, 1, 1.0),  # 2 MB of packed rows: big enough for the threads to split it
        (768, 256, 3, 1.0),  # the tiny models' FFN shape, dense int8 input
        (256, 768, 2, 0.3),
        (130, 33, 4, 0.5),  # a byte tail after the vector slices, odd channel count
        (7, 5, 2, 1.0),  # smaller than one slice: scalar only
        (512, 300, 2, 0.0),  # no kept channel at all
    ],
)
def test_accumulator_equals_the_reference_exactly(n_out, k_in, rows, density, threads, cpu_isa):
    x, packed = case(n_out, k_in, rows, density)
    expected = reference.ternary_accumulate(x, packed, n_out)
    got = compiled.ternary_accumulate(x, packed, n_out, threads=threads)
    assert got.dtype == torch.int32 and torch.equal(got, expected)


@pytest.mark.parametrize(
    "n_out, k_in, rows, density",
    [(4096, 512, 1, 0.4), (8320, 96, 2, 0.5), (4096, 2048, 1, 1.0), (130, 33, 4, 0.5), (7, 5, 2, 1.0), (512, 300, 2, 0.0)],
)
@pytest.mark.parametrize("threads", [1, 2])
def test_tiled_accumulator_equals_the_reference_exactly(n_out, k_in, rows, density, threads, cpu_isa):
    # the decoding layout: the same bytes re-cut (equal to the torch reference's cut), the same sums
    x, packed = case(n_out, k_in, rows, density, seed=1)
    tiles = compiled.ternary_tiles(packed)
    assert torch.equal(tiles, pack_reference.tile_packed(packed))
    got = compiled.ternary_accumulate_tiled(x, tiles, n_out, threads=threads)
    assert got.dtype == torch.int32 and torch.equal(got, reference.ternary_accumulate(x, packed, n_out))


@pytest.mark.parametrize("n_out, k_in", [(4096, 64), (130, 33), (7, 5), (384, 17)])
def test_the_tiles_give_back_the_packed_weight_exactly(n_out, k_in):
    # the inference layers hold only the tiles: the canonical layout must come back byte for byte
    from zoo.kernels import tile_ternary, untile_ternary

    values = torch.randint(-1, 2, (n_out, k_in), dtype=torch.int8, generator=torch.Generator().manual_seed(n_out))
    packed = pack_ternary(values)
    tiles = tile_ternary(packed)
    assert torch.equal(tiles, pack_reference.tile_packed(packed))
    assert torch.equal(untile_ternary(tiles, n_out), packed)
    with pytest.raises(ValueError, match="untile_packed"):
        untile_ternary(tiles, n_out + 128)


def test_tiled_extreme_sums_do_not_overflow(cpu_isa):
    # 4096 channels of -128 against all +1 weights: 2048 pairs, widened every 64 before int16 saturates
    k_in = 4096
    packed = pack_ternary(torch.cat([torch.ones(128, k_in), -torch.ones(128, k_in)]).to(torch.int8))
    tiles = compiled.ternary_tiles(packed)
    for value in (127, -127, -128):
        x = torch.full((1, k_in), value, dtype=torch.int8)
        got = compiled.ternary_accumulate_tiled(x, tiles, 256)
        assert got[0, 0].item() == value * k_in and got[0, -1].item() == -value * k_in


def test_extreme_sums_do_not_overflow(cpu_isa):
    # 2048 channels of ±127 against all +1 / all -1 weights: ±260096, far past int16, in int32.
    # -128 (not made by the absmax rule, but valid int8) fills a 64-pair int16 block to -32768 exactly.
    k_in = 2048
    weight = torch.cat([torch.ones(128, k_in), -torch.ones(128, k_in)]).to(torch.int8)
    packed = pack_ternary(weight)
    for value in (127, -127, -128):
        x = torch.full((1, k_in), value, dtype=torch.int8)
        got = compiled.ternary_accumulate(x, packed, 256)
        assert torch.equal(got, reference.ternary_accumulate(x, packed, 256))
        assert got[0, 0].item() == value * k_in and got[0, -1].item() == -value * k_in


def test_batched_leading_dims_and_dispatch():
    x, packed = case(300, 64, 6, 0.5)
    x = x.reshape(2, 3, 64)
    expected = reference.ternary_accumulate(x, packed, 300)
    assert torch.equal(compiled.ternary_accumulate(x, packed, 300), expected)
    assert torch.equal(ternary_accumulate(x, packed, 300, impl="cpu"), expected)
    assert torch.equal(ternary_accumulate(x, packed, 300, impl="auto"), expected)  # auto takes the kernel on a CPU


def test_bad_inputs_are_named():
    x, packed = case(64, 32, 1, 1.0)
    with pytest.raises(TypeError, match="int8"):
        compiled.ternary_accumulate(x.float(), packed, 64)
    with pytest.raises(ValueError, match="do not fit"):
        compiled.ternary_accumulate(x[:, :16], packed, 64)
    with pytest.raises(ValueError, match="do not fit"):
        compiled.ternary_accumulate(x, packed, 200)


def test_isa_is_reported_and_the_override_reaches_every_kernel():
    best = compiled.isa()
    assert best in ("avx512", "avx2", "scalar")
    try:
        assert compiled.force_isa("scalar") == "scalar" == compiled.isa()
        assert compiled.force_isa("avx2") == ("scalar" if best == "scalar" else "avx2")
        assert compiled.force_isa("avx512") == best  # a cap at or above the CPU's best changes nothing
        with pytest.raises(ValueError, match="force_isa"):
            compiled.force_isa("neon")
        assert compiled.library().zoo_force_isa(7) == -1 and compiled.isa() == best  # unknown: nothing changed
    finally:
        assert compiled.force_isa("auto") == best


def test_without_the_kernel_auto_falls_back_and_cpu_raises():
    import subprocess
    import sys

    code = (
        "import torch\n"
        "from zoo.kernels import pack_ternary\n"
        "from zoo.kernels.ternary_matmul import ternary_accumulate, reference\n"
        "x = torch.randint(-5, 6, (2, 16), dtype=torch.int8); p = pack_ternary(torch.randint(-1, 2, (8, 16)))\n"
        "assert torch.equal(ternary_accumulate(x, p, 8), reference.ternary_accumulate(x, p, 8))\n"
        "try:\n    ternary_accumulate(x, p, 8, impl='cpu')\nexcept RuntimeError as e:\n    print('refused:', e)\n"
    )
    env = {**__import__("os").environ, "ZOO_CPU_KERNELS": "0"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert "refused: ternary_accumulate: impl='cpu' needs" in out


def test_ops_without_a_cpu_kernel_refuse_impl_cpu():
    with pytest.raises(NotImplementedError, match="no compiled CPU kernel"):
        from zoo.kernels import topk_sparsify

        topk_sparsify(torch.randn(2, 8), 4, impl="cpu")


@pytest.mark.parametrize("sparsity, n_keep, block", [("none", 0, 1), ("topk", 45, 1), ("block", 5, 16), ("topk", 64, 1)])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("per_row", [False, True])
def test_fused_packed_linear_equals_the_reference_bit_for_bit(sparsity, n_keep, block, with_bias, per_row, cpu_isa):
    from zoo.kernels.ternary_matmul import packed_ternary_linear

    generator = torch.Generator().manual_seed(3)
    n_out, k_in = 200, 64
    packed = pack_ternary(torch.randint(-1, 2, (n_out, k_in), generator=generator))
    x = torch.randn(5, k_in, generator=generator)
    x[1, :] = torch.randint(-3, 4, (k_in,), generator=generator).float()  # many tied magnitudes: ties go to the lower index
    x[2, :] = 0.0  # an all-zero row: scale clamps, every q is 0
    x[3, 7] = 1e6  # one huge value: the others round to zero
    # one scale, or one per output row (an imported checkpoint's separately quantised q/k/v segments)
    alpha = torch.rand(n_out, generator=generator) * 0.1 + 0.01 if per_row else torch.tensor(0.0371)
    bias = torch.randn(n_out, generator=generator) if with_bias else None
    options = dict(rule=InputRule(sparsity, n_keep, block, int8=True))
    y_ref, nz_ref = packed_ternary_linear(x, packed, alpha, n_out, bias, impl="torch", **options)
    y_cpu, nz_cpu = packed_ternary_linear(x, packed, alpha, n_out, bias, impl="cpu", **options)
    assert torch.equal(y_cpu, y_ref) and nz_cpu == nz_ref
    if sparsity == "topk":
        assert nz_ref <= 5 * n_keep


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("sparsity, n_keep, block", [("none", 0, 1), ("topk", 90, 1), ("block", 8, 32)])
def test_sparse_projection_matches_the_reference(dtype, sparsity, n_keep, block, cpu_isa):
    from zoo.kernels.ternary_matmul import reference as ref

    generator = torch.Generator().manual_seed(5)
    x = torch.randn(3, 128, generator=generator)
    x[1, ::3] = 0.0  # natural zeros are skipped too
    weight_t = torch.randn(128, 300, generator=generator).to(dtype)
    bias = torch.randn(300, generator=generator)
    rule = InputRule(sparsity, n_keep, block)
    expected, kept = ref.sparse_projection(x, weight_t, bias, rule)
    got, got_kept = compiled.sparse_linear(x, weight_t, bias, rule)
    torch.testing.assert_close(got, expected)  # fp32 sums, another order: torch.testing's fp32 defaults
    assert got_kept == kept


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_prompt_of_rows_takes_one_gemm_with_the_same_result(dtype):
    # from BATCHED_ROWS rows on, the kept inputs go through one GEMM that reads the weight once
    from zoo.kernels.ternary_matmul import reference as ref

    generator = torch.Generator().manual_seed(11)
    x = torch.randn(compiled.SparseLinear.BATCHED_ROWS * 2, 128, generator=generator)
    weight_t = torch.randn(128, 300, generator=generator).to(dtype)
    bias, gain = torch.randn(300, generator=generator), torch.rand(128, generator=generator) + 0.5
    layer = compiled.SparseLinear(weight_t, bias, InputRule("topk", 40), norm=(gain, 1e-5))
    rows = [layer(x[i : i + 1]) for i in range(x.shape[0])]  # one at a time: the per-row kernel
    batched, kept = layer(x)
    expected, expected_kept = ref.sparse_projection(x, weight_t, bias, InputRule("topk", 40), (gain, 1e-5))
    assert kept == expected_kept == sum(n for _, n in rows) == 40 * x.shape[0]
    # fp32 weights: fp32 sums in another order; bf16: the GEMM rounds its inputs to bf16, as F.linear does
    tolerance = dict(rtol=1e-5, atol=1e-4) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2 * float(expected.abs().max()))
    torch.testing.assert_close(batched, expected, **tolerance)
    torch.testing.assert_close(torch.cat([y for y, _ in rows]), expected, rtol=1e-5, atol=1e-4)


def test_a_fused_rms_norm_agrees_with_the_reference():
    from zoo.kernels.ternary_matmul import packed_ternary_linear, sparse_projection

    generator = torch.Generator().manual_seed(7)
    x = torch.randn(4, 96, generator=generator) * 3
    gain = torch.rand(96, generator=generator) + 0.5
    packed = pack_ternary(torch.randint(-1, 2, (160, 96), generator=generator))
    alpha = torch.tensor(0.05)
    options = dict(rule=InputRule("topk", 48, int8=True), norm=(gain, 1e-5))
    y_ref, nz_ref = packed_ternary_linear(x, packed, alpha, 160, impl="torch", **options)
    y_cpu, nz_cpu = packed_ternary_linear(x, packed, alpha, 160, impl="cpu", **options)
    # the sums of squares run in another order: an int8 value may move by one at a rounding edge
    torch.testing.assert_close(y_cpu, y_ref, rtol=0.02, atol=0.02 * float(y_ref.abs().max()))
    assert nz_cpu == nz_ref
    weight_t = torch.randn(96, 160, generator=generator)
    options["rule"] = InputRule("topk", 48)  # full-precision inputs
    y_ref, _ = sparse_projection(x, weight_t, impl="torch", **options)
    y_cpu, _ = sparse_projection(x, weight_t, impl="cpu", **options)
    torch.testing.assert_close(y_cpu, y_ref)


def test_sparse_projection_split_over_threads(monkeypatch):
    from zoo.kernels.ternary_matmul import reference as ref

    generator = torch.Generator().manual_seed(9)
    x = torch.randn(1, 1024, generator=generator)
    weight_t = torch.randn(1024, 600, generator=generator)  # 2.4 MB read: the threads split the columns
    expected, _ = ref.sparse_projection(x, weight_t, None, InputRule())
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        got, _ = compiled.sparse_linear(x, weight_t, None, InputRule())
    finally:
        torch.set_num_threads(previous)
    # 1024-term fp32 sums of order-30 values, added in another order than torch's: ~1e-5 apart
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
