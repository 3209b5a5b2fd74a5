"""The three splits every zoo corpus is read by, and the checks that name them."""

from __future__ import annotations

SPLITS = ("train", "validation", "test")
# bump when the token cache's layout changes: it is part of every cache key
TOKEN_CACHE_FORMAT = 1


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split
