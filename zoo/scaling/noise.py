"""Seed noise in a Q-Sparse scaling sweep (arXiv 2407.10969, §4, measured on our runs): the pooled
spread of log L across seed replicates of one setting, whether the fitted law misses the points by
more than that noise (the textbook lack-of-fit F test), the parametric bootstrap of S* under it,
and the plain verdict on whether the sweep determines S*.

A *point* is one setting, (precision, N, k_ratio); its *runs* are its seeds. The fit itself
(:func:`zoo.scaling.law.fit_scaling_law`) still sees every run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from zoo.scaling.law import HUBER_DELTA, PERCENTILES_95, ScalingLaw, fit_scaling_law, interval_summary, optimal_sparsity, refit_starts

N_CONSTANTS = 5  # E, B, C, α, β
# S* counts as determined only when its 95 % interval is at most this wide (in sparsity, 0.2 = 20
# points): narrower than the gap between two of the sweep's top-K levels (0.2–0.3), so a
# determined S* tells one level of the sweep from the next.
MAX_INTERVAL_WIDTH = 0.2
# More failed refits than this share and the percentiles describe only the resamples that fitted.
MAX_FAILED_SHARE = 0.1


def point_key(record: dict[str, Any], sparsity_key: str = "S") -> tuple[float, float]:
    """The setting a run belongs to: its size and its top-K ratio (its sparsity where no ratio is recorded)."""
    return float(record["N"]), float(record["k_ratio"] if "k_ratio" in record else record[sparsity_key])


def group_points(records: Sequence[dict[str, Any]], sparsity_key: str = "S") -> dict[tuple[float, float], list[int]]:
    """Point → the indices of its runs in ``records`` (one precision's records)."""
    groups: dict[tuple[float, float], list[int]] = {}
    for i, record in enumerate(records):
        groups.setdefault(point_key(record, sparsity_key), []).append(i)
    return groups


def seed_noise(records: Sequence[dict[str, Any]], *, sparsity_key: str = "S", loss_key: str = "val_loss") -> dict[str, Any]:
    """Pooled standard deviation of log L across seeds at the same point.

    ``σ² = Σ_i Σ_j (y_ij − ȳ_i)² / Σ_i (n_i − 1)`` over the points with n_i ≥ 2 (y = log L): the
    within-point ("pure error") variance, with ``Σ (n_i − 1)`` degrees of freedom. ``sigma`` is
    None when no point has two seeds.
    """
    y = np.log([float(r[loss_key]) for r in records])
    squares, dof, replicated = 0.0, 0, 0
    for indices in group_points(records, sparsity_key).values():
        if len(indices) >= 2:
            values = y[indices]
            squares += float(np.sum((values - values.mean()) ** 2))
            dof += len(indices) - 1
            replicated += 1
    return {
        "sigma": math.sqrt(squares / dof) if dof else None,
        "dof": dof,
        "replicated_points": replicated,
        "points": len(group_points(records, sparsity_key)),
        "runs": len(records),
    }


def lack_of_fit(
    records: Sequence[dict[str, Any]], law: ScalingLaw, noise: dict[str, Any], *, sparsity_key: str = "S", loss_key: str = "val_loss"
) -> dict[str, Any] | None:
    """Do the law's residuals exceed seed noise? The lack-of-fit F test on log L.

    ``F = [Σ_i n_i (ȳ_i − ŷ_i)² / (m − 5)] / σ²`` with m points and σ² the pooled seed variance
    (:func:`seed_noise`): about 1 when the law passes the point means within seed noise, large when
    it misses them. None without replicates or with no more points than constants.
    """
    from scipy.stats import f as f_distribution

    m, sigma = noise["points"], noise["sigma"]
    if not sigma or m <= N_CONSTANTS:
        return None
    y = np.log([float(r[loss_key]) for r in records])
    predicted = np.log(law.loss([r["N"] for r in records], [r[sparsity_key] for r in records]))
    squares = sum(len(i) * float(np.mean(y[i]) - np.mean(predicted[i])) ** 2 for i in group_points(records, sparsity_key).values())
    dof = m - N_CONSTANTS
    mean_square = squares / dof
    F = mean_square / sigma**2
    return {
        "F": F,
        "dof": [dof, noise["dof"]],
        "p_value": float(f_distribution.sf(F, dof, noise["dof"])),
        "mean_square_log_loss": mean_square,
    }


def parametric_bootstrap(
    records: Sequence[dict[str, Any]],
    sigma: float,
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
    """S* interval under seed noise: each resample redraws every run's log loss as its point's
    seed mean plus N(0, σ²), refits on all runs, and takes S*.

    Why parametric and not whole points resampled: the sweep is a designed grid of 4 sizes × 4
    sparsities, and the question is how far seed noise moves S* *on this grid*. Resampling points
    draws other designs instead: a resample missing the sparsest level leaves β (and so S*) almost
    free, and such degenerate designs, not the noise, would set the interval's width. Redrawing
    the runs around their point's mean keeps the design and each point's seed count, so a
    resample's seed mean moves by N(0, σ²/n_i) exactly as a rerun's would; centring on the
    observed means (not on the fitted law) keeps whatever the law misses in every resample.
    The caller passes σ: the pooled seed noise, or the lack-of-fit mean square's root when the law
    misses the points by more than seed noise (:func:`bootstrap_sigma`).
    """
    records = list(records)
    rng = np.random.default_rng(seed)
    full_fit = full_fit or fit_scaling_law(records, sparsity_key=sparsity_key, loss_key=loss_key, delta=delta)
    N = np.array([r["N"] for r in records], dtype=float)
    S = np.array([r[sparsity_key] for r in records], dtype=float)
    L = np.array([r[loss_key] for r in records], dtype=float)
    mean_log = np.empty(len(records))
    for indices in group_points(records, sparsity_key).values():
        mean_log[indices] = np.mean(np.log(L[indices]))
    starts = refit_starts(full_fit, N, S, L, rng, extra_starts)
    s_stars, constants, failed = [], [], 0
    for _ in range(n):
        drawn = np.exp(mean_log + rng.normal(0.0, sigma, size=len(records)))
        try:
            fit = fit_scaling_law(N=N, S=S, L=drawn, delta=delta, starts=starts)
        except (RuntimeError, ValueError):
            failed += 1
            continue
        s_stars.append(optimal_sparsity(fit["law"], s_max=s_max))
        constants.append(fit["law"].to_dict())
    summary = interval_summary(s_stars, constants, n=n, failed=failed, seed=seed, percentiles=percentiles)
    return {
        "method": "parametric: runs redrawn as their point's seed mean of log L plus N(0, sigma^2), refitted",
        "sigma_log_loss": sigma,
        **summary,
    }


def bootstrap_sigma(noise: dict[str, Any], lack: dict[str, Any] | None) -> tuple[float, str]:
    """The σ the parametric bootstrap draws with: the pooled seed noise, raised to the lack-of-fit
    mean square's root when that is larger (a law that misses the points by more than seed noise
    is less certain than seed noise alone says; when it fits, the two estimate the same σ²)."""
    sigma = float(noise["sigma"])
    if lack is not None and lack["mean_square_log_loss"] > sigma**2:
        return math.sqrt(lack["mean_square_log_loss"]), "lack-of-fit mean square (larger than the seed noise)"
    return sigma, "pooled seed noise"


def verdict(
    s_star: float,
    interval: Sequence[float] | None,
    sparsity_range: Sequence[float],
    *,
    at_bound: bool,
    failed_share: float = 0.0,
    max_width: float = MAX_INTERVAL_WIDTH,
) -> tuple[bool, str]:
    """(determined, one sentence): S* is determined when its 95 % interval lies inside the measured
    sparsities, is at most ``max_width`` wide, S* is not at the search bound, and at most
    ``MAX_FAILED_SHARE`` of the refits failed."""
    lo_s, hi_s = sparsity_range
    measured = f"the measured sparsities {100 * lo_s:.0f}–{100 * hi_s:.0f}%"
    head = f"S* = {100 * s_star:.0f}%"
    if interval is None:
        return False, f"{head} is not determined: no interval was computed (bootstrap off)."
    lo, hi = interval
    width = hi - lo
    reasons = []
    if at_bound:
        reasons.append("it sits at the edge of the searched range")
    if not lo_s <= s_star <= hi_s:
        reasons.append(f"it is extrapolated beyond {measured}")
    if lo < lo_s or hi > hi_s:
        reasons.append(f"its 95% interval {100 * lo:.0f}–{100 * hi:.0f}% reaches outside {measured}")
    if width > max_width:
        reasons.append(f"the interval is {100 * width:.0f} points wide, over the {100 * max_width:.0f}-point limit")
    if failed_share > MAX_FAILED_SHARE:
        reasons.append(f"{100 * failed_share:.0f}% of the bootstrap refits failed")
    if reasons:
        return False, f"{head} is not determined by our data: " + "; ".join(reasons) + "."
    return True, (
        f"{head} is determined by our data: its 95% interval {100 * lo:.0f}–{100 * hi:.0f}% lies inside {measured} "
        f"and is {100 * width:.0f} points wide (limit {100 * max_width:.0f})."
    )
