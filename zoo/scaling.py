"""The inference-optimal scaling law of Q-Sparse (arXiv 2407.10969, Wang, Ma, Wang, Wei, 2024),
measured on our own runs.

``zoo scaling run`` trains a sweep of model sizes × top-K sparsity levels × two precisions (full
precision, and BitNet b1.58 ternary weights with int8 activations, arXiv 2402.17764) through the
zoo's own training path (:func:`zoo.fit_cli.run_lightning_cli`), and records per run the
non-embedding parameters ``N``, the activated parameters ``N_a`` measured on data (Q-Sparse
§3.6), the measured sparsity ``S = 1 − N_a/N`` and the final validation loss, as JSON lines.

``zoo scaling fit`` fits, for each precision separately, Q-Sparse's law

    L(N, S) = E + A(S) / N^α,        A(S) = B + C · exp(β / (1 − S))

exactly as the paper does: a Huber loss (δ = 1e-3) on the residuals of log L, minimised by
L-BFGS from a grid of initialisations, keeping the best. The optimal sparsity at a fixed number
of *activated* parameters follows from ``L(N_a, S) = E + A(S)·((1 − S)/N_a)^α``:
``S* = argmin_S A(S)·(1 − S)^α`` (a 1-D minimisation), with a bootstrap interval (runs resampled
with replacement, refitted, 5th–95th percentile).

Every constant reported here is fitted on this project's runs. The paper's published constants
(E=1.86, B=0.01, C=1.89, α=0.10, β=0.05) belong to its 300M–7B models and are never used as ours.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

HUBER_DELTA = 1e-3
PRECISIONS = {
    # precision name -> the zoo config whose recipe it trains with (lr, schedule, FFN, quantisation)
    "fp": "qsparse-tiny",
    "b1.58": "bitnet-qsparse-tiny",
}
DEFAULT_DIMS = (48, 80, 112, 160)
DEFAULT_K_RATIOS = (1.0, 0.7, 0.5, 0.3)


def _leaderboard_dir() -> Path:
    from zoo.bench.common import LEADERBOARD_DIR

    return LEADERBOARD_DIR


def default_sweep_path() -> Path:
    """``./scaling/sweep.jsonl`` under the working directory (the committed sweep lives in
    ``leaderboard/scaling/``; pass it explicitly to refit or extend it)."""
    from zoo.bench.common import default_output

    return default_output("scaling") / "sweep.jsonl"


# ============================================================================= the sweep


def run_key(record: dict[str, Any]) -> tuple:
    """What makes two runs the same experiment (a resumed sweep skips runs already recorded)."""
    names = ("precision", "dim", "n_layers", "ffn_dim", "n_heads", "k_ratio", "steps", "batch_size", "seq_len", "corpus", "seed")
    return tuple(record.get(name) for name in names)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not a JSON line ({error})") from None
    return records


def _fit_argv(plan: dict[str, Any], root: Path, val_batches: int, accelerator: str, extra: Sequence[str]) -> list[str]:
    from zoo.paths import configs_dir

    k = plan["k_ratio"]
    return [
        "fit",
        "--config",
        str(configs_dir() / f"{PRECISIONS[plan['precision']]}.yaml"),
        "--model.arch.dim",
        str(plan["dim"]),
        "--model.arch.n_layers",
        str(plan["n_layers"]),
        "--model.arch.n_heads",
        str(plan["n_heads"]),
        "--model.arch.n_kv_heads",
        str(plan["n_heads"]),
        "--model.arch.ffn_dim",
        str(plan["ffn_dim"]),
        "--model.arch.max_seq_len",
        str(plan["seq_len"]),
        # K = D keeps everything: the same function as no top-K, without paying for the sort.
        "--model.arch.sparsity",
        "topk" if k < 1.0 else "none",
        "--model.arch.k_ratio",
        str(k),
        "--model.warmup_steps",
        str(max(1, plan["steps"] // 10)),
        "--model.sample_prompt",
        "",
        "--model.sparsity_log_every",
        "0",
        "--data.corpus",
        plan["corpus"],
        "--data.batch_size",
        str(plan["batch_size"]),
        "--seed_everything",
        str(plan["seed"]),
        "--trainer.max_steps",
        str(plan["steps"]),
        "--trainer.val_check_interval",
        str(plan["steps"]),
        "--trainer.limit_val_batches",
        str(val_batches),
        "--trainer.num_sanity_val_steps",
        "0",
        "--trainer.accelerator",
        accelerator,
        "--trainer.devices",
        "1",
        "--trainer.logger",
        "false",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        "--trainer.default_root_dir",
        str(root),
        *extra,
    ]


def train_one(
    plan: dict[str, Any],
    *,
    val_batches: int = 8,
    account_windows: int = 8,
    accelerator: str = "auto",
    extra_args: Sequence[str] = (),
    work_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Trains one sweep point with ``zoo fit`` and measures it; returns its record."""
    import torch

    from zoo.bench.common import device_name
    from zoo.fit_cli import run_lightning_cli
    from zoo.models.accounting import account

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="zoo-scaling-") as tmp:
        root = Path(work_dir) / plan["run"] if work_dir else Path(tmp)
        # LightningCLI warns when the process's own argv (here `zoo scaling run ...`) sits beside
        # the args it is handed; the sweep's arguments are the only ones meant for it.
        argv, sys.argv = sys.argv, sys.argv[:1]
        try:
            cli = run_lightning_cli(_fit_argv(plan, root, val_batches, accelerator, extra_args))
        finally:
            sys.argv = argv
        metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if v.numel() == 1}
        if "val/loss" not in metrics:
            raise RuntimeError(f"scaling run {plan['run']}: no val/loss was logged; is the validation split empty?")
        model = cli.model.model.eval()
        device = next(model.parameters()).device
        windows = cli.datamodule.dataset("validation")
        count = min(account_windows, len(windows))
        # N_a and S are measured on held-out tokens (Q-Sparse §3.6), never taken from k_ratio.
        inputs = torch.stack([windows[i] for i in range(count)])[:, :-1].to(device)
        stats = account(model, batches=list(inputs.split(max(1, plan["batch_size"]))))
        hardware = device_name(device)
    N, N_a = stats.non_embedding_params, stats.activated_params
    return {
        **plan,
        "N": N,
        "N_a": N_a,
        "S": 1.0 - N_a / N,
        "S_nominal": 1.0 - plan["k_ratio"],
        "total_params": stats.total_params,
        "weight_bytes_per_token": stats.weight_bytes_per_token,
        "input_sparsity": stats.input_sparsity,
        "val_loss": metrics["val/loss"],
        "val_bpb": metrics.get("val/bpb"),
        "tokens": plan["steps"] * plan["batch_size"] * plan["seq_len"],
        "seconds": round(time.perf_counter() - started, 2),
        "hardware": hardware,
    }


def sweep_plan(
    dims: Iterable[int] = DEFAULT_DIMS,
    k_ratios: Iterable[float] = DEFAULT_K_RATIOS,
    precisions: Iterable[str] = tuple(PRECISIONS),
    *,
    n_layers: int = 2,
    head_dim: int = 16,
    ffn_mult: int = 3,
    steps: int = 300,
    batch_size: int = 16,
    seq_len: int = 128,
    corpus: str = "shakespeare",
    seed: int = 1337,
) -> list[dict[str, Any]]:
    """The runs of a sweep, smallest models first so a cut-short sweep still spans the sparsities."""
    plans = []
    for dim in sorted(dims):
        if dim % head_dim or head_dim % 2:
            raise ValueError(f"scaling sweep: dim {dim} must be a multiple of head_dim {head_dim} (an even number)")
        for precision in precisions:
            if precision not in PRECISIONS:
                raise ValueError(f"scaling sweep: precision must be one of {tuple(PRECISIONS)}, got {precision!r}")
            for k in k_ratios:
                if not 0.0 < k <= 1.0:
                    raise ValueError(f"scaling sweep: k_ratio must be in (0, 1], got {k}")
                plans.append(
                    {
                        "run": f"{precision}-d{dim}-k{k:g}",
                        "precision": precision,
                        "recipe": f"configs/{PRECISIONS[precision]}.yaml",
                        "dim": dim,
                        "n_layers": n_layers,
                        "n_heads": dim // head_dim,
                        "ffn_dim": ffn_mult * dim,
                        "k_ratio": float(k),
                        "steps": steps,
                        "batch_size": batch_size,
                        "seq_len": seq_len,
                        "corpus": corpus,
                        "seed": seed,
                    }
                )
    return plans


def run_sweep(
    out: str | Path | None = None,
    *,
    dims: Iterable[int] = DEFAULT_DIMS,
    k_ratios: Iterable[float] = DEFAULT_K_RATIOS,
    precisions: Iterable[str] = tuple(PRECISIONS),
    n_layers: int = 2,
    head_dim: int = 16,
    ffn_mult: int = 3,
    steps: int = 300,
    batch_size: int = 16,
    seq_len: int = 128,
    val_batches: int = 8,
    account_windows: int = 8,
    corpus: str = "shakespeare",
    seed: int = 1337,
    accelerator: str = "auto",
    extra_args: Sequence[str] = (),
    resume: bool = True,
    work_dir: str | Path | None = None,
    threads: int | None = 1,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Trains every point of the sweep and appends one JSON line per run to ``out``.

    Defaults (4 sizes × 4 sparsities × 2 precisions = 32 runs of 300 steps × 16 × 128 tokens,
    2 layers, dims 48–160) take about 20–30 minutes on 2 CPU cores. ``resume`` skips runs already
    in ``out`` with the same settings. ``threads`` pins torch's CPU threads during the sweep
    (``None``: leave them). Returns the records of this sweep (old and new).
    """
    import torch
    from tqdm.auto import tqdm

    import zoo.lit  # noqa: F401  (Lightning sets its loggers' levels on import: import it before lowering them)

    out = Path(out) if out is not None else default_sweep_path()
    out.parent.mkdir(parents=True, exist_ok=True)
    plans = sweep_plan(
        dims,
        k_ratios,
        precisions,
        n_layers=n_layers,
        head_dim=head_dim,
        ffn_mult=ffn_mult,
        steps=steps,
        batch_size=batch_size,
        seq_len=seq_len,
        corpus=corpus,
        seed=seed,
    )
    done = {run_key(r): r for r in _read_jsonl(out)} if resume else {}
    if not resume and out.exists():
        out.unlink()
    records = []
    # Lightning's per-run banners (GPU available, tips) would bury the progress bar.
    quiet = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric", "lightning")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.WARNING)
    # Models this small gain little from a second thread, and on a shared 2-core machine OpenMP
    # threads that spin-wait for a busy core made a training step up to 100x slower.
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        bar = tqdm(plans, desc="scaling sweep", unit="run", disable=not progress)
        for plan in bar:
            if run_key(plan) in done:
                records.append(done[run_key(plan)])
                continue
            bar.set_postfix_str(plan["run"])
            record = train_one(
                plan,
                val_batches=val_batches,
                account_windows=account_windows,
                accelerator=accelerator,
                extra_args=extra_args,
                work_dir=work_dir,
            )
            with out.open("a") as handle:
                handle.write(json.dumps(record, sort_keys=True) + "\n")
            records.append(record)
        bar.close()
    finally:
        torch.set_num_threads(previous_threads)
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)
    return records


# ============================================================================= the law and its fit


@dataclass(frozen=True)
class ScalingLaw:
    """``L(N, S) = E + (B + C·exp(β/(1−S))) / N^α``."""

    E: float
    B: float
    C: float
    alpha: float
    beta: float

    def A(self, S):
        S = np.asarray(S, dtype=float)
        return self.B + self.C * np.exp(np.minimum(self.beta / (1.0 - S), 700.0))

    def loss(self, N, S):
        return self.E + self.A(S) / np.asarray(N, dtype=float) ** self.alpha

    def loss_activated(self, N_a, S):
        """The same law in activated parameters: ``E + A(S)·((1 − S)/N_a)^α``."""
        S = np.asarray(S, dtype=float)
        return self.E + self.A(S) * ((1.0 - S) / np.asarray(N_a, dtype=float)) ** self.alpha

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def huber(r, delta: float = HUBER_DELTA):
    """Huber's loss: ``r²/2`` for ``|r| ≤ δ``, ``δ(|r| − δ/2)`` above (value and slope continuous)."""
    a = np.abs(np.asarray(r, dtype=float))
    return np.where(a <= delta, 0.5 * a * a, delta * (a - 0.5 * delta))


def huber_grad(r, delta: float = HUBER_DELTA):
    return np.clip(np.asarray(r, dtype=float), -delta, delta)


# θ = (log E, log B, log C, α, β): logs keep E, B, C positive and let L-BFGS move across scales.
# β ≥ 0 keeps A(S) non-decreasing in S, as in the paper (a sparser model of the same size is no
# better); with β < 0 S* would run to the edge of any range searched.
_BOUNDS = [(-12.0, 5.0), (-30.0, 30.0), (-30.0, 30.0), (1e-3, 3.0), (0.0, 10.0)]


def _law(theta: np.ndarray) -> ScalingLaw:
    e, b, c, alpha, beta = (float(t) for t in theta)
    return ScalingLaw(math.exp(e), math.exp(b), math.exp(c), alpha, beta)


def _objective(theta: np.ndarray, N: np.ndarray, S: np.ndarray, L: np.ndarray, delta: float) -> tuple[float, np.ndarray]:
    """Σ Huber(log L̂ − log L) / δ² and its gradient in θ."""
    e, b, c, alpha, beta = theta
    E, B, C = np.exp(e), np.exp(b), np.exp(c)
    lnN = np.log(N)
    inv = np.exp(-alpha * lnN)  # N^-α
    growth = np.exp(np.minimum(beta / (1.0 - S), 700.0))
    A = B + C * growth
    pred = E + A * inv
    r = np.log(pred) - np.log(L)
    # Divided by δ²: the same minimiser, but values of order one, so L-BFGS's stopping tests
    # (relative decrease, gradient size) mean the same whatever δ is.
    scale = 1.0 / (delta * delta)
    g = scale * huber_grad(r, delta) / pred
    grad = np.array(
        [
            np.sum(g * E),
            np.sum(g * B * inv),
            np.sum(g * C * growth * inv),
            np.sum(g * -A * lnN * inv),
            np.sum(g * C * growth / (1.0 - S) * inv),
        ]
    )
    return float(scale * np.sum(huber(r, delta))), grad


def initial_grid(N: np.ndarray, S: np.ndarray, L: np.ndarray) -> list[np.ndarray]:
    """Starts spread over E, α, β and the B:C split, each scaled so the law passes near the data."""
    starts = []
    n_mid, s_mid, l_min, l_mid = float(np.median(N)), float(np.median(S)), float(np.min(L)), float(np.median(L))
    for e_frac in (0.3, 0.6, 0.9):
        E = e_frac * l_min
        for alpha in (0.1, 0.3, 0.6):
            A_mid = max(l_mid - E, 1e-6) * n_mid**alpha  # the A that puts the law through the median point
            for beta in (0.05, 0.5, 1.5):
                growth = math.exp(beta / (1.0 - s_mid))
                for b_share in (0.1, 0.5, 0.9):
                    B, C = b_share * A_mid, (1.0 - b_share) * A_mid / growth
                    starts.append(np.array([math.log(E), math.log(B), math.log(C), alpha, beta]))
    return [np.clip(s, [lo for lo, _ in _BOUNDS], [hi for _, hi in _BOUNDS]) for s in starts]


def _single_threaded_blas():
    """OpenBLAS threads spin-wait inside every tiny L-BFGS-B step: on a busy 2-core machine one
    fit took 100x longer with 2 threads than with 1. threadpoolctl pins them when installed."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _check_points(N, S, L) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    N, S, L = (np.asarray(x, dtype=float).ravel() for x in (N, S, L))
    if not (len(N) == len(S) == len(L)):
        raise ValueError(f"scaling fit: N, S and L must have the same length, got {len(N)}, {len(S)}, {len(L)}")
    if len(N) < 5:
        raise ValueError(f"scaling fit: the law has 5 constants and needs at least 5 points, got {len(N)}")
    if np.any(N <= 0) or np.any(L <= 0) or np.any((S < 0) | (S >= 1)):
        raise ValueError("scaling fit: needs N > 0, L > 0 and 0 <= S < 1 for every point")
    return N, S, L


def fit_scaling_law(
    points: Sequence[dict[str, Any]] | None = None,
    *,
    N=None,
    S=None,
    L=None,
    delta: float = HUBER_DELTA,
    starts: Sequence[np.ndarray] | None = None,
    sparsity_key: str = "S",
    loss_key: str = "val_loss",
) -> dict[str, Any]:
    """Fits ``L(N, S)`` to ``points`` (records with ``N``, ``S`` and ``val_loss``) or to arrays.

    L-BFGS-B (scipy) from every start (default :func:`initial_grid`), keeping the lowest Huber
    objective. Returns ``{"law": ScalingLaw, "objective", "starts", "converged_starts",
    "rmse_log", "n_points"}``.
    """
    from scipy.optimize import minimize

    if points is not None:
        N = [p["N"] for p in points]
        S = [p[sparsity_key] for p in points]
        L = [p[loss_key] for p in points]
    N, S, L = _check_points(N, S, L)
    starts = list(starts) if starts is not None else initial_grid(N, S, L)
    best, converged = None, 0
    with _single_threaded_blas():
        for start in starts:
            result = minimize(
                _objective,
                start,
                args=(N, S, L, delta),
                jac=True,
                method="L-BFGS-B",
                bounds=_BOUNDS,
                options={"maxiter": 1000, "ftol": 1e-12, "gtol": 1e-8},
            )
            if not np.all(np.isfinite(result.x)) or not math.isfinite(result.fun):
                continue
            converged += bool(result.success)
            if best is None or result.fun < best.fun:
                best = result
    if best is None:
        raise RuntimeError("scaling fit: L-BFGS failed from every start")
    law = _law(best.x)
    residuals = np.log(law.loss(N, S)) - np.log(L)
    return {
        "law": law,
        "theta": best.x,
        "objective": float(best.fun) * delta * delta,  # the Huber sum itself, without the 1/δ² scale
        "starts": len(starts),
        "converged_starts": converged,
        "rmse_log": float(np.sqrt(np.mean(residuals**2))),
        "n_points": int(len(N)),
    }


def optimal_sparsity(law: ScalingLaw, *, s_max: float = 0.99, grid: int = 2001) -> float:
    """``S* = argmin_S A(S)·(1 − S)^α`` on ``[0, s_max]``: the best sparsity at fixed activated size.

    A dense grid finds the basin (the function can be flat or monotone), bounded Brent refines it.
    """
    from scipy.optimize import minimize_scalar

    def cost(s):
        # In logs: A(S) and (1 − S)^α span many orders of magnitude near S → 1.
        s = np.asarray(s, dtype=float)
        return np.log(law.A(s)) + law.alpha * np.log1p(-s)

    xs = np.linspace(0.0, s_max, grid)
    i = int(np.argmin(cost(xs)))
    lo, hi = xs[max(i - 1, 0)], xs[min(i + 1, grid - 1)]
    if hi <= lo:
        return float(xs[i])
    refined = minimize_scalar(lambda s: float(cost(s)), bounds=(lo, hi), method="bounded", options={"xatol": 1e-10})
    return float(refined.x) if refined.fun <= cost(xs[i]) else float(xs[i])


def bootstrap(
    points: Sequence[dict[str, Any]],
    *,
    n: int = 200,
    seed: int = 0,
    percentiles: tuple[float, float] = (5.0, 95.0),
    sparsity_key: str = "S",
    loss_key: str = "val_loss",
    delta: float = HUBER_DELTA,
    s_max: float = 0.99,
    full_fit: dict[str, Any] | None = None,
    extra_starts: int = 3,
) -> dict[str, Any]:
    """Resamples the runs with replacement, refits, and reports percentile intervals of S* and the constants.

    Each refit starts from the full-data fit plus ``extra_starts`` points of the grid (a full
    grid per resample would cost about 20× more for the same answer on all but degenerate resamples).
    """
    points = list(points)
    rng = np.random.default_rng(seed)
    full_fit = full_fit or fit_scaling_law(points, sparsity_key=sparsity_key, loss_key=loss_key, delta=delta)
    N = np.array([p["N"] for p in points], dtype=float)
    S = np.array([p[sparsity_key] for p in points], dtype=float)
    L = np.array([p[loss_key] for p in points], dtype=float)
    grid = initial_grid(N, S, L)
    picks = rng.choice(len(grid), size=min(extra_starts, len(grid)), replace=False)
    starts = [full_fit["theta"]] + [grid[i] for i in picks]
    s_stars, constants, failed = [], [], 0
    for _ in range(n):
        idx = rng.integers(0, len(points), size=len(points))
        if len(np.unique(N[idx])) < 2:
            failed += 1  # one model size says nothing about α
            continue
        try:
            fit = fit_scaling_law(N=N[idx], S=S[idx], L=L[idx], delta=delta, starts=starts)
        except (RuntimeError, ValueError):
            failed += 1
            continue
        s_stars.append(optimal_sparsity(fit["law"], s_max=s_max))
        constants.append(fit["law"].to_dict())
    if not s_stars:
        raise RuntimeError("scaling bootstrap: every resample failed to fit")
    lo, hi = percentiles
    summary = {
        "n": n,
        "n_failed": failed,
        "seed": seed,
        "percentiles": [lo, hi],
        "S_star": [float(np.percentile(s_stars, lo)), float(np.percentile(s_stars, hi))],
        "S_star_median": float(np.median(s_stars)),
    }
    for key in ("E", "B", "C", "alpha", "beta"):
        values = [c[key] for c in constants]
        summary[key] = [float(np.percentile(values, lo)), float(np.percentile(values, hi))]
    return summary


def fit_sweep(
    records: Sequence[dict[str, Any]], *, n_bootstrap: int = 200, seed: int = 0, sparsity_key: str = "S", s_max: float = 0.99
) -> dict[str, Any]:
    """Fits every precision of a sweep separately; the content of ``fit.json``."""
    by_precision: dict[str, list[dict]] = {}
    for record in records:
        by_precision.setdefault(record["precision"], []).append(record)
    results: dict[str, Any] = {}
    for precision, points in sorted(by_precision.items()):
        fit = fit_scaling_law(points, sparsity_key=sparsity_key)
        law = fit["law"]
        s_star = optimal_sparsity(law, s_max=s_max)
        entry = {
            "n_points": fit["n_points"],
            "model_sizes_N": sorted({int(p["N"]) for p in points}),
            "sparsity_range": [min(p[sparsity_key] for p in points), max(p[sparsity_key] for p in points)],
            "constants": law.to_dict(),
            "huber_objective": fit["objective"],
            "rmse_log_loss": fit["rmse_log"],
            "starts": fit["starts"],
            "converged_starts": fit["converged_starts"],
            "S_star": s_star,
            "S_star_at_bound": bool(s_star <= 1e-6 or s_star >= s_max - 1e-6),
            # Outside the sparsities the runs measured, S* is the fitted formula's extrapolation.
            "S_star_extrapolated": bool(not min(p[sparsity_key] for p in points) <= s_star <= max(p[sparsity_key] for p in points)),
            # Q-Sparse reports S* as "model size / activated size" too: N / N_a = 1 / (1 − S*).
            "total_over_activated": 1.0 / (1.0 - s_star),
        }
        if n_bootstrap > 0:
            entry["bootstrap"] = bootstrap(points, n=n_bootstrap, seed=seed, sparsity_key=sparsity_key, s_max=s_max, full_fit=fit)
        results[precision] = entry
    return {
        "law": "L(N,S) = E + (B + C*exp(beta/(1-S))) / N^alpha",
        "method": f"Huber loss (delta={HUBER_DELTA:g}) on log L residuals, L-BFGS-B from a grid of starts, best kept (Q-Sparse, arXiv 2407.10969)",
        "N": "non-embedding parameters (count)",
        "S": "measured: 1 - N_a/N, N_a activated parameters measured on validation data"
        if sparsity_key == "S"
        else f"{sparsity_key} (nominal, from k_ratio)",
        "S_star": f"argmin over S in [0, {s_max:g}] of A(S)*(1-S)^alpha",
        "note": "constants fitted on this project's own sweep; they are not the paper's",
        "precisions": results,
    }


def plot_fit(records: Sequence[dict[str, Any]], fit: dict[str, Any], path: str | Path, *, sparsity_key: str = "S") -> Path:
    """Top row: loss vs N with the fitted curves per sparsity level; bottom row: A(S)(1−S)^α and S*."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    precisions = list(fit["precisions"])
    fig, axes = plt.subplots(2, len(precisions), figsize=(6 * len(precisions), 8.5), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for col, precision in enumerate(precisions):
        entry = fit["precisions"][precision]
        law = ScalingLaw(**entry["constants"])
        points = [r for r in records if r["precision"] == precision]
        ax = axes[0][col]
        levels = sorted({r["k_ratio"] for r in points}, reverse=True)
        n_grid = np.geomspace(min(r["N"] for r in points) / 1.5, max(r["N"] for r in points) * 1.5, 100)
        for i, k in enumerate(levels):
            group = [r for r in points if r["k_ratio"] == k]
            s_mean = float(np.mean([r[sparsity_key] for r in group]))
            color = cmap(i / max(1, len(levels) - 1))
            ax.scatter(
                [r["N"] for r in group], [r["val_loss"] for r in group], color=color, zorder=3, label=f"top-K {k:g} (S≈{s_mean:.2f})"
            )
            ax.plot(n_grid, law.loss(n_grid, s_mean), color=color, alpha=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("non-embedding parameters N")
        ax.set_ylabel("validation loss (nats/token)")
        c = entry["constants"]
        ax.set_title(f"{precision}: E={c['E']:.3g} B={c['B']:.3g} C={c['C']:.3g} α={c['alpha']:.3g} β={c['beta']:.3g}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)

        ax = axes[1][col]
        s = np.linspace(0.0, 0.95, 400)
        cost = law.A(s) * (1.0 - s) ** law.alpha
        ax.plot(s, cost / cost.min(), color="tab:blue")
        ax.set_yscale("log")  # near S → 1 the exponential term runs over many decades
        ax.axvline(entry["S_star"], color="tab:red", label=f"S* = {100 * entry['S_star']:.1f}%")
        ax.scatter(
            sorted({r[sparsity_key] for r in points}),
            np.ones(len({r[sparsity_key] for r in points})),
            marker="|",
            color="k",
            s=200,
            label="measured S of the runs",
        )
        if "bootstrap" in entry:
            lo, hi = entry["bootstrap"]["S_star"]
            p_lo, p_hi = entry["bootstrap"]["percentiles"]
            ax.axvspan(lo, hi, color="tab:red", alpha=0.15, label=f"bootstrap {p_lo:g}–{p_hi:g}%: {100 * lo:.1f}–{100 * hi:.1f}%")
        ax.set_xlabel("sparsity S")
        ax.set_ylabel("A(S)(1−S)^α, relative to its minimum")
        ax.set_title(f"{precision}: loss at fixed activated parameters", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Q-Sparse inference-optimal scaling law fitted on our sweep (not the paper's constants)", fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def fit_and_write(
    sweep: str | Path | None = None, out_dir: str | Path | None = None, *, n_bootstrap: int = 200, seed: int = 0, sparsity_key: str = "S"
) -> dict[str, Any]:
    """Reads the sweep's JSON lines, fits, writes ``fit.json`` and ``fit.png``; returns the fit."""
    sweep = Path(sweep) if sweep is not None else default_sweep_path()
    out_dir = Path(out_dir) if out_dir is not None else sweep.parent
    records = _read_jsonl(sweep)
    if not records:
        raise FileNotFoundError(f"no sweep records in {sweep}; run `zoo scaling run` first")
    fit = fit_sweep(records, n_bootstrap=n_bootstrap, seed=seed, sparsity_key=sparsity_key)
    root = _leaderboard_dir().parent
    # Relative to the checkout when inside it, so a committed fit.json names no machine's paths.
    fit["sweep"] = str(sweep.resolve().relative_to(root)) if sweep.resolve().is_relative_to(root) else str(sweep)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "fit.json").write_text(json.dumps(fit, indent=2) + "\n")
    plot_fit(records, fit, out_dir / "fit.png", sparsity_key=sparsity_key)
    return fit


# ============================================================================= command line


def _cmd_run(args: argparse.Namespace) -> int:
    extra = [part for arg in args.fit_arg for part in arg.split(maxsplit=1)]
    records = run_sweep(
        args.out,
        dims=args.dims,
        k_ratios=args.k_ratios,
        precisions=args.precisions,
        n_layers=args.n_layers,
        head_dim=args.head_dim,
        ffn_mult=args.ffn_mult,
        steps=args.steps,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        val_batches=args.val_batches,
        corpus=args.corpus,
        seed=args.seed,
        accelerator=args.accelerator,
        extra_args=extra,
        resume=not args.no_resume,
        work_dir=args.keep_runs,
        threads=args.threads or None,
    )
    print(f"{len(records)} runs in {args.out or default_sweep_path()}")
    return 0


def _cmd_fit(args: argparse.Namespace) -> int:
    fit = fit_and_write(
        args.sweep,
        args.out_dir,
        n_bootstrap=args.bootstrap,
        seed=args.seed,
        sparsity_key="S" if args.sparsity == "measured" else "S_nominal",
    )
    for precision, entry in fit["precisions"].items():
        c = entry["constants"]
        interval = entry.get("bootstrap", {}).get("S_star")
        ci = f" (bootstrap 5–95%: {100 * interval[0]:.1f}–{100 * interval[1]:.1f}%)" if interval else ""
        print(
            f"{precision}: {entry['n_points']} runs; E={c['E']:.4g} B={c['B']:.4g} C={c['C']:.4g} alpha={c['alpha']:.4g} "
            f"beta={c['beta']:.4g}; S* = {100 * entry['S_star']:.1f}%{ci}, N/N_a = {entry['total_over_activated']:.2f}"
            + ("  [S* at the edge of the searched range]" if entry["S_star_at_bound"] else "")
            + ("  [S* outside the measured sparsities: extrapolated]" if entry["S_star_extrapolated"] else "")
        )
    out_dir = Path(args.out_dir) if args.out_dir else (Path(args.sweep) if args.sweep else default_sweep_path()).parent
    print(f"wrote {out_dir / 'fit.json'} and {out_dir / 'fit.png'}")
    return 0


def add_scaling_parser(subparsers) -> argparse.ArgumentParser:
    """Adds ``scaling run`` and ``scaling fit`` to the ``zoo`` command's subparsers."""
    parser = subparsers.add_parser("scaling", help="Q-Sparse inference-optimal scaling law: train a sweep, fit the law")
    sub = parser.add_subparsers(dest="scaling_command", metavar="{run,fit}")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])

    run = sub.add_parser(
        "run",
        help="train the sweep (sizes x sparsities x precisions); one JSON line per run",
        description=run_sweep.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON-lines file (default: ./scaling/sweep.jsonl; the committed sweep is leaderboard/scaling/sweep.jsonl)",
    )
    run.add_argument("--dims", type=int, nargs="+", default=list(DEFAULT_DIMS), help="model widths")
    run.add_argument("--k-ratios", type=float, nargs="+", default=list(DEFAULT_K_RATIOS), help="top-K kept fractions (1.0 = dense)")
    run.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=list(PRECISIONS))
    run.add_argument("--n-layers", type=int, default=2)
    run.add_argument("--head-dim", type=int, default=16)
    run.add_argument("--ffn-mult", type=int, default=3, help="ffn_dim = ffn_mult * dim")
    run.add_argument("--steps", type=int, default=300)
    run.add_argument("--batch-size", type=int, default=16)
    run.add_argument("--seq-len", type=int, default=128)
    run.add_argument("--val-batches", type=int, default=8, help="validation batches for the final loss")
    run.add_argument("--corpus", default="shakespeare")
    run.add_argument("--seed", type=int, default=1337)
    run.add_argument("--accelerator", default="auto", help="Lightning accelerator: auto, cpu, gpu")
    run.add_argument("--threads", type=int, default=1, help="torch CPU threads during the sweep (0: leave as is)")
    run.add_argument(
        "--fit-arg",
        action="append",
        default=[],
        metavar="'--KEY VALUE'",
        help="extra zoo fit override, e.g. --fit-arg '--trainer.precision bf16-mixed' (repeatable)",
    )
    run.add_argument("--no-resume", action="store_true", help="start the file afresh instead of skipping recorded runs")
    run.add_argument("--keep-runs", type=Path, default=None, help="keep each run's checkpoints and release under this folder")
    run.set_defaults(func=_cmd_run)

    fit = sub.add_parser("fit", help="fit L(N,S) per precision; write fit.json and fit.png")
    fit.add_argument(
        "--sweep",
        type=Path,
        default=None,
        help="JSON-lines file (default: ./scaling/sweep.jsonl; the committed sweep is leaderboard/scaling/sweep.jsonl)",
    )
    fit.add_argument("--out-dir", type=Path, default=None, help="where fit.json and fit.png go (default: beside the sweep)")
    fit.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for the S* interval (0: none)")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument(
        "--sparsity", choices=("measured", "nominal"), default="measured", help="S from measured activated parameters, or 1 - k_ratio"
    )
    fit.set_defaults(func=_cmd_fit)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m zoo.scaling run|fit ...`` (the same commands as ``zoo scaling``)."""
    parser = argparse.ArgumentParser(prog="python -m zoo.scaling")
    add_scaling_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["scaling", *(argv if argv is not None else sys.argv[1:])])
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
