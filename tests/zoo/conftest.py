"""Shared fixtures: one cache root for the whole session so Shakespeare is fetched once."""

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def zoo_home(tmp_path_factory):
    # A user's populated cache is reused when ZOO_TEST_HOME points at it; otherwise a fresh one.
    root = Path(os.environ.get("ZOO_TEST_HOME") or tmp_path_factory.mktemp("zoo_home"))
    previous = os.environ.get("ZOO_HOME")
    os.environ["ZOO_HOME"] = str(root)
    yield root
    if previous is None:
        os.environ.pop("ZOO_HOME", None)
    else:
        os.environ["ZOO_HOME"] = previous
