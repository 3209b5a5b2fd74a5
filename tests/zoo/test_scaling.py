"""The Q-Sparse scaling-law fit: Huber loss, recovery of known constants, the closed-form optimal
sparsity, the bootstrap, seeds in the sweep plan, the seed-noise estimate and the S* verdict, the
sub-norm guard, the sweep end to end at a minimal size, and the `zoo scaling` glue."""

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
    check_sub_norm,
    fit_and_write,
    fit_scaling_law,
    fit_sweep,
    huber,
    huber_grad,
    optimal_sparsity,
    run_sweep,
    seed_noise,
    sweep_plan,
    verdict,
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
    assert lo <= hi and summary["percentiles"] == [2.5, 97.5]
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
        seeds=(1337,),
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
        assert record["seed"] == 1337 and record["run"].endswith("-s1337")
        # The b1.58 recipe (bitnet-qsparse-tiny) has BitNet's sub-norms on; full precision has none.
        assert record["sub_norm"] is (record["precision"] == "b1.58")
    by = {(r["precision"], r["dim"], r["k_ratio"]): r for r in parsed}
    assert set(by) == {(p, d, k) for p in ("fp", "b1.58") for d in (16, 32) for k in (1.0, 0.5)}
    for precision in ("fp", "b1.58"):
        for dim in (16, 32):
            # Top-K 50 % zeroes at least half of every site's inputs; the measured S says so.
            assert by[(precision, dim, 0.5)]["S"] > by[(precision, dim, 1.0)]["S"] + 0.2
            assert by[(precision, dim, 0.5)]["input_sparsity"]["attn_in"] >= 0.5
        assert by[(precision, 32, 1.0)]["N"] > by[(precision, 16, 1.0)]["N"]
    # The precisions share their shapes; BitNet's sub-norms (dim + ffn_dim gains per layer) are the difference.
    assert by[("b1.58", 16, 1.0)]["total_params"] - by[("fp", 16, 1.0)]["total_params"] == 16 + 3 * 16
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
        # One seed per point: no noise estimate, and fit.json says the interval resampled runs instead.
        assert entry["seed_noise_log_loss"] is None and entry["seed_replicated_points"] == 0 and entry["lack_of_fit"] is None
        assert "no seed replicates" in entry["bootstrap"]["method"]
        assert isinstance(entry["S_star_determined"], bool) and entry["S_star_verdict"].startswith("S* = ")
    assert (tmp_path / "cli" / "fit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "S* =" in printed and "fp:" in printed and "b1.58:" in printed and "95%:" in printed
    assert written["precisions"]["fp"]["S_star_verdict"] in printed and "no setting has two seeds" in printed
    run_args = parser.parse_args(["scaling", "run", "--dims", "16", "32", "--steps", "5"])
    assert run_args.dims == [16, 32] and run_args.steps == 5 and run_args.precisions == ["fp", "b1.58"]


OTHER = ScalingLaw(E=1.2, B=1.0, C=0.5, alpha=0.4, beta=0.3)  # S* ≈ 61 %
SMALL_SIZES = np.geomspace(1e4, 1e6, 4)


def replicated_runs(law=OTHER, sigma=1e-3, seeds=(1, 2), rng_seed=1, sizes=SMALL_SIZES, sparsities=(0.0, 0.3, 0.5, 0.7, 0.8)):
    """One precision's sweep: every (N, k) point trained once per seed, log L = the law's + N(0, σ²)."""
    rng = np.random.default_rng(rng_seed)
    return [
        {
            "precision": "fp",
            "N": float(n),
            "S": s,
            "k_ratio": round(1 - s, 2),
            "seed": seed,
            "sub_norm": False,
            "val_loss": float(law.loss(n, s)) * math.exp(rng.normal(0.0, sigma)),
        }
        for n in sizes
        for s in sparsities
        for seed in seeds
    ]


def test_sweep_plan_trains_every_point_once_per_seed():
    from zoo.scaling import DEFAULT_SEEDS, run_key

    plans = sweep_plan(dims=(16, 32), k_ratios=(1.0, 0.5), precisions=("fp", "b1.58"), seeds=(7, 8, 9))
    assert len(plans) == 2 * 2 * 2 * 3
    points = {(p["precision"], p["dim"], p["k_ratio"]) for p in plans}
    for point in points:
        assert sorted(p["seed"] for p in plans if (p["precision"], p["dim"], p["k_ratio"]) == point) == [7, 8, 9]
    # Every run its own key and name: resuming skips a seed only where that seed was recorded.
    assert len({run_key(p) for p in plans}) == len({p["run"] for p in plans}) == len(plans)
    assert DEFAULT_SEEDS == (1337, 1338) and {p["seed"] for p in sweep_plan(dims=(16,))} == {1337, 1338}
    with pytest.raises(ValueError, match="distinct"):
        sweep_plan(dims=(16,), seeds=(1, 1))

    parser = argparse.ArgumentParser(prog="zoo")
    add_scaling_parser(parser.add_subparsers(dest="command"))
    assert parser.parse_args(["scaling", "run"]).seeds == [1337, 1338]
    assert parser.parse_args(["scaling", "run", "--seeds", "1", "2", "3"]).seeds == [1, 2, 3]
    assert parser.parse_args(["scaling", "run", "--seed", "5"]).seeds == [5]  # the one-seed spelling


def test_resuming_refuses_runs_recorded_before_sub_norm(tmp_path):
    out = tmp_path / "sweep.jsonl"
    old = {"run": "b1.58-d16-k1", "precision": "b1.58", "dim": 16, "k_ratio": 1.0, "seed": 1337, "N": 1000, "S": 0.1, "val_loss": 2.5}
    out.write_text(json.dumps(old) + "\n")
    with pytest.raises(ValueError, match=r"1 runs without a sub_norm field.*move the file aside"):
        run_sweep(out, dims=(16,), k_ratios=(1.0,), precisions=("b1.58",), n_layers=1, steps=1, progress=False)
    assert out.read_text() == json.dumps(old) + "\n"  # nothing trained, nothing appended


def test_fit_refuses_a_precision_mixing_sub_norm_settings(tmp_path, capsys):
    from zoo.cli import main as zoo_main

    runs = replicated_runs(seeds=(1,))
    for run in runs[::2]:
        del run["sub_norm"]  # as the first committed sweep recorded them
    sweep = tmp_path / "sweep.jsonl"
    sweep.write_text("".join(json.dumps(r) + "\n" for r in runs))
    with pytest.raises(ValueError, match="fp runs mix BitNet sub-norm settings"):
        fit_sweep(runs, n_bootstrap=0)
    assert zoo_main(["scaling", "fit", "--sweep", str(sweep), "--out-dir", str(tmp_path), "--bootstrap", "0"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and str(sweep) in error and "10 off" in error and "10 unrecorded" in error
    assert not (tmp_path / "fit.json").exists()
    # One setting per precision fits, whichever it is (fp off, b1.58 on).
    other = [{**r, "precision": "b1.58", "sub_norm": True} for r in replicated_runs(seeds=(1,))]
    check_sub_norm([{**r, "sub_norm": False} for r in runs] + other)


def test_seed_noise_recovers_a_known_sigma():
    sigma = 0.02
    runs = replicated_runs(sigma=sigma, seeds=(1, 2, 3), sparsities=(0.0, 0.3, 0.5, 0.7))
    noise = seed_noise(runs)
    assert noise["dof"] == 16 * 2 and noise["replicated_points"] == noise["points"] == 16 and noise["runs"] == 48
    assert 0.7 * sigma < noise["sigma"] < 1.4 * sigma  # 32 dof: the estimate's own spread is about ±13 %
    # One seed per point: no estimate, and no degrees of freedom claimed.
    assert seed_noise(replicated_runs(seeds=(1,))) == {"sigma": None, "dof": 0, "replicated_points": 0, "points": 20, "runs": 20}
    # A point with one seed among replicated ones adds to the points, not to the noise.
    partial = seed_noise(runs + [{**runs[0], "k_ratio": 0.9, "S": 0.1}])
    assert partial["dof"] == 32 and partial["points"] == 17 and partial["sigma"] == pytest.approx(noise["sigma"])


def test_low_noise_replicates_determine_s_star():
    fit = fit_sweep(replicated_runs(sigma=1e-3), n_bootstrap=8)
    entry = fit["precisions"]["fp"]
    assert entry["n_runs"] == 40 and entry["n_points"] == 20 and entry["seeds"] == [1, 2] and entry["sub_norm"] is False
    assert 0.5e-3 < entry["seed_noise_log_loss"] < 2e-3 and entry["seed_noise_dof"] == 20 and entry["seed_replicated_points"] == 20
    assert entry["rmse_over_seed_noise"] == pytest.approx(entry["rmse_log_loss"] / entry["seed_noise_log_loss"])
    assert entry["lack_of_fit"]["dof"] == [20 - 5, 20] and 0.0 <= entry["lack_of_fit"]["p_value"] <= 1.0
    assert entry["bootstrap"]["method"].startswith("parametric") and entry["bootstrap"]["percentiles"] == [2.5, 97.5]
    lo, hi = entry["bootstrap"]["S_star"]
    assert lo - 0.02 <= closed_form_s_star(OTHER) <= hi + 0.02
    assert entry["S_star_determined"] is True and "is determined" in entry["S_star_verdict"], entry["S_star_verdict"]


def test_noisy_replicates_leave_s_star_undetermined():
    entry = fit_sweep(replicated_runs(sigma=0.05), n_bootstrap=8)["precisions"]["fp"]
    assert entry["S_star_determined"] is False and "not determined" in entry["S_star_verdict"]
    lo, hi = entry["bootstrap"]["S_star"]
    assert hi - lo > 0.2 and "wide" in entry["S_star_verdict"]


def test_verdict_names_every_reason():
    inside = verdict(0.5, (0.45, 0.55), (0.1, 0.7), at_bound=False)
    assert inside[0] is True and "45–55%" in inside[1] and "10–70%" in inside[1]
    determined, sentence = verdict(0.9, (0.6, 0.99), (0.17, 0.72), at_bound=False)
    assert not determined and "extrapolated beyond the measured sparsities 17–72%" in sentence
    assert "reaches outside" in sentence and "39 points wide" in sentence
    assert "edge of the searched range" in verdict(0.99, (0.98, 0.99), (0.0, 0.99), at_bound=True)[1]
    assert "failed" in verdict(0.5, (0.45, 0.55), (0.1, 0.7), at_bound=False, failed_share=0.5)[1]
    assert verdict(0.5, None, (0.1, 0.7), at_bound=False) == (
        False,
        "S* = 50% is not determined: no interval was computed (bootstrap off).",
    )
