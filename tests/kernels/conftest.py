"""Running the Triton kernel tests on a CPU: the interpreter in a subprocess, and ptxas builds.

Triton picks interpreted or compiled mode once per process, when ``triton`` is imported (its own
standard library is ``@jit`` code too), and its 3.9 interpreter leaves ``triton.language``
patched after kernels that call helpers. So tests marked ``interpreter`` never run in the main
test process: they are deselected there, and each file's driver test runs them in a child
process started with ``TRITON_INTERPRET=1``. The main process stays in compiled mode, for the
GPU tests and for :func:`compile_for_gpu`. Run the whole suite with ``TRITON_INTERPRET=1`` set
and the marked tests run in-process instead (the drivers then skip).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") == "1"
REPO_ROOT = Path(__file__).resolve().parents[2]


def pytest_configure(config):
    config.addinivalue_line("markers", "interpreter: runs Triton kernels on CPU through TRITON_INTERPRET=1")


def pytest_collection_modifyitems(config, items):
    if INTERPRETING:
        return
    moved = [item for item in items if item.get_closest_marker("interpreter")]
    if moved:
        config.hook.pytest_deselected(items=moved)
        items[:] = [item for item in items if not item.get_closest_marker("interpreter")]


@pytest.fixture
def interpreter_subprocess(request):
    """Runs the ``interpreter`` tests of the requesting file in a child process with ``TRITON_INTERPRET=1``."""
    if INTERPRETING:
        pytest.skip("TRITON_INTERPRET=1: the interpreter tests run in this process")

    def run() -> str:
        env = {**os.environ, "TRITON_INTERPRET": "1"}
        env.pop("ZOO_KERNEL", None)
        test_file = str(request.node.path)
        command = [sys.executable, "-m", "pytest", test_file, "-m", "interpreter", "-q", "-p", "no:cacheprovider"]
        result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"interpreter tests failed:\n{result.stdout[-8000:]}\n{result.stderr[-4000:]}"
        assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-2000:]
        return result.stdout

    return run


@pytest.fixture
def no_interpret(monkeypatch):
    """Runs the test with ``ZOO_KERNEL`` unset; refuses to run in an interpreting process."""
    if INTERPRETING:
        pytest.skip("compiled kernels are unavailable in a TRITON_INTERPRET=1 process")
    monkeypatch.delenv("ZOO_KERNEL", raising=False)


@pytest.fixture
def compile_for_gpu(no_interpret):
    """Compiles a kernel for an H100 (sm_90) with no GPU present, through ptxas; returns the PTX.

    The interpreter accepts programs the compiler rejects (and divides exactly where the GPU's
    ``/`` does not), so every kernel is also built for real.
    """
    import inspect

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if "constexprs" not in inspect.signature(ASTSource).parameters:
        pytest.skip(f"triton {triton.__version__} has the older ASTSource API; the GPU tests cover compiled kernels there")

    def build(kernel, signature: dict, constexprs: dict, num_warps: int = 4) -> str:
        full = {name: "constexpr" if name in constexprs else signature[name] for name in kernel.arg_names}
        source = ASTSource(fn=kernel, signature=full, constexprs=constexprs)
        # fusion on, as on the GPU machines: the rounding must not depend on it
        options = {"num_warps": num_warps, "enable_fp_fusion": True}
        compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options)
        assert compiled.asm["cubin"], kernel
        return compiled.asm["ptx"]

    return build
