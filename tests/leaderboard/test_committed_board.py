"""The committed leaderboard is reproducible from the shipped checkpoints (regenerate.py --check)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_committed_leaderboard_reproduces(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ZOO_HOME", str(tmp_path))  # a fresh cache: every checkpoint is downloaded and verified
    monkeypatch.delenv("ZOO_HUB", raising=False)
    spec = importlib.util.spec_from_file_location("regenerate", ROOT / "leaderboard" / "regenerate.py")
    regenerate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(regenerate)
    assert regenerate.main(["--check", "--no-progress"]) == 0
    assert "check passed: 8 entries" in capsys.readouterr().out
