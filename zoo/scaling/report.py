"""``zoo scaling fit``'s outputs: the law fitted per precision on a sweep's records, written as JSON,
and the plot of loss against activated parameters with the fitted curves."""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zoo.scaling.law import HUBER_DELTA, ScalingLaw, bootstrap, fit_scaling_law, optimal_sparsity
from zoo.scaling.noise import (
    MAX_FAILED_SHARE,
    MAX_INTERVAL_WIDTH,
    bootstrap_sigma,
    lack_of_fit,
    parametric_bootstrap,
    seed_noise,
    verdict,
)
from zoo.scaling.sweep import default_sweep_path, leaderboard_dir, read_jsonl

SUB_NORM_LABELS = {True: "on", False: "off", None: "unrecorded (run before the sweep recorded sub_norm)"}


def check_sub_norm(records: Sequence[dict[str, Any]], source: str = "the sweep") -> None:
    """Refuses a precision whose runs mix BitNet sub-norm settings: the two are different models,
    and one law through both would fit neither. Runs without the field count as their own setting
    (the first committed sweep trained b1.58 without sub-norms and did not say so)."""
    for precision in sorted({r["precision"] for r in records}):
        counts = Counter(r.get("sub_norm") for r in records if r["precision"] == precision)
        if len(counts) > 1:
            mix = ", ".join(f"{n} {SUB_NORM_LABELS.get(v, repr(v))}" for v, n in sorted(counts.items(), key=lambda item: str(item[0])))
            raise ValueError(
                f"scaling fit: {source}: the {precision} runs mix BitNet sub-norm settings ({mix}); "
                "fit one setting at a time: move the other runs to another file"
            )


def noise_fields(
    points: Sequence[dict[str, Any]], law: ScalingLaw, rmse: float, sparsity_key: str
) -> tuple[dict[str, Any], dict, dict | None]:
    """fit.json's seed-noise fields for one precision, with the noise and lack-of-fit summaries."""
    noise = seed_noise(points, sparsity_key=sparsity_key)
    lack = lack_of_fit(points, law, noise, sparsity_key=sparsity_key)
    sigma = noise["sigma"]
    return (
        {
            "seed_noise_log_loss": sigma,
            "seed_noise_dof": noise["dof"],
            "seed_replicated_points": noise["replicated_points"],
            # ≈ 1 (a little under: the fit absorbs 5 of the runs' degrees of freedom) when the
            # residuals are seed noise; well above 1 when the law misses the points.
            "rmse_over_seed_noise": rmse / sigma if sigma else None,
            "lack_of_fit": lack,
            "residuals_consistent_with_seed_noise": None if lack is None else bool(lack["p_value"] >= 0.05),
        },
        noise,
        lack,
    )


def fit_sweep(
    records: Sequence[dict[str, Any]],
    *,
    n_bootstrap: int = 200,
    seed: int = 0,
    sparsity_key: str = "S",
    s_max: float = 0.99,
    source: str = "the sweep",
) -> dict[str, Any]:
    """Fits every precision of a sweep separately; the content of ``fit.json``."""
    check_sub_norm(records, source)
    by_precision: dict[str, list[dict]] = {}
    for record in records:
        by_precision.setdefault(record["precision"], []).append(record)
    results: dict[str, Any] = {}
    for precision, points in sorted(by_precision.items()):
        fit = fit_scaling_law(points, sparsity_key=sparsity_key)
        law = fit["law"]
        s_star = optimal_sparsity(law, s_max=s_max)
        sparsity_range = [min(p[sparsity_key] for p in points), max(p[sparsity_key] for p in points)]
        fields, noise, lack = noise_fields(points, law, fit["rmse_log"], sparsity_key)
        entry = {
            "n_runs": fit["n_points"],
            "n_points": noise["points"],
            "seeds": sorted({p["seed"] for p in points if p.get("seed") is not None}),
            "sub_norm": points[0].get("sub_norm"),
            "model_sizes_N": sorted({int(p["N"]) for p in points}),
            "sparsity_range": sparsity_range,
            "constants": law.to_dict(),
            "huber_objective": fit["objective"],
            "rmse_log_loss": fit["rmse_log"],
            **fields,
            "starts": fit["starts"],
            "converged_starts": fit["converged_starts"],
            "S_star": s_star,
            "S_star_at_bound": bool(s_star <= 1e-6 or s_star >= s_max - 1e-6),
            # Outside the sparsities the runs measured, S* is the fitted formula's extrapolation.
            "S_star_extrapolated": bool(not sparsity_range[0] <= s_star <= sparsity_range[1]),
            # Q-Sparse reports S* as "model size / activated size" too: N / N_a = 1 / (1 − S*).
            "total_over_activated": 1.0 / (1.0 - s_star),
        }
        interval, failed_share = None, 0.0
        if n_bootstrap > 0:
            kwargs = dict(n=n_bootstrap, seed=seed, sparsity_key=sparsity_key, s_max=s_max, full_fit=fit)
            if noise["sigma"] is not None:
                sigma, sigma_source = bootstrap_sigma(noise, lack)
                entry["bootstrap"] = {**parametric_bootstrap(points, sigma, **kwargs), "sigma_source": sigma_source}
            else:
                summary = bootstrap(points, **kwargs)
                summary["method"] += " (no seed replicates, so no noise estimate to redraw the runs with)"
                entry["bootstrap"] = summary
            interval = entry["bootstrap"]["S_star"]
            failed_share = entry["bootstrap"]["n_failed"] / entry["bootstrap"]["n"]
        determined, sentence = verdict(s_star, interval, sparsity_range, at_bound=entry["S_star_at_bound"], failed_share=failed_share)
        entry["S_star_determined"] = determined
        entry["S_star_verdict"] = sentence
        results[precision] = entry
    return {
        "law": "L(N,S) = E + (B + C*exp(beta/(1-S))) / N^alpha",
        "method": f"Huber loss (delta={HUBER_DELTA:g}) on log L residuals of every run, L-BFGS-B from a grid of starts, best kept (Q-Sparse, arXiv 2407.10969)",
        "N": "non-embedding parameters (count)",
        "S": "measured: 1 - N_a/N, N_a activated parameters measured on validation data"
        if sparsity_key == "S"
        else f"{sparsity_key} (nominal, from k_ratio)",
        "S_star": f"argmin over S in [0, {s_max:g}] of A(S)*(1-S)^alpha",
        "seed_noise": "pooled standard deviation of log L across seeds of one (N, k_ratio) point, with its degrees of freedom; "
        "lack_of_fit: F = (sum of n_i (mean log L_i - fitted)^2 / (points - 5)) / seed_noise^2, p from the F distribution; residuals_consistent_with_seed_noise: p >= 0.05",
        "S_star_interval": "bootstrap 2.5-97.5 percentiles: with seed replicates, runs redrawn around their point's seed mean "
        "under the seed noise (or the lack-of-fit mean square when larger) and refitted; without, runs resampled",
        "S_star_verdict_rule": f"determined when the 95% interval lies inside the measured sparsity range, is at most {MAX_INTERVAL_WIDTH:g} wide, "
        f"S* is not at the search bound and at most {100 * MAX_FAILED_SHARE:g}% of the refits failed",
        "note": "constants fitted on this project's own sweep; they are not the paper's",
        "precisions": results,
    }


def plot_fit(records: Sequence[dict[str, Any]], fit: dict[str, Any], path: str | Path, *, sparsity_key: str = "S") -> Path:
    """Top row: loss vs N with the fitted curves per sparsity level; bottom row: A(S)(1−S)^α and S*."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    precisions = list(fit["precisions"])
    fig, axes = plt.subplots(2, len(precisions), figsize=(6 * len(precisions), 9.5), squeeze=False)
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
        # The verdict goes on the figure: a reader of fit.png alone must not take an undetermined S* as a finding.
        verdict_text = "\n".join(textwrap.wrap(entry.get("S_star_verdict", ""), 75))
        ax.set_title(f"{precision}: loss at fixed activated parameters\n{verdict_text}", fontsize=8)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    # two lines: one precision's panel is 6 inches wide, too narrow for the title on one line
    fig.suptitle("Q-Sparse inference-optimal scaling law\nfitted on our sweep (not the paper's constants)", fontsize=11)
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
    records = read_jsonl(sweep)
    if not records:
        raise FileNotFoundError(f"no sweep records in {sweep}; run `zoo scaling run` first")
    fit = fit_sweep(records, n_bootstrap=n_bootstrap, seed=seed, sparsity_key=sparsity_key, source=str(sweep))
    root = leaderboard_dir().parent
    # Relative to the checkout when inside it, so a committed fit.json names no machine's paths.
    fit["sweep"] = str(sweep.resolve().relative_to(root)) if sweep.resolve().is_relative_to(root) else str(sweep)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "fit.json").write_text(json.dumps(fit, indent=2) + "\n")
    plot_fit(records, fit, out_dir / "fit.png", sparsity_key=sparsity_key)
    return fit


# ============================================================================= command line
