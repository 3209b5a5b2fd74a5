"""Where moezoo keeps its files: the cache (datasets, downloads) and the shipped configs.

The cache root is ``$ZOO_HOME`` if set, else ``$XDG_CACHE_HOME/moezoo`` (``~/.cache/moezoo``).
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path


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
    """The shipped YAML configs: package data in a wheel, the top-level folder in a checkout."""
    try:
        shipped = Path(str(resources.files("zoo.configs")))
        if shipped.is_dir() and any(shipped.glob("*.yaml")):
            return shipped
    except (ModuleNotFoundError, TypeError):
        pass
    checkout = Path(__file__).resolve().parent.parent / "configs"
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError("moezoo configs not found: neither package data 'zoo.configs' nor ./configs exists")
