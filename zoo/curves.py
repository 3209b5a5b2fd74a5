"""``zoo plot RUN``: the training curves of a ``zoo fit`` run (loss, bits per byte, learning rate,
and Q-Sparse's measured input sparsity per site, arXiv 2407.10969) from the ``metrics.csv`` that
Lightning's CSV logger writes, in one PNG (matplotlib, the ``plot`` extra).

``RUN`` is the run's folder (its newest ``lightning_logs/version_*`` is read), one version folder,
or a ``metrics.csv``. Lightning writes one row per logging call with the other columns empty, so
each curve keeps only the steps where its column has a value.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

METRICS_FILE = "metrics.csv"
PANELS = (  # (title, which columns: a predicate on the column name)
    ("loss", lambda c: c in ("train/loss", "val/loss")),
    ("bits per byte", lambda c: c in ("train/bpb", "val/bpb")),
    ("learning rate", lambda c: c.startswith("lr-")),
    ("measured input sparsity", lambda c: c.startswith("sparsity/")),
)


def find_metrics(run: str | Path) -> Path:
    """The ``metrics.csv`` of ``run`` (see the module); one clear error when there is none."""
    run = Path(run)
    if run.is_file():
        return run
    if not run.is_dir():
        raise FileNotFoundError(f"{run}: no such run folder or metrics file; expected a zoo fit run folder or its metrics.csv")
    found = sorted(run.rglob(METRICS_FILE), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"{run}: holds no {METRICS_FILE}; expected a zoo fit run folder (Lightning's CSV logger writes one)")
    return found[-1]


def read_curves(path: Path) -> dict[str, tuple[list[float], list[float]]]:
    """Column name → (steps, values), each only where the column has a value."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "step" not in rows[0]:
        raise ValueError(f"{path}: not a Lightning metrics.csv (expected a header with a 'step' column)")
    curves: dict[str, tuple[list[float], list[float]]] = {}
    for row in rows:
        for column, text in row.items():
            if column in ("step", "epoch") or not text or not row.get("step"):
                continue
            value = float(text)
            if math.isfinite(value):
                steps, values = curves.setdefault(column, ([], []))
                steps.append(float(row["step"]))
                values.append(value)
    return curves


def plot_run(run: str | Path, out: str | Path) -> Path:
    """Draws the run's curves into ``out`` (a PNG); returns its path."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("zoo plot needs matplotlib: pip install 'moezoo[plot]'") from None
    metrics = find_metrics(run)
    curves = read_curves(metrics)
    panels = [(title, sorted(c for c in curves if wanted(c))) for title, wanted in PANELS]
    panels = [(title, columns) for title, columns in panels if columns]
    if not panels:
        raise ValueError(f"{metrics}: has no loss, bpb, lr or sparsity column to draw (columns: {sorted(curves)})")
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for axis, (title, columns) in zip(axes[0], panels):
        for column in columns:
            steps, values = curves[column]
            style = {"marker": "o"} if len(steps) < 20 else {}  # validation points are few
            axis.plot(steps, values, label=column, **style)
        axis.set_title(title)
        axis.set_xlabel("step")
        axis.legend(fontsize=7)
        axis.grid(alpha=0.3)
    figure.suptitle(str(metrics.parent), fontsize=8)
    figure.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out
