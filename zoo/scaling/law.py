"""Q-Sparse's scaling law ``L(N, S) = E + A(S)/N^α``, ``A(S) = B + C·exp(β/(1 − S))`` (arXiv
2407.10969, §4): the Huber fit on log L from a grid of starts, the optimal sparsity at fixed activated
parameters, and the bootstrap interval (runs resampled; :mod:`zoo.scaling.noise` has the
parametric bootstrap used when the sweep has seed replicates)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

HUBER_DELTA = 1e-3  # the paper's δ on log-loss residuals
PERCENTILES_95 = (2.5, 97.5)  # a two-sided 95 % percentile interval


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


def law_of(theta: np.ndarray) -> ScalingLaw:
    e, b, c, alpha, beta = (float(t) for t in theta)
    return ScalingLaw(math.exp(e), math.exp(b), math.exp(c), alpha, beta)


def objective(theta: np.ndarray, N: np.ndarray, S: np.ndarray, L: np.ndarray, delta: float) -> tuple[float, np.ndarray]:
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


def single_threaded_blas():
    """OpenBLAS threads spin-wait inside every tiny L-BFGS-B step: on a busy 2-core machine one
    fit took 100x longer with 2 threads than with 1. threadpoolctl pins them when installed."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def check_points(N, S, L) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    N, S, L = check_points(N, S, L)
    starts = list(starts) if starts is not None else initial_grid(N, S, L)
    best, converged = None, 0
    with single_threaded_blas():
        for start in starts:
            result = minimize(
                objective,
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
    law = law_of(best.x)
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


def refit_starts(full_fit: dict[str, Any], N: np.ndarray, S: np.ndarray, L: np.ndarray, rng, extra_starts: int) -> list[np.ndarray]:
    """A resample's starts: the full-data fit plus ``extra_starts`` points of the grid (a full grid
    per resample would cost about 20× more for the same answer on all but degenerate resamples)."""
    grid = initial_grid(N, S, L)
    picks = rng.choice(len(grid), size=min(extra_starts, len(grid)), replace=False)
    return [full_fit["theta"]] + [grid[i] for i in picks]


def interval_summary(
    s_stars: Sequence[float], constants: Sequence[dict[str, float]], *, n: int, failed: int, seed: int, percentiles: tuple[float, float]
) -> dict[str, Any]:
    """Percentile intervals of S* and of the constants over a bootstrap's successful refits."""
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


def bootstrap(
    points: Sequence[dict[str, Any]],
    *,
    n: int = 200,
    seed: int = 0,
    percentiles: tuple[float, float] = PERCENTILES_95,
    sparsity_key: str = "S",
    loss_key: str = "val_loss",
    delta: float = HUBER_DELTA,
    s_max: float = 0.99,
    full_fit: dict[str, Any] | None = None,
    extra_starts: int = 3,
) -> dict[str, Any]:
    """Resamples the runs with replacement, refits, and reports percentile intervals of S* and the constants.

    The fallback for a sweep without seed replicates: with them, :func:`zoo.scaling.noise.parametric_bootstrap`
    (resampling runs would split a point's seeds and count each seed as a separate setting).
    """
    points = list(points)
    rng = np.random.default_rng(seed)
    full_fit = full_fit or fit_scaling_law(points, sparsity_key=sparsity_key, loss_key=loss_key, delta=delta)
    N = np.array([p["N"] for p in points], dtype=float)
    S = np.array([p[sparsity_key] for p in points], dtype=float)
    L = np.array([p[loss_key] for p in points], dtype=float)
    starts = refit_starts(full_fit, N, S, L, rng, extra_starts)
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
    summary = interval_summary(s_stars, constants, n=n, failed=failed, seed=seed, percentiles=percentiles)
    return {"method": "runs resampled with replacement", **summary}
