"""``zoo bench``: speed measured as a ratio to a baseline timed in the same process.

Each sub-module (``kernels``, ``moe``, ``train``, ``decode``) measures one thing and returns
records built with :func:`zoo.bench.common.record`; the CLI appends them as JSON lines under
``leaderboard/``. Speed is never asserted in tests.
"""
