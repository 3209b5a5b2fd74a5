"""Checkpoints from a Hugging Face Hub repository (``hf://org/repo[@revision][/folder]``) through
huggingface_hub's own download, cache and offline semantics (``HF_HOME``, ``HF_HUB_OFFLINE``), with
every file checked against the zoo manifest's sha256 and size before use; and a store's
checkpoints uploaded to such a repository (``zoo publish --to hf:org/repo``).

A hub root holds each checkpoint at ``<root>/<name>/<file>``, as the other hubs do; the manifest
comes from the zoo (the shipped one), never from the repository, so a pinned sha256 decides.
"""

from __future__ import annotations

import re
from pathlib import Path

from zoo.hub.manifest import MANIFEST_NAME, DownloadError, NotCachedError, add_source, file_sha256, load_manifest

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


def upload_to_hf(store: str | Path, url: str, names: list[str] | None = None, *, token: str | None = None) -> list[str]:
    """Uploads checkpoints of the store folder ``store`` (``names``, default all its manifest lists)
    to the repository at ``url`` in the layout :func:`download_from_hf` reads, each file checked
    against the manifest first, then records ``url`` among their manifest ``sources``. Returns the names."""
    from huggingface_hub import HfApi

    store = Path(store)
    manifest = load_manifest(store / MANIFEST_NAME)
    names = list(manifest["checkpoints"]) if names is None else names
    unknown = [n for n in names if n not in manifest["checkpoints"]]
    if unknown:
        raise ValueError(f"{store / MANIFEST_NAME}: lists no checkpoint {unknown[0]!r}; it has {sorted(manifest['checkpoints'])}")
    for name in names:  # a repository must never get a file the manifest would then refuse
        for relpath, spec in manifest["checkpoints"][name]["files"].items():
            path = store / name / relpath
            if not path.is_file() or path.stat().st_size != spec["size"] or file_sha256(path) != spec["sha256"]:
                raise ValueError(f"{path}: missing or not the file the manifest pins; republish {name} before uploading")
    repo, revision, folder = parse_hf_url(url)
    api = HfApi(token=token)
    api.create_repo(repo, exist_ok=True)
    if revision:
        api.create_branch(repo, branch=revision, exist_ok=True)
    api.upload_folder(
        repo_id=repo,
        folder_path=str(store),
        path_in_repo=folder or None,
        allow_patterns=[f"{name}/**" for name in names],
        revision=revision,
        commit_message=f"moezoo checkpoints: {', '.join(names)}",
    )
    add_source(store, names, url)
    return names
