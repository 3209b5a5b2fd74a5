"""leaderboard/regenerate.py end to end on tiny releases published into a temporary hub (dense
with two seeds, Q-Sparse with one): the outputs and their columns, the seeds, intervals and paired
differences, --check (full and on sampled blocks) passing on an unchanged rerun, and failing,
naming entry and column (or checkpoint and block), when a committed number is altered."""

import csv
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "--model.arch.dim",
    "32",
    "--model.arch.n_layers",
    "1",
    "--model.arch.n_heads",
    "2",
    "--model.arch.n_kv_heads",
    "2",
    "--model.arch.ffn_dim",
    "64",
    "--model.arch.max_seq_len",
    "32",
]


def load_script():
    spec = importlib.util.spec_from_file_location("leaderboard_regenerate", ROOT / "leaderboard" / "regenerate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def regenerate():
    return load_script()


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """Tiny releases trained for a few steps and published into a temporary store: dense-tiny with a
    second seed (published as dense-tiny-seed1), qsparse-tiny with one."""
    from zoo.hub import publish
    from zoo.paths import configs_dir
    from zoo.train import run_lightning_cli

    root = tmp_path_factory.mktemp("leaderboard")
    previous = os.environ.get("ZOO_HOME")
    # One cache per module, so the corpora are fetched once (ZOO_TEST_HOME reuses a warm one).
    os.environ["ZOO_HOME"] = os.environ.get("ZOO_TEST_HOME") or str(root / "zoo_home")
    store = root / "store"
    for name, seed in (("dense-tiny", 0), ("dense-tiny", 1), ("qsparse-tiny", 0)):
        published = name if seed == 0 else f"{name}-seed{seed}"
        run_dir = root / "runs" / published
        run_lightning_cli(
            [
                "fit",
                "--config",
                str(configs_dir() / f"{name}.yaml"),
                *TINY,
                "--data.batch_size",
                "4",
                "--trainer.max_steps",
                "4",
                "--trainer.val_check_interval",
                "4",
                "--trainer.limit_val_batches",
                "1",
                "--trainer.enable_progress_bar",
                "false",
                "--trainer.enable_model_summary",
                "false",
                "--trainer.logger",
                "false",
                "--trainer.default_root_dir",
                str(run_dir),
                "--sample.prompt",
                "",
                "--model.warmup_steps",
                "1",
                "--seed_everything",
                str(1337 + seed),
            ]
        )
        publish(run_dir / "release", published, store=store, source="test: 4 steps")
    yield store.as_uri()
    if previous is None:
        os.environ.pop("ZOO_HOME", None)
    else:
        os.environ["ZOO_HOME"] = previous


@pytest.fixture(scope="module")
def board(regenerate, hub, tmp_path_factory):
    out = tmp_path_factory.mktemp("board")
    assert regenerate.main(["--hub", hub, "--out", str(out), "--quick", "--no-progress"]) == 0
    return out


def test_writes_the_outputs_with_their_columns(regenerate, board):
    for name in regenerate.OUTPUT_FILES:
        assert (board / name).is_file() and (board / name).stat().st_size > 0, name
    for png in ("pareto_activated.png", "pareto_bytes.png", "pareto_speed.png"):
        assert (board / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    with (board / "results.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    # The published header, written out here so that a column dropped or renamed in the script fails.
    assert reader.fieldnames == [
        "name",
        "seeds",
        "bpb",
        "bpb_ci95",
        "seed_bpb",
        "seed_sd",
        "bpb_vs_dense",
        "bpb_vs_dense_ci95",
        "vs_dense",
        "shakespeare_tokens",
        "ptb_bpb",
        "ptb_bpb_ci95",
        "ptb_seed_bpb",
        "ptb_vs_dense",
        "ptb_vs_dense_ci95",
        "ptb_vs_dense_verdict",
        "ptb_tokens",
        "total_params",
        "non_embedding_params",
        "activated_params",
        "activated_fraction",
        "weight_bytes_per_token",
        "inference_bytes",
        "sparsity_attn_in",
        "sparsity_attn_out",
        "sparsity_ffn_in",
        "sparsity_ffn_down",
        "weight_quant",
        "act_quant",
        "sparsity",
        "k_ratio",
        "n_experts",
        "top_k",
        "train_tokens",
        "train_steps",
        "train_corpus",
        "hardware",
        "checkpoint_sha256",
        "decode_tokens_per_s",
        "fp32_dense_decode_tokens_per_s",
        "decode_speedup",
        "decode_vs_dense_engine",
        "small_decode_tokens_per_s",
        "small_fp32_dense_decode_tokens_per_s",
        "small_decode_speedup",
        "small_inference_bytes",
    ]
    assert {r["name"] for r in rows} == {"dense-tiny", "qsparse-tiny"}  # the second seed is part of its entry
    bpb = [float(r["bpb"]) for r in rows]
    assert bpb == sorted(bpb)

    results = json.loads((board / "results.json").read_text())
    assert results["settings"]["mode"] == "quick" and results["tolerance"]["columns"]["bpb"] == [1e-4, 0.0]
    by_name = {r["name"]: r for r in results["entries"]}
    dense, sparse = by_name["dense-tiny"], by_name["qsparse-tiny"]
    assert dense["total_params"] == sparse["total_params"] and dense["non_embedding_params"] < dense["total_params"]
    assert dense["activated_fraction"] > 0.95
    # Top-K 70 % leaves at least 30 % of each site's inputs at zero, so fewer activated parameters.
    assert sparse["sparsity_attn_in"] >= 0.3 - 1e-9 and sparse["activated_params"] < 0.75 * dense["activated_params"]
    assert sparse["weight_bytes_per_token"] < dense["weight_bytes_per_token"]
    assert sparse["train_steps"] == 4 and sparse["train_tokens"] == 4 * 4 * 32
    assert sparse["shakespeare_tokens"] == sparse["ptb_tokens"] == 8 * 32  # quick: the first 8 windows
    assert all(len(r["checkpoint_sha256"]) == r["seeds"] and all(len(h) == 64 for h in r["checkpoint_sha256"]) for r in results["entries"])
    assert dense["decode_vs_dense_engine"] == 1.0 and sparse["decode_tokens_per_s"] > 0 and sparse["decode_speedup"] > 0
    assert dense["small_inference_bytes"] > 10 * dense["inference_bytes"]  # dense-small (random) vs the tiny test release
    assert sparse["small_decode_tokens_per_s"] > 0 and sparse["small_fp32_dense_decode_tokens_per_s"] > 0

    markdown = (board / "LEADERBOARD.md").read_text()
    assert "How to regenerate" in markdown and "--check" in markdown and "--sample-blocks" in markdown
    assert markdown.index("| 1 |") < markdown.index("| 2 |")
    first = min(results["entries"], key=lambda r: r["bpb"])["name"]
    assert f"| 1 | {first} |" in markdown
    assert "256 Shakespeare / 256 PTB tokens" in markdown


def test_seeds_intervals_and_paired_differences(board):
    results = json.loads((board / "results.json").read_text())
    by_name = {r["name"]: r for r in results["entries"]}
    dense, sparse = by_name["dense-tiny"], by_name["qsparse-tiny"]
    assert dense["seeds"] == 2 and sparse["seeds"] == 1
    assert dense["bpb"] == pytest.approx(sum(dense["seed_bpb"]) / 2) and dense["seed_bpb"][0] != dense["seed_bpb"][1]
    assert dense["seed_sd"] == pytest.approx(abs(dense["seed_bpb"][0] - dense["seed_bpb"][1]) / 2**0.5)
    assert sparse["seed_sd"] is None  # one seed: its own spread is unknown; the pooled one is used
    assert results["statistics"]["shakespeare"]["seed_sd"] == pytest.approx(dense["seed_sd"])
    assert results["statistics"]["shakespeare"]["seed_sd_dof"] == 1
    for row in (dense, sparse):
        low, high = row["bpb_ci95"]
        assert low < row["bpb"] < high
    assert dense["vs_dense"] == dense["ptb_vs_dense_verdict"] == "baseline" and dense["bpb_vs_dense"] is None
    assert sparse["bpb_vs_dense"] == pytest.approx(sparse["bpb"] - dense["bpb"])
    low, high = sparse["bpb_vs_dense_ci95"]
    assert low < sparse["bpb_vs_dense"] < high
    assert sparse["vs_dense"] == ("better" if high < 0 else "worse" if low > 0 else "not significant")

    blocks = json.loads((board / "blocks.json").read_text())["checkpoints"]
    assert set(blocks) == {"dense-tiny", "dense-tiny-seed1", "qsparse-tiny"}
    shakespeare = blocks["qsparse-tiny"]["shakespeare"]
    assert shakespeare["windows"] == 8 and shakespeare["tokens"] == [64] * 4 and len(shakespeare["nll"]) == 4


def test_check_passes_on_an_unchanged_rerun(regenerate, hub, board, capsys):
    assert regenerate.main(["--check", "--hub", hub, "--out", str(board), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "check passed" in out and "not checked" in out
    assert regenerate.main(["--check", "--sample-blocks", "2", "--hub", hub, "--out", str(board), "--no-progress"]) == 0
    assert "check passed" in capsys.readouterr().out


def test_sampled_check_fails_naming_checkpoint_and_block(regenerate, hub, board, tmp_path, capsys):
    altered = tmp_path / "altered"
    shutil.copytree(board, altered)
    blocks = json.loads((altered / "blocks.json").read_text())
    blocks["checkpoints"]["dense-tiny-seed1"]["ptb"]["nll"][3] *= 1.01  # the last block: always sampled
    (altered / "blocks.json").write_text(json.dumps(blocks))
    assert regenerate.main(["--check", "--sample-blocks", "2", "--hub", hub, "--out", str(altered), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "'dense-tiny-seed1' ptb block 3" in err
    # and the statistics recomputed from the altered blocks no longer match the committed ones
    assert "'ptb_bpb'" in err and "'dense-tiny'" in err


def test_sampled_check_needs_check(regenerate, board, capsys):
    assert regenerate.main(["--sample-blocks", "2", "--out", str(board), "--no-progress"]) == 2
    assert "--sample-blocks needs --check" in capsys.readouterr().err


def test_check_fails_naming_entry_and_column(regenerate, hub, board, tmp_path, capsys):
    altered = tmp_path / "altered"
    shutil.copytree(board, altered)
    results = json.loads((altered / "results.json").read_text())
    for entry in results["entries"]:
        if entry["name"] == "qsparse-tiny":
            entry["ptb_bpb"] *= 1.001
            entry["decode_tokens_per_s"] *= 10  # timings are not checked: this alone must not fail
    (altered / "results.json").write_text(json.dumps(results))
    assert regenerate.main(["--check", "--sample-blocks", "1", "--hub", hub, "--out", str(altered), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "check FAILED" in err and "'qsparse-tiny'" in err and "'ptb_bpb'" in err
    assert "decode_tokens_per_s" not in err
    assert "results.csv" not in err  # the untouched CSV still agrees


def altered_board(board, tmp_path, change):
    altered = tmp_path / "altered"
    shutil.copytree(board, altered)
    results = json.loads((altered / "results.json").read_text())
    for entry in results["entries"]:
        if entry["name"] == "qsparse-tiny":
            change(entry)
    (altered / "results.json").write_text(json.dumps(results))
    return altered


def test_check_tolerates_another_machines_summation_order(regenerate, hub, board, tmp_path, capsys):
    # What another CPU of this kind measured: bpb 2e-6 relative away, a zero fraction 7e-5 away.
    def drift(entry):
        entry["bpb"] *= 1 + 2e-6
        entry["ptb_bpb_ci95"] = [v * (1 - 2e-6) for v in entry["ptb_bpb_ci95"]]
        entry["sparsity_ffn_down"] += 7e-5
        entry["activated_fraction"] -= 7e-5

    altered = altered_board(board, tmp_path, drift)
    assert regenerate.main(["--check", "--sample-blocks", "1", "--hub", hub, "--out", str(altered), "--no-progress"]) == 0


@pytest.mark.parametrize(
    "column, change",
    [
        ("bpb", lambda v: v * (1 + 3e-4)),  # beyond 1e-4 relative
        ("bpb_ci95", lambda v: [v[0], v[1] * (1 + 3e-4)]),  # each end of an interval
        ("bpb_vs_dense", lambda v: v + 1e-3),  # beyond 5e-4 absolute
        ("vs_dense", lambda v: "better" if v != "better" else "worse"),  # verdicts: exact
        ("sparsity_attn_in", lambda v: v + 2e-3),  # beyond 1e-3 absolute
        ("checkpoint_sha256", lambda v: ["0" * 64]),  # hashes: exact
        ("shakespeare_tokens", lambda v: v + 1),  # counts: exact
        ("seeds", lambda v: v + 1),
        ("small_inference_bytes", lambda v: v + 1),  # measured bytes: exact
    ],
)
def test_check_fails_beyond_each_columns_tolerance(regenerate, hub, board, tmp_path, capsys, column, change):
    def alter(entry):
        entry[column] = change(entry[column])

    altered = altered_board(board, tmp_path, alter)
    assert regenerate.main(["--check", "--sample-blocks", "1", "--hub", hub, "--out", str(altered), "--no-progress"]) == 1
    assert f"'{column}'" in capsys.readouterr().err


def test_measuring_twice_on_one_machine_is_exact(regenerate, hub):
    settings = {**regenerate.SETTINGS["quick"], "mode": "quick"}
    first, second = (
        regenerate.assemble(regenerate.measure(["qsparse-tiny"], hub, settings, progress=False), settings)[0] for _ in range(2)
    )
    assert {r["name"] for r in first} == {"dense-tiny", "qsparse-tiny"}  # the baseline of its difference comes along
    for a, b in zip(first, second):
        for column in regenerate.COLUMNS:
            if column not in regenerate.UNCHECKED:
                assert a[column] == b[column], column


def test_check_without_committed_results_is_an_error(regenerate, hub, tmp_path, capsys):
    assert regenerate.main(["--check", "--hub", hub, "--out", str(tmp_path), "--no-progress"]) == 2
    assert "run without --check first" in capsys.readouterr().err


def test_a_published_checkpoint_missing_from_the_board_fails_the_check(regenerate, hub, board, tmp_path, capsys):
    altered = tmp_path / "altered"
    shutil.copytree(board, altered)
    blocks = json.loads((altered / "blocks.json").read_text())
    del blocks["checkpoints"]["dense-tiny-seed1"]
    (altered / "blocks.json").write_text(json.dumps(blocks))
    assert regenerate.main(["--check", "--sample-blocks", "1", "--hub", hub, "--out", str(altered), "--no-progress"]) == 1
    assert "dense-tiny-seed1" in capsys.readouterr().err


def test_pareto_front():
    load_script()  # puts leaderboard/ on sys.path for its board_* modules
    from board_report import pareto_front

    points = [(1.0, 3.0), (2.0, 2.0), (3.0, 2.5), (4.0, 1.0), (0.5, 4.0)]
    assert sorted(pareto_front(points)) == [0, 1, 3, 4]


def test_labels_of_nearby_points_do_not_overlap():
    """The committed speed plot's case: bitnet-qsparse-tiny (x14.4, 2.290) then bitnet-tiny (x15.9, 2.297)."""
    load_script()
    from board_report import label_offsets

    above, below = (4, 4), (4, -11)
    assert label_offsets([2.7, 14.4, 15.9], [2.14, 2.290, 2.297]) == [above, above, below]
    # a third point near only the one labelled below takes the free side above
    assert label_offsets([2.7, 14.4, 15.9, 17.5], [2.14, 2.290, 2.297, 2.295]) == [above, above, below, above]
    assert label_offsets([1.0, 10.0], [2.0, 2.0]) == [above, above]  # far apart in speed
    assert label_offsets([1.0, 1.05], [2.0, 2.3]) == [above, above]  # far apart in bpb


def test_report_only_rewrites_the_report_from_the_measurements(regenerate, board, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(board, copy)
    (copy / "LEADERBOARD.md").unlink()
    (copy / "pareto_speed.png").unlink()
    assert regenerate.main(["--report-only", "--out", str(copy)]) == 0
    assert (copy / "LEADERBOARD.md").read_text() == (board / "LEADERBOARD.md").read_text()
    assert (copy / "results.json").read_text() == (board / "results.json").read_text()
    assert (copy / "pareto_speed.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_full_check_names_a_changed_number_of_blocks(regenerate, hub, board, tmp_path, capsys):
    altered = tmp_path / "altered"
    shutil.copytree(board, altered)
    blocks = json.loads((altered / "blocks.json").read_text())
    blocks["checkpoints"]["qsparse-tiny"]["shakespeare"]["nll"].pop()
    (altered / "blocks.json").write_text(json.dumps(blocks))
    assert regenerate.main(["--check", "--hub", hub, "--out", str(altered), "--no-progress"]) == 1
    assert "'qsparse-tiny' shakespeare: committed 3 blocks, re-measured 4" in capsys.readouterr().err


def test_reuse_scores_scores_only_new_or_changed_checkpoints(regenerate, hub, board, tmp_path, monkeypatch):
    scored = []
    measuring = sys.modules["board_measure"]
    real_score = measuring.score
    monkeypatch.setattr(
        measuring, "score", lambda model, tokenizer, corpus, *a, **k: scored.append(corpus) or real_score(model, tokenizer, corpus, *a, **k)
    )
    out = tmp_path / "board"
    shutil.copytree(board, out)
    original = json.loads((board / "blocks.json").read_text())["checkpoints"]
    blocks = json.loads((out / "blocks.json").read_text())
    blocks["checkpoints"]["qsparse-tiny"]["sha256"] = "0" * 64  # as if qsparse-tiny had been retrained
    marked = blocks["checkpoints"]["dense-tiny-seed1"]["shakespeare"]["nll"]
    marked[0] += 1.0  # a reused score is taken as it stands: the mark shows it was not re-measured
    (out / "blocks.json").write_text(json.dumps(blocks))

    assert regenerate.main(["--hub", hub, "--out", str(out), "--quick", "--no-progress", "--reuse-scores"]) == 0
    assert scored == ["shakespeare", "ptb"]  # qsparse-tiny's two test splits, nothing else
    after = json.loads((out / "blocks.json").read_text())["checkpoints"]
    assert after["qsparse-tiny"] == original["qsparse-tiny"]  # re-scored under its real sha256
    assert after["dense-tiny-seed1"]["shakespeare"]["nll"] == marked

    # scores made with other scoring settings are not reused
    blocks["settings"]["block_windows"] += 1
    (out / "blocks.json").write_text(json.dumps(blocks))
    scored.clear()
    assert regenerate.main(["--hub", hub, "--out", str(out), "--quick", "--no-progress", "--reuse-scores"]) == 0
    assert len(scored) == 2 * 3  # every checkpoint, both splits
    assert json.loads((out / "blocks.json").read_text())["checkpoints"] == original


def test_reuse_scores_names_an_unreadable_blocks_file(regenerate, hub, tmp_path, capsys):
    (tmp_path / "blocks.json").write_text("{not json")
    assert regenerate.main(["--hub", hub, "--out", str(tmp_path), "--quick", "--no-progress", "--reuse-scores"]) == 2
    err = capsys.readouterr().err
    assert "blocks.json" in err and "--reuse-scores" in err and "Traceback" not in err


def test_compare_gives_the_boards_paired_difference_for_any_two_entries(regenerate, board, capsys):
    rows = {r["name"]: r for r in json.loads((board / "results.json").read_text())["entries"]}
    assert regenerate.main(["--compare", "qsparse-tiny", "dense-tiny", "--out", str(board)]) == 0
    lines = capsys.readouterr().out.splitlines()
    shakespeare = next(line for line in lines if line.strip().startswith("shakespeare:"))
    row = rows["qsparse-tiny"]
    low, high = row["bpb_vs_dense_ci95"]
    assert f"{row['bpb_vs_dense']:+.4f} [{low:+.4f}, {high:+.4f}] {row['vs_dense']};" in shakespeare
    ptb = next(line for line in lines if line.strip().startswith("ptb:"))
    assert f"{row['ptb_vs_dense']:+.4f}" in ptb and row["ptb_vs_dense_verdict"] in ptb

    assert regenerate.main(["--compare", "dense-tiny", "qsparse-tiny", "--out", str(board)]) == 0
    swapped = next(line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("shakespeare:"))
    assert f"{-row['bpb_vs_dense']:+.4f}" in swapped

    assert regenerate.main(["--compare", "qsparse-tiny", "nope-tiny", "--out", str(board)]) == 2
    err = capsys.readouterr().err
    assert "nope-tiny" in err and "Traceback" not in err


def test_an_interrupted_write_leaves_the_previous_file_whole(regenerate, board, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    out = tmp_path / "board"
    shutil.copytree(board, out)
    before = (out / "pareto_activated.png").read_bytes()

    def stopped_halfway(self, target, *args, **kwargs):
        (open(target, "wb") if isinstance(target, (str, Path)) else target).write(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", stopped_halfway)
    with pytest.raises(KeyboardInterrupt):
        regenerate.main(["--report-only", "--out", str(out)])
    assert (out / "pareto_activated.png").read_bytes() == before
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
