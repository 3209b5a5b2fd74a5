"""Checkpoints from a Hugging Face Hub repository (``hf://org/repo[@revision][/folder]``) through
huggingface_hub's own download, cache and offline semantics (``HF_HOME``, ``HF_HUB_OFFLINE``), with
every file checked against the zoo manifest's sha256 and size before use.

A hub root holds each checkpoint at ``<root>/<name>/<file>``, as the other hubs do; the manifest
comes from the zoo (the shipped one), never from the repository, so a pinned sha256 decides.
"""

from __future__ import annotations

import re
from pathlib import Path

from zoo.hub.manifest import DownloadError, NotCachedError, file_sha256

HF_URL = re.compile(r"^hf://(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<revision>[\w./-]+?))?(?:/(?P<folder>[\w./-]+))?/?$")


def parse_hf_url(url: str) -> tuple[str, str | None, str]:
    """``hf://org/repo@rev/folder`` → (``org/repo``, ``rev`` or None, ``folder`` or "")."""
    match = HF_URL.match(url)
    if not match:
        raise ValueError(f"{url!r} is not a Hugging Face hub URL of the form hf://org/repo[@revision][/folder]")
    return match["repo"], match["revision"], match["folder"] or ""


def download_from_hf(url: str, name: str, files: dict[str, dict], *, offline: bool, timeout: float) -> Path:
    """Every file of checkpoint ``name`` from the repository at ``url``; returns the checkpoint's
    folder inside huggingface_hub's cache (one copy on disk, shared with transformers)."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as error:  # a dependency of moezoo; only a broken install lacks it
        raise DownloadError(name, None, f"{url} needs huggingface_hub ({error})") from None
    repo, revision, folder = parse_hf_url(url)
    checkpoint_dir = None
    for relpath, spec in files.items():
        parts = relpath.split("/")
        subfolder = "/".join(p for p in (folder, name, *parts[:-1]) if p)
        try:
            local = Path(
                hf_hub_download(
                    repo_id=repo,
                    filename=parts[-1],
                    subfolder=subfolder,
                    revision=revision,
                    local_files_only=offline,
                    etag_timeout=timeout,
                )
            )
        except Exception as error:  # huggingface_hub raises many types (HTTP, offline, not found)
            kind = NotCachedError if offline else DownloadError
            raise kind(name, relpath, f"from {url}: {type(error).__name__}: {' '.join(str(error).split())[:300]}") from None
        size = local.stat().st_size
        if size != spec["size"]:
            raise DownloadError(name, relpath, f"size mismatch from {url}: {size} bytes, the manifest says {spec['size']}")
        if file_sha256(local) != spec["sha256"]:
            raise DownloadError(name, relpath, f"sha256 mismatch from {url}: the file is not the one the manifest pins")
        checkpoint_dir = local.parents[len(parts) - 1]
    assert checkpoint_dir is not None  # a manifest entry has at least one file
    return checkpoint_dir
