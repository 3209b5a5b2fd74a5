"""``zoo bench gpu``: every GPU test and GPU benchmark of the project in one call, for the short
time a GPU is lent (see the project's benchmarks spec: do_bench medians, roofline measured in the
same run).

It runs, on the first CUDA device and in this order so that a time limit cuts benchmarks, not
tests: the GPU-marked tests of ``tests/kernels`` and ``tests/models`` (Triton kernels at model
shapes against their references, MoE backends), then ``zoo bench kernels --device cuda`` and
``zoo bench moe --device cuda``, then greedy decode of the small entries' inference forms. Everything
lands in ``--out`` (a folder): ``gpu_tests.xml`` (JUnit), ``gpu_summary.json`` (test counts,
failures, device, versions, seconds per step) and ``bench_kernels.jsonl`` / ``bench_moe.jsonl`` /
``bench_decode.jsonl`` (one record per measurement).

    python -m zoo.bench.gpu --out DIR [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

import torch

TEST_PATHS = ("tests/kernels", "tests/models")


def junit_counts(path: Path) -> dict[str, Any]:
    """Passed / failed / skipped counts and the failing test ids of a JUnit XML report."""
    root = ElementTree.parse(path).getroot()
    cases = root.iter("testcase")
    counts = {"passed": 0, "failed": 0, "skipped": 0, "failures": []}
    for case in cases:
        outcome = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
        if outcome in ("failure", "error"):
            counts["failed"] += 1
            message = next(child for child in case if child.tag in ("failure", "error")).get("message", "")
            counts["failures"].append(f"{case.get('classname')}::{case.get('name')}: {message[:300]}")
        elif outcome == "skipped":
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    return counts


def run_tests(checkout: Path, out: Path, timeout_s: float) -> dict[str, Any]:
    report = out / "gpu_tests.xml"
    paths = [str(checkout / p) for p in TEST_PATHS]
    command = [sys.executable, "-m", "pytest", *paths, "-m", "gpu", "-q", "-p", "no:cacheprovider", f"--junitxml={report}"]
    started = time.perf_counter()
    # From the working directory, not the checkout: where the package is assembled from links
    # (leaderboard/gpu_check.sh), the checkout's own zoo/ folder must not shadow it.
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    tail = (result.stdout + result.stderr)[-4000:]
    print(tail, flush=True)
    counts = junit_counts(report) if report.is_file() else {"passed": 0, "failed": 0, "skipped": 0, "failures": [tail]}
    return {"returncode": result.returncode, "seconds": time.perf_counter() - started, **counts}


DECODE_ENTRIES = ("bitnet-qsparse-small", "bitnet-small", "qsparse-small")


def decode_records(path: Path) -> int:
    """Greedy decode of the small entries' inference forms on CUDA against plain fp32 dense-small."""
    from zoo.bench import decode
    from zoo.bench.common import write_jsonl

    records = decode.run("cuda", configs=list(DECODE_ENTRIES), threads=None)
    write_jsonl(records, path)
    return len(records)


def run(out: str | Path, *, quick: bool = False, checkout: str | Path | None = None, test_timeout_s: float = 300) -> dict[str, Any]:
    """Runs the GPU tests, then the GPU benchmarks; returns (and writes) the summary."""
    if not torch.cuda.is_available():
        raise RuntimeError("zoo bench gpu needs a CUDA device; none is visible to torch")
    from zoo.bench import kernels, moe

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    checkout = Path(checkout) if checkout is not None else Path(__file__).resolve().parents[2]
    import triton

    summary: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
        "quick": quick,
        "steps": {},
    }

    def step(name: str, fn) -> None:
        started = time.perf_counter()
        try:
            summary["steps"][name] = {"result": fn(), "seconds": time.perf_counter() - started}
        except Exception as error:  # one failing step must not cost the others their GPU time
            summary["steps"][name] = {"error": f"{type(error).__name__}: {error}", "seconds": time.perf_counter() - started}
        (out / "gpu_summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        print(f"[zoo bench gpu] {name}: {json.dumps(summary['steps'][name], default=str)[:600]}", flush=True)

    if (checkout / "tests").is_dir():
        step("tests", lambda: run_tests(checkout, out, test_timeout_s))
    step("bench_kernels", lambda: len(kernels.run("cuda", out=out / "bench_kernels.jsonl", quick=quick)))
    step("bench_moe", lambda: len(moe.run(device="cuda", out=out / "bench_moe.jsonl")))
    step("bench_decode", lambda: decode_records(out / "bench_decode.jsonl"))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zoo bench gpu", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for the test report, the summary and the benchmark records")
    parser.add_argument("--quick", action="store_true", help="fewer benchmark shapes")
    parser.add_argument("--checkout", default=None, help="source checkout holding tests/ (default: the one this module is in)")
    args = parser.parse_args(argv)
    summary = run(args.out, quick=args.quick, checkout=args.checkout)
    failed = summary["steps"].get("tests", {}).get("result", {}).get("failed", 0)
    errors = [name for name, value in summary["steps"].items() if "error" in value]
    return 1 if failed or errors else 0


if __name__ == "__main__":
    sys.exit(main())
