"""The Q-Sparse scaling-law fit: Huber loss, recovery of known constants, the closed-form optimal
sparsity, the bootstrap, the sweep end to end at a minimal size, and the `zoo scaling` glue."""

import argparse
import json
import math

import numpy as np
import pytest

pytest.importorskip("scipy")

from zoo.scaling import (  # noqa: E402
    HUBER_DELTA,
    ScalingLaw,
    add_scaling_parser,
    bootstrap,
    fit_and_write,
    fit_scaling_law,
    huber,
    huber_grad,
    optimal_sparsity,
    run_sweep,
)

TRUE = ScalingLaw(E=1.5, B=2.0, C=0.8, alpha=0.3, beta=0.6)


def closed_form_s_star(law: ScalingLaw) -> float:
    """d/dS [A(S)(1−S)^α] = 0 with u = 1 − S, t = β/u gives e^t (t − α) = αB/C, so
    t = α + W(αB e^{−α} / C) (Lambert W, principal branch) and S* = 1 − β/t."""
    from scipy.special import lambertw

    w = lambertw(law.alpha * law.B * math.exp(-law.alpha) / law.C).real
    return 1.0 - law.beta / (law.alpha + w)


SIZES = np.geomspace(1e4, 1e7, 5)


def synthetic_points(law=TRUE, noise=1e-4, seed=0, sizes=SIZES, sparsities=(0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8)):
    rng = np.random.default_rng(seed)
    return [
        {"N": float(n), "S": s, "val_loss": float(law.loss(n, s)) * math.exp(rng.normal(0.0, noise))} for n in sizes for s in sparsities
    ]


@pytest.mark.parametrize("d", [HUBER_DELTA, 0.05, 1.0])
def test_huber_is_quadratic_below_delta_and_linear_above(d):
    small = np.array([-d, -0.5 * d, 0.0, 0.3 * d, d])
    np.testing.assert_allclose(huber(small, delta=d), 0.5 * small**2, rtol=1e-12)
    large = np.array([-10 * d, -2 * d, 1.5 * d, 5 * d, 20 * d])
    np.testing.assert_allclose(huber(large, delta=d), d * (np.abs(large) - 0.5 * d), rtol=1e-12)
    # Linear above δ: a constant slope δ; quadratic below: slope r.
    assert (huber(3 * d, delta=d) - huber(2 * d, delta=d)) / d == pytest.approx(d, rel=1e-9)
    assert (huber(0.6 * d, delta=d) - huber(0.4 * d, delta=d)) / (0.2 * d) == pytest.approx(0.5 * d, rel=1e-9)
    np.testing.assert_allclose(huber_grad([-5 * d, -0.5 * d, 0.25 * d, 7 * d], delta=d), [-d, -0.5 * d, 0.25 * d, d])
    assert huber(0.01, delta=0.1) == pytest.approx(0.5e-4) and huber(1.0, delta=0.1) == pytest.approx(0.1 * 0.95)


def test_objective_gradient_matches_finite_differences():
    from zoo.scaling import objective

    points = synthetic_points(noise=3e-3)  # residuals on both sides of δ
    N, S, L = (np.array([p[k] for p in points]) for k in ("N", "S", "val_loss"))
    theta = np.array([math.log(1.4), math.log(2.5), math.log(0.6), 0.28, 0.7])
    _, grad = objective(theta, N, S, L, HUBER_DELTA)
    for i in range(5):
        step = np.zeros(5)
        step[i] = 1e-6
        numeric = (objective(theta + step, N, S, L, HUBER_DELTA)[0] - objective(theta - step, N, S, L, HUBER_DELTA)[0]) / 2e-6
        assert grad[i] == pytest.approx(numeric, rel=1e-4, abs=1e-6), i


def test_optimal_sparsity_matches_closed_form():
    for law in (TRUE, ScalingLaw(E=2.0, B=0.5, C=1.0, alpha=0.2, beta=0.1), ScalingLaw(E=1.0, B=5.0, C=0.1, alpha=0.5, beta=1.0)):
        assert optimal_sparsity(law) == pytest.approx(closed_form_s_star(law), abs=1e-6)
    # methods.md: Q-Sparse's rounded published constants give S* ≈ 50 %, not its quoted 45.58 %.
    assert optimal_sparsity(ScalingLaw(E=1.86, B=0.01, C=1.89, alpha=0.10, beta=0.05)) == pytest.approx(0.5024, abs=1e-3)


def test_fit_recovers_known_constants():
    fit = fit_scaling_law(synthetic_points())
    law = fit["law"]
    for key in ("E", "B", "C", "alpha", "beta"):
        assert getattr(law, key) == pytest.approx(getattr(TRUE, key), rel=0.03), key
    assert fit["rmse_log"] < 3e-4
    assert optimal_sparsity(law) == pytest.approx(closed_form_s_star(TRUE), abs=0.01)


def test_fit_keeps_the_best_of_its_starts():
    points = synthetic_points()
    N, S, L = (np.array([p[k] for p in points]) for k in ("N", "S", "val_loss"))
    bad_start = np.array([math.log(0.1), math.log(1e-3), math.log(1e-3), 2.5, 9.0])
    alone = fit_scaling_law(N=N, S=S, L=L, starts=[bad_start])
    with_grid = fit_scaling_law(points)
    assert with_grid["objective"] <= alone["objective"]
    assert with_grid["starts"] >= 27


def test_bootstrap_interval_covers_the_truth():
    points = synthetic_points(noise=2e-3, seed=1, sizes=np.geomspace(1e4, 1e7, 4), sparsities=(0.0, 0.3, 0.5, 0.7))
    summary = bootstrap(points, n=30, seed=0)
    lo, hi = summary["S_star"]
    assert lo <= hi and summary["percentiles"] == [5.0, 95.0]
    assert lo - 0.02 <= closed_form_s_star(TRUE) <= hi + 0.02
    assert summary["n"] == 30 and summary["n_failed"] < 30


def test_fit_needs_enough_points():
    with pytest.raises(ValueError, match="at least 5 points"):
        fit_scaling_law(synthetic_points()[:4])


def test_sweep_end_to_end_writes_json_lines(tmp_path):
    out = tmp_path / "sweep.jsonl"
    kwargs = dict(
        dims=(16, 32),
        k_ratios=(1.0, 0.5),
        precisions=("fp", "b1.58"),
        n_layers=1,
        head_dim=16,
        steps=2,
        batch_size=2,
        seq_len=16,
        val_batches=1,
        account_windows=2,
        progress=False,
    )
    records = run_sweep(out, **kwargs)
    lines = out.read_text().splitlines()
    assert len(records) == len(lines) == 8
    parsed = [json.loads(line) for line in lines]
    for record in parsed:
        assert {"N", "N_a", "S", "precision", "val_loss", "k_ratio", "dim", "input_sparsity", "tokens"} <= set(record)
        assert 0 < record["N_a"] <= record["N"] and 0.0 <= record["S"] < 1.0 and math.isfinite(record["val_loss"])
        assert record["S"] == pytest.approx(1 - record["N_a"] / record["N"])
    by = {(r["precision"], r["dim"], r["k_ratio"]): r for r in parsed}
    assert set(by) == {(p, d, k) for p in ("fp", "b1.58") for d in (16, 32) for k in (1.0, 0.5)}
    for precision in ("fp", "b1.58"):
        for dim in (16, 32):
            # Top-K 50 % zeroes at least half of every site's inputs; the measured S says so.
            assert by[(precision, dim, 0.5)]["S"] > by[(precision, dim, 1.0)]["S"] + 0.2
            assert by[(precision, dim, 0.5)]["input_sparsity"]["attn_in"] >= 0.5
        assert by[(precision, 32, 1.0)]["N"] > by[(precision, 16, 1.0)]["N"]
    # The precisions share their shapes; at most BitNet's sub-norms (dim + ffn_dim per layer) differ.
    assert 0 <= by[("b1.58", 16, 1.0)]["N"] - by[("fp", 16, 1.0)]["N"] <= 16 + 3 * 16
    # A rerun resumes: nothing is trained twice and nothing is appended.
    again = run_sweep(out, **kwargs)
    assert len(again) == 8 and out.read_text().splitlines() == lines


def test_fit_and_cli_write_fit_json_and_png(tmp_path, capsys):
    sweep = tmp_path / "sweep.jsonl"
    other = ScalingLaw(E=1.2, B=1.0, C=0.5, alpha=0.4, beta=0.3)  # S* ≈ 61 %
    with sweep.open("w") as handle:
        for precision, law in (("fp", TRUE), ("b1.58", other)):
            for point in synthetic_points(law, sizes=np.geomspace(1e4, 1e6, 4), sparsities=(0.0, 0.3, 0.5, 0.7)):
                handle.write(json.dumps({**point, "precision": precision, "k_ratio": round(1 - point["S"], 2)}) + "\n")
    fit = fit_and_write(sweep, tmp_path / "direct", n_bootstrap=5)
    assert set(fit["precisions"]) == {"fp", "b1.58"}
    assert fit["precisions"]["b1.58"]["S_star"] == pytest.approx(closed_form_s_star(other), abs=0.02)
    assert "not the paper's" in fit["note"]

    parser = argparse.ArgumentParser(prog="zoo")
    add_scaling_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["scaling", "fit", "--sweep", str(sweep), "--out-dir", str(tmp_path / "cli"), "--bootstrap", "5"])
    assert args.func(args) == 0
    written = json.loads((tmp_path / "cli" / "fit.json").read_text())
    for entry in written["precisions"].values():
        assert {"constants", "S_star", "bootstrap", "total_over_activated"} <= set(entry)
        assert set(entry["constants"]) == {"E", "B", "C", "alpha", "beta"}
        assert entry["bootstrap"]["S_star"][0] <= entry["bootstrap"]["S_star"][1]
    assert (tmp_path / "cli" / "fit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "S* =" in printed and "fp:" in printed and "b1.58:" in printed
    run_args = parser.parse_args(["scaling", "run", "--dims", "16", "32", "--steps", "5"])
    assert run_args.dims == [16, 32] and run_args.steps == 5 and run_args.precisions == ["fp", "b1.58"]
