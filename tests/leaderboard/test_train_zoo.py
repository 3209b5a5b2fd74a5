"""The leaderboard's training driver: one budget and data order for every run, seeds that vary the
model only, finished runs skipped, unfinished ones continued from their last checkpoint."""

import importlib.util
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def driver():
    spec = importlib.util.spec_from_file_location("train_zoo", ROOT / "leaderboard" / "train_zoo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_budget_one_data_order_and_a_seed_per_run(driver, tmp_path):
    steps = math.ceil(driver.DEFAULT_TOKENS / (driver.BATCH * driver.SEQ))
    assert steps * driver.BATCH * driver.SEQ >= 4_500_000  # at least one pass over the train split
    a = driver.fit_command("qsparse-tiny", 0, steps, tmp_path / "a", 100)
    b = driver.fit_command("qsparse-tiny", 2, steps, tmp_path / "b", 100)
    assert f"--trainer.max_steps={steps}" in a and "--data.seed=0" in a and "--data.seed=0" in b
    assert "--seed_everything=1337" in a and "--seed_everything=1339" in b
    assert not any(arg.startswith("--ckpt_path") for arg in a)


def test_an_unfinished_run_continues_from_its_last_checkpoint(driver, tmp_path):
    directory = driver.run_dir(tmp_path, "dense-tiny", 1)
    checkpoint = directory / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"x")
    assert driver.fit_command("dense-tiny", 1, 10, directory, 5)[-1] == f"--ckpt_path={checkpoint}"
    (directory / "release").mkdir()
    (directory / "release" / "model.safetensors").write_bytes(b"x")
    assert driver.train("dense-tiny", 1, 10, tmp_path, 5, None)  # finished: skipped, nothing run


def test_seed_counts(driver):
    assert driver.parse_seeds([]) == {"dense-tiny": 3, "bitnet-qsparse-tiny": 3, "bitnet-tiny": 3}
    assert driver.parse_seeds(["moe-tiny=2"])["moe-tiny"] == 2
    with pytest.raises(SystemExit, match="NAME=COUNT"):
        driver.parse_seeds(["moe-tiny=0"])


def test_extra_seeds_publish_under_their_own_names(driver):
    load = importlib.util.spec_from_file_location("board_spec", ROOT / "leaderboard" / "board_spec.py")
    board_spec = importlib.util.module_from_spec(load)
    load.loader.exec_module(board_spec)
    assert driver.published_name("dense-tiny", 0) == "dense-tiny"
    assert driver.published_name("dense-tiny", 2) == "dense-tiny-seed2"
    # and the leaderboard reads them back as seeds of their entry
    for seed in (0, 1, 2):
        assert board_spec.replica_of(driver.published_name("bitnet-qsparse-tiny", seed)) == ("bitnet-qsparse-tiny", seed)
