"""Suite-wide settings: one torch thread.

The tests use tiny models, where a second thread buys nothing and, on a shared 2-core machine,
a descheduled thread stalls every multi-threaded op (measured: the suite took 10 minutes with
two contended threads and 77 s with one). Child processes (the DDP test) inherit the variable.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
