"""The committed scaling-law fit (leaderboard/scaling/fit.json) is the fit of the committed sweep:
the seed noise exactly (pure arithmetic on the records), the fit's optimum to a tolerance that
holds on another machine (the minimum's value is stable; the argmin of a flat law may move), and
the sweep is the one the README describes: two seeds per point, sub-norms on at 1.58 bits."""

import json
from pathlib import Path

import pytest

from zoo.scaling.report import fit_sweep
from zoo.scaling.sweep import read_jsonl

SCALING = Path(__file__).resolve().parents[2] / "leaderboard" / "scaling"


def test_committed_fit_is_the_fit_of_the_committed_sweep():
    records = read_jsonl(SCALING / "sweep.jsonl")
    committed = json.loads((SCALING / "fit.json").read_text())["precisions"]
    refit = fit_sweep(records, n_bootstrap=0)["precisions"]
    assert set(refit) == set(committed) == {"fp", "b1.58"}
    for precision, entry in committed.items():
        again = refit[precision]
        assert entry["n_runs"] == again["n_runs"] == 32 and entry["n_points"] == again["n_points"] == 16
        assert entry["seeds"] == again["seeds"] == [1337, 1338]
        assert entry["sub_norm"] is (precision == "b1.58") and again["sub_norm"] == entry["sub_norm"]
        assert again["seed_noise_log_loss"] == pytest.approx(entry["seed_noise_log_loss"], rel=1e-9)
        assert again["seed_noise_dof"] == entry["seed_noise_dof"] == 16
        assert again["huber_objective"] == pytest.approx(entry["huber_objective"], rel=1e-3)
        low, high = entry["bootstrap"]["S_star"]
        assert low <= entry["S_star"] <= high and entry["bootstrap"]["percentiles"] == [2.5, 97.5]
        assert entry["S_star_determined"] is False and "not determined" in entry["S_star_verdict"]
