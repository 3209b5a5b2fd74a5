"""Suite-wide settings: one torch thread; the fixture that runs a test on each instruction-set path
of the compiled CPU kernels.

The tests use tiny models, where a second thread buys nothing and, on a shared 2-core machine,
a descheduled thread stalls every multi-threaded op (measured: the suite took 10 minutes with
two contended threads and 77 s with one). Child processes (the DDP test) inherit the variable.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(params=["avx512", "avx2", "scalar"])
def cpu_isa(request):
    """Runs the test once per path of every compiled kernel's dispatch, through its one override
    (``zoo.kernels.compiled.force_isa``), and checks that the path asked for is the one that ran:
    on a CPU without AVX-512 or AVX2 that case is skipped by name, never passed on another path."""
    from zoo.kernels import compiled

    if not compiled.available():
        pytest.skip("no C compiler: the torch path is used instead")
    try:
        active = compiled.force_isa(request.param)
        if active != request.param:
            pytest.skip(f"this CPU runs {active}, not {request.param}")
        yield request.param
        assert compiled.isa() == request.param, "the override changed during the test"
    finally:
        compiled.force_isa("auto")
