"""``zoo bench kernels``: the sparse-activation kernels of Q-Sparse (Wang et al., arXiv 2407.10969)
on BitNet b1.58 weights (Ma et al., arXiv 2402.17764), each timed against its dense baseline in
the same process.

CPU: the sparse-input linear (reads only the weight rows of kept channels) against dense fp32
``F.linear``, and the fused top-K + int8 reference against ``torch.topk`` + scatter + quantise.
CUDA, in addition: the Triton top-K + int8 kernel and the sparse-input ternary GEMV against
torch bf16, timed with ``triton.testing.do_bench`` (it flushes L2: a packed 4096×14336 weight is
15 MB and would otherwise be read from cache), with a device-to-device copy measured in the same
run as the bandwidth roofline.

Bytes a decode GEMV must read (benchmarks.md): ``N·K·d_B·b/8`` + scales + activations + output,
``d_B = 1 − (1 − d)^B`` for B tokens whose masks keep a fraction d (independent masks; the
measured union is recorded too).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from zoo.bench.common import interleaved_median_times, median_time, pinned_threads, record, write_jsonl

# (in, out) of Llama-2-7B / Mistral-7B projections
SHAPES = [(4096, 4096), (4096, 1024), (4096, 14336), (14336, 4096), (4096, 11008), (11008, 4096)]
QUICK_SHAPES = [(4096, 4096), (4096, 14336)]
DENSITIES = (1.0, 0.7, 0.5, 0.4, 0.3)
BATCHES = (1, 4, 16)
TOPK_SHAPES = [(16, 4096), (2048, 4096), (16, 14336), (2048, 14336)]
QUICK_TOPK_SHAPES = [(16, 4096), (2048, 4096)]
INT8_BITS = 8


def _sparse_activations(batch: int, k_in: int, density: float, dtype: torch.dtype, device, seed: int) -> torch.Tensor:
    """Activations with an independent top-K mask per token keeping ``density`` of the channels."""
    from zoo.kernels.topk.reference import topk_sparsify

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, k_in, generator=gen)
    keep = max(1, int(density * k_in))
    return topk_sparsify(x, keep).to(dtype=dtype, device=device)


def _union_density(x: torch.Tensor) -> float:
    return float((x != 0).any(dim=0).float().mean())


def _topk_int8_baseline(x: torch.Tensor, k: int) -> torch.Tensor:
    """The plain torch way: ``torch.topk`` + scatter into a mask + absmax int8 fake quantisation."""
    idx = x.abs().topk(k, dim=-1).indices
    mask = torch.zeros_like(x, dtype=torch.bool).scatter_(-1, idx, True)
    scale = 127.0 / x.abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-5)
    return (((x.float() * scale).round().clamp(-128, 127) * mask) / scale).to(x.dtype)


def _paired_medians(candidate, baseline, repeats: int = 15) -> tuple[float, float]:
    """Median times of two functions timed in alternation (the benchmarks' one interleaved timer)."""
    times = interleaved_median_times({"candidate": candidate, "baseline": baseline}, warmup=2, repeats=repeats)
    return times["candidate"], times["baseline"]


def _cpu_sparse_linear(shapes, batches, densities) -> list[dict[str, Any]]:
    """The inference form's full-precision Q-Sparse projection (top-K of each row, then only the
    kept channels' weight rows read: one compiled call) against dense fp32 ``F.linear``."""
    from zoo.kernels import InputRule, cpu_kernel_can_run
    from zoo.kernels.ternary_matmul import sparse_projection

    if not cpu_kernel_can_run(torch.empty(0)):
        return []
    records = []
    for k_in, n_out in shapes:
        weight = torch.randn(n_out, k_in)
        weight_t = weight.t().contiguous()
        for batch in batches:
            x = _sparse_activations(batch, k_in, 1.0, torch.float32, "cpu", seed=batch)
            for density in densities:
                n_keep = max(1, round(density * k_in))
                time_s, baseline = _paired_medians(
                    lambda: sparse_projection(x, weight_t, rule=InputRule("topk", n_keep), impl="cpu"), lambda: F.linear(x, weight)
                )
                moved = n_out * n_keep * batch * 4 + x.numel() * 4 + batch * n_out * 4
                records.append(
                    record(
                        "sparse_projection",
                        time_s=time_s,
                        baseline_s=baseline,
                        baseline="F.linear fp32 dense",
                        device="cpu",
                        shape=f"{batch}x{k_in}->{n_out}",
                        batch=batch,
                        in_features=k_in,
                        out_features=n_out,
                        dtype="float32",
                        density=density,
                        impl="cpu",
                        gbps=moved / time_s / 1e9,
                        roofline_fraction=None,
                    )
                )
    return records


PACKED_SHAPES = [(4096, 4096), (4096, 14336), (640, 3456), (1728, 640)]  # benchmarks.md's target, a 7B FFN, the small zoo FFN
QUICK_PACKED_SHAPES = [(4096, 4096)]


def _cpu_packed_gemv(shapes, densities=(1.0, 0.4), threads=(1, 2)) -> list[dict[str, Any]]:
    """The compiled packed ternary x int8 GEMV (batch 1), with GB/s of packed weights read, per
    thread count, against dense fp32 ``F.linear`` of the same shape timed in the same loop."""
    from zoo.kernels import cpu_kernel_can_run
    from zoo.kernels.pack import pack_ternary
    from zoo.kernels.ternary_matmul import cpu_kernel_isa, ternary_accumulate

    if not cpu_kernel_can_run(torch.empty(0)):
        return []
    records = []
    for k_in, n_out in shapes:
        generator = torch.Generator().manual_seed(k_in + n_out)
        packed = pack_ternary(torch.randint(-1, 2, (n_out, k_in), generator=generator))
        weight = torch.randn(n_out, k_in, generator=generator)
        dense_x = torch.randn(1, k_in, generator=generator)
        for density in densities:
            x = torch.randint(-127, 128, (1, k_in), generator=generator, dtype=torch.int8)
            x[torch.rand(1, k_in, generator=generator) >= density] = 0
            kept = float((x != 0).float().mean())
            for count in threads:
                with pinned_threads(count):  # the records' device name states the count
                    candidate, dense = (lambda: ternary_accumulate(x, packed, n_out, impl="cpu")), (lambda: F.linear(dense_x, weight))
                    # cold: interleaved with the 4-byte dense weight, which evicts the packed one from
                    # the caches every round; warm: each run back to back, the packed weight in cache
                    # (where a small model's weights stay while it decodes).
                    cold = _paired_medians(candidate, dense)
                    warm = (median_time(candidate, warmup=3, repeats=15), median_time(dense, warmup=3, repeats=15))
                    for cache, (time_s, baseline) in (("cold", cold), ("warm", warm)):
                        read = packed.numel() * kept
                        records.append(
                            record(
                                "packed_ternary_gemv",
                                time_s=time_s,
                                baseline_s=baseline,
                                baseline="F.linear fp32 dense, same threads",
                                device="cpu",
                                shape=f"1x{k_in}->{n_out}",
                                in_features=k_in,
                                out_features=n_out,
                                dtype="int8 x 2-bit",
                                density=density,
                                kept_fraction=kept,
                                threads=count,
                                cache=cache,
                                isa=cpu_kernel_isa(),
                                impl="cpu",
                                gbps=read / time_s / 1e9,
                                gbps_per_thread=read / time_s / 1e9 / count,
                                roofline_fraction=None,
                            )
                        )
    return records


def _cpu_topk_int8(shapes, density: float = 0.4) -> list[dict[str, Any]]:
    from zoo.kernels import topk_int8_quantize

    records = []
    for rows, dim in shapes:
        x = torch.randn(rows, dim, generator=torch.Generator().manual_seed(rows + dim))
        k = max(1, int(density * dim))
        time_s, baseline = _paired_medians(lambda: topk_int8_quantize(x, k, impl="torch"), lambda: _topk_int8_baseline(x, k), repeats=7)
        records.append(
            record(
                "topk_int8_quantize",
                time_s=time_s,
                baseline_s=baseline,
                baseline="torch.topk+scatter+quantise",
                device="cpu",
                shape=f"{rows}x{dim}",
                dtype="float32",
                density=density,
                impl="torch",
                gbps=2 * x.numel() * 4 / time_s / 1e9,
                roofline_fraction=None,
            )
        )
    return records


def _gpu_records(device: torch.device, gemv_shapes, batches, densities, topk_shapes) -> list[dict[str, Any]]:
    """Triton kernels on CUDA: do_bench medians, and the copy roofline measured in this run."""
    import triton.testing

    from zoo.kernels import topk_int8_quantize
    from zoo.kernels.pack import quantize_pack_ternary
    from zoo.kernels.quant import int8_quantize_raw
    from zoo.kernels.ternary_matmul import ternary_linear

    def bench(fn) -> float:
        return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median") / 1e3

    def copy_bandwidth() -> float:
        # achievable HBM bandwidth: bytes read + written by a device-to-device copy (the 512 MB of
        # buffers go when this returns)
        src = torch.empty(1 << 28, dtype=torch.uint8, device=device)
        dst = torch.empty_like(src)
        return 2 * src.numel() / bench(lambda: dst.copy_(src))

    copy_bw = copy_bandwidth()

    records = []
    for rows, dim in topk_shapes:
        x = torch.randn(rows, dim, device=device, dtype=torch.bfloat16)
        k = max(1, int(0.4 * dim))
        baseline = bench(lambda: _topk_int8_baseline(x, k))
        time_s = bench(lambda: topk_int8_quantize(x, k, impl="triton"))
        moved = 2 * x.numel() * x.element_size() + rows * 4
        records.append(
            record(
                "topk_int8_quantize",
                time_s=time_s,
                baseline_s=baseline,
                baseline="torch.topk+scatter+quantise bf16",
                device=device,
                shape=f"{rows}x{dim}",
                dtype="bfloat16",
                density=0.4,
                impl="triton",
                gbps=moved / time_s / 1e9,
                copy_gbps=copy_bw / 1e9,
                roofline_fraction=(moved / copy_bw) / time_s,
            )
        )

    for k_in, n_out in gemv_shapes:
        weight = torch.randn(n_out, k_in, device=device)
        packed, alpha = quantize_pack_ternary(weight, impl="triton")
        dense_bf16 = weight.to(torch.bfloat16)
        del weight
        for batch in batches:
            dense_x = _sparse_activations(batch, k_in, 1.0, torch.bfloat16, device, seed=batch)
            baseline = bench(lambda: F.linear(dense_x, dense_bf16))
            for density in densities:
                x = _sparse_activations(batch, k_in, density, torch.bfloat16, device, seed=batch)
                union = _union_density(x)
                x_q, x_scale = int8_quantize_raw(x, impl="triton")
                for act, run in (
                    ("bfloat16", lambda: ternary_linear(x, packed, alpha, n_out, impl="triton")),
                    ("int8", lambda: ternary_linear(x_q, packed, alpha, n_out, x_scale, impl="triton")),
                ):
                    time_s = bench(run)
                    # bf16 in/out; int8 in with a per-token fp32 scale, fp32 out; plus α
                    io = batch * (k_in * 2 + n_out * 2) if act == "bfloat16" else batch * (k_in + 4 + n_out * 4)
                    moved = n_out * k_in * union * 2 / 8 + io + 4
                    records.append(
                        record(
                            "ternary_gemv",
                            time_s=time_s,
                            baseline_s=baseline,
                            baseline="F.linear bf16 dense",
                            device=device,
                            shape=f"{batch}x{k_in}->{n_out}",
                            batch=batch,
                            in_features=k_in,
                            out_features=n_out,
                            dtype=act,
                            weight_bits=2,
                            density=density,
                            union_density=union,
                            impl="triton",
                            gbps=moved / time_s / 1e9,
                            copy_gbps=copy_bw / 1e9,
                            roofline_fraction=(moved / copy_bw) / time_s,
                        )
                    )
    return records


OPTIONS = ("device", "quick", "threads")  # the zoo bench options this benchmark honours


def run(device: str = "cpu", out: str | Path | None = None, quick: bool = False, threads: int | None = None) -> list[dict[str, Any]]:
    """Measure the kernels on ``device`` ("cpu" or "cuda[:i]") and return (and optionally append to
    ``out`` as JSON lines) one record per measurement. ``quick`` keeps to a couple of shapes (under
    a minute on 2 cores); ``threads`` fixes torch's CPU thread count for the run (the records'
    device name states it)."""
    device = torch.device(device)
    if threads is not None:
        with pinned_threads(threads):
            return run(device, out, quick)
    shapes = QUICK_SHAPES[:1] if quick else SHAPES
    densities = DENSITIES
    records = _cpu_sparse_linear(shapes, BATCHES, densities)
    if quick:
        # the target shape of benchmarks.md, one token, at the headline density only
        records += _cpu_sparse_linear(QUICK_SHAPES[1:], (1,), (0.4,))
    records += _cpu_topk_int8(QUICK_TOPK_SHAPES if quick else TOPK_SHAPES)
    records += _cpu_packed_gemv(QUICK_PACKED_SHAPES if quick else PACKED_SHAPES)
    if device.type == "cuda":
        records += _gpu_records(
            device,
            QUICK_SHAPES if quick else SHAPES,
            BATCHES,
            (0.4,) if quick else DENSITIES,
            QUICK_TOPK_SHAPES if quick else TOPK_SHAPES,
        )
    if out is not None:
        write_jsonl(records, out)
    return records
