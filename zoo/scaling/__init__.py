"""The inference-optimal scaling law of Q-Sparse (arXiv 2407.10969, Wang, Ma, Wang, Wei, 2024),
measured on our own runs.

``zoo scaling run`` trains a sweep of model sizes × top-K sparsity levels × two precisions (full
precision, and BitNet b1.58 ternary weights with int8 activations, arXiv 2402.17764) × seeds
through the zoo's own training path (:func:`zoo.train.fit`), and records per run the
non-embedding parameters ``N``, the activated parameters ``N_a`` measured on data (Q-Sparse
§3.6), the measured sparsity ``S = 1 − N_a/N``, whether BitNet's sub-norms were on and the final
validation loss, as JSON lines.

``zoo scaling fit`` fits, for each precision separately, Q-Sparse's law

    L(N, S) = E + A(S) / N^α,        A(S) = B + C · exp(β / (1 − S))

exactly as the paper does: a Huber loss (δ = 1e-3) on the residuals of log L, minimised by
L-BFGS from a grid of initialisations, keeping the best. The optimal sparsity at a fixed number
of *activated* parameters follows from ``L(N_a, S) = E + A(S)·((1 − S)/N_a)^α``:
``S* = argmin_S A(S)·(1 − S)^α`` (a 1-D minimisation), with a 95 % bootstrap interval
(2.5th–97.5th percentile). With seed replicates (:mod:`zoo.scaling.noise`) the pooled seed noise of
log L is estimated, the residuals are tested against it, and the bootstrap redraws every run under
that noise; without them it resamples runs. A verdict says whether the sweep determines S*.

Every constant reported here is fitted on this project's runs. The paper's published constants
(E=1.86, B=0.01, C=1.89, α=0.10, β=0.05) belong to its 300M–7B models and are never used as ours.
"""

from zoo.scaling.cli import add_scaling_parser, main
from zoo.scaling.law import (
    HUBER_DELTA,
    PERCENTILES_95,
    ScalingLaw,
    bootstrap,
    fit_scaling_law,
    huber,
    huber_grad,
    initial_grid,
    objective,
    optimal_sparsity,
)
from zoo.scaling.noise import MAX_INTERVAL_WIDTH, lack_of_fit, parametric_bootstrap, seed_noise, verdict
from zoo.scaling.report import check_sub_norm, fit_and_write, fit_sweep, plot_fit
from zoo.scaling.sweep import (
    DEFAULT_DIMS,
    DEFAULT_K_RATIOS,
    DEFAULT_SEEDS,
    PRECISIONS,
    default_sweep_path,
    run_key,
    run_sweep,
    sweep_plan,
    train_one,
)

__all__ = [
    "DEFAULT_DIMS",
    "DEFAULT_K_RATIOS",
    "DEFAULT_SEEDS",
    "HUBER_DELTA",
    "MAX_INTERVAL_WIDTH",
    "PERCENTILES_95",
    "PRECISIONS",
    "ScalingLaw",
    "add_scaling_parser",
    "bootstrap",
    "check_sub_norm",
    "default_sweep_path",
    "fit_and_write",
    "fit_scaling_law",
    "fit_sweep",
    "huber",
    "huber_grad",
    "initial_grid",
    "lack_of_fit",
    "main",
    "objective",
    "optimal_sparsity",
    "parametric_bootstrap",
    "plot_fit",
    "run_key",
    "run_sweep",
    "seed_noise",
    "sweep_plan",
    "train_one",
    "verdict",
]
