"""Where moezoo keeps its files: the cache (datasets, downloads) and the shipped configs.

The cache root is ``$ZOO_HOME`` if set, else ``$XDG_CACHE_HOME/moezoo`` (``~/.cache/moezoo``).
"""

from __future__ import annotations

import os
from pathlib import Path


def offline_mode() -> bool:
    """``$ZOO_OFFLINE`` set to 1/true/yes/on: use what is cached, never reach the network."""
    return os.environ.get("ZOO_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def zoo_home() -> Path:
    """The cache root; created on first use."""
    explicit = os.environ.get("ZOO_HOME")
    if explicit:
        root = Path(explicit).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = Path(xdg) / "moezoo"
    root.mkdir(parents=True, exist_ok=True)
    return root


def cache_dir(*parts: str) -> Path:
    """A sub-directory of the cache root, e.g. ``cache_dir("datasets", "shakespeare")``."""
    path = zoo_home().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def configs_dir() -> Path:
    """The shipped YAML configs: ``zoo/configs`` in a wheel (package data), ``./configs`` in a checkout."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "configs", package.parent / "configs"):
        if candidate.is_dir() and any(candidate.glob("*.yaml")):
            return candidate
    raise FileNotFoundError(f"moezoo configs not found: neither {package / 'configs'} (wheel) nor {package.parent / 'configs'} (checkout)")
