"""The zoo's checkpoint manifest (names, files, sizes, sha256) and publishing a release into a
store; only bytes are moved and hashed, nothing is unpickled."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from zoo.files import atomic_write_bytes, open_to_others, sha256_file

MANIFEST_VERSION = 1
MANIFEST_NAME = "manifest.json"
DEFAULT_TIMEOUT = 60.0  # seconds without a byte before a download is declared stalled
CHUNK = 1 << 20
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


class DownloadError(RuntimeError):
    """A checkpoint file could not be fetched or did not verify; the message says which and why."""

    def __init__(self, name: str, filename: str | None, cause: str):
        self.name, self.filename, self.cause = name, filename, cause
        what = f"{name}/{filename}" if filename else name
        super().__init__(f"cannot get zoo checkpoint file {what!r}: {cause}")


class NotCachedError(DownloadError):
    """Offline mode was asked for something that is not in the cache."""


class UnknownCheckpointError(KeyError):
    """The manifest has no checkpoint of that name."""

    def __init__(self, name: str, known: list[str], origin: str):
        self.name, self.known = name, known
        listed = ", ".join(sorted(known)) if known else "(none)"
        self.message = f"unknown zoo checkpoint {name!r} in manifest {origin}; known checkpoints: {listed}"
        super().__init__(self.message)

    # KeyError.__str__ would repr() the message and wrap it in quotes.
    def __str__(self) -> str:
        return self.message


# ----------------------------------------------------------------------------- helpers


def shipped_store() -> Path:
    """The project's store: ``store/`` of a source checkout (manifest and weights), or in a wheel
    ``zoo/store/`` (the manifest alone: weights are never package data)."""
    import zoo

    package = Path(zoo.__file__).resolve().parent
    for candidate in (package / "store", package.parent / "store"):  # a wheel's, then a checkout's
        if (candidate / MANIFEST_NAME).is_file():
            return candidate
    return package / "store"


def default_hub() -> str:
    """``$ZOO_HUB`` if set, else the project's store as a ``file://`` URL (each checkpoint's
    manifest ``sources`` are tried after it when it lacks the files)."""
    return os.environ.get("ZOO_HUB") or shipped_store().as_uri()


def check_source(source: Any) -> str:
    """A hub URL a checkpoint can come from: ``hf://org/repo[@revision]``, ``http(s)://...`` or ``file://...``."""
    hf_repo = r"hf://[\w.-]+/[\w.-]+(@[\w./-]+)?/?"
    if not isinstance(source, str) or not re.match(rf"^(https?://\S+|file://\S+|{hf_repo})$", source):
        raise ValueError(f"source {source!r} is not an hf://org/repo[@revision], http(s):// or file:// URL")
    return source


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file (``zoo.files.sha256_file``, under the name this module's users know)."""
    return sha256_file(path)


def check_name(name: Any) -> str:
    # A checkpoint name becomes one directory of the cache and one URL segment, so it must
    # be a single harmless path component.
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise ValueError(
            f"invalid zoo checkpoint name {name!r}: use letters, digits, '.', '_', '+', '-' (starting with a letter or digit, no '..')"
        )
    return name


def check_relpath(filename: Any) -> PurePosixPath:
    """Refuse manifest file names that could land outside the checkpoint's directory."""
    if not isinstance(filename, str) or not filename:
        raise ValueError(f"file name {filename!r} is not a non-empty string")
    if "\\" in filename or "\x00" in filename or ":" in filename:
        # Backslashes and drive colons are path syntax on Windows; refuse them everywhere so
        # a manifest means the same on every platform.
        raise ValueError(f"file name {filename!r} contains a backslash, ':' or NUL")
    if filename.startswith("/") or filename.startswith("~"):
        raise ValueError(f"file name {filename!r} is absolute")
    rel = PurePosixPath(filename)
    for part in filename.split("/"):
        if part in ("", ".", ".."):
            raise ValueError(f"file name {filename!r} has an empty, '.' or '..' component")
        if part.startswith("."):
            # Dot-names are reserved for the cache's own .part/.lock/.verified files.
            raise ValueError(f"file name {filename!r} has a hidden (dot) component")
    return rel


def validate_manifest(data: Any, origin: str) -> dict:
    def bad(msg: str) -> ValueError:
        return ValueError(f"invalid zoo manifest {origin}: {msg}")

    if not isinstance(data, dict):
        raise bad("top level must be a JSON object")
    if data.get("version") != MANIFEST_VERSION:
        raise bad(f"'version' must be {MANIFEST_VERSION}, got {data.get('version')!r}")
    checkpoints = data.get("checkpoints")
    if not isinstance(checkpoints, dict):
        raise bad("'checkpoints' must be an object mapping names to entries")
    for name, entry in checkpoints.items():
        try:
            check_name(name)
        except ValueError as e:
            raise bad(f"checkpoint {name!r}: {e}") from None
        if not isinstance(entry, dict):
            raise bad(f"checkpoint {name!r}: entry must be an object")
        files = entry.get("files")
        if not isinstance(files, dict) or not files:
            raise bad(f"checkpoint {name!r}: 'files' must be a non-empty object")
        if "source" in entry and not isinstance(entry["source"], str):
            raise bad(f"checkpoint {name!r}: 'source' must be a string")
        sources = entry.get("sources", [])
        if not isinstance(sources, list):
            raise bad(f"checkpoint {name!r}: 'sources' must be a list of hub URLs")
        for hub in sources:
            try:
                check_source(hub)
            except ValueError as e:
                raise bad(f"checkpoint {name!r}: {e}") from None
        for filename, spec in files.items():
            try:
                check_relpath(filename)
            except ValueError as e:
                raise bad(f"checkpoint {name!r}: {e}") from None
            where = f"checkpoint {name!r} file {filename!r}"
            if not isinstance(spec, dict):
                raise bad(f"{where}: must be an object with 'sha256' and 'size'")
            sha = spec.get("sha256")
            if not isinstance(sha, str) or not _SHA_RE.match(sha):
                raise bad(f"{where}: 'sha256' must be 64 lowercase hex digits, got {sha!r}")
            size = spec.get("size")
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise bad(f"{where}: 'size' must be a non-negative integer, got {size!r}")
    return data


def load_manifest(path: str | os.PathLike | None = None) -> dict:
    """Read and validate a manifest file (default: the shipped store's ``manifest.json``).

    Raises ``ValueError`` naming the file and the offending entry/field when it is malformed.
    """
    path = Path(path) if path is not None else shipped_store() / MANIFEST_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"zoo manifest not found: {path}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"invalid zoo manifest {path}: not JSON ({e})") from None
    return validate_manifest(data, str(path))


def dump_manifest(data: dict) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")


def locked(path: Path):
    from filelock import FileLock

    return FileLock(str(path))


# ----------------------------------------------------------------------------- publish


def publish(
    release_dir: str | os.PathLike,
    name: str,
    *,
    store: str | os.PathLike,
    source: str = "",
) -> dict:
    """Copy a release directory into a store folder and record it in the store's manifest.

    ``store`` is a folder the caller names (never a default inside the package). Files are copied to ``<store>/<name>/`` (the old
    copy, if any, is replaced as a whole); hidden (dot) files are skipped. Their sha256 and
    size go into the manifest entry ``{"files": ..., "source": source}``, which is written
    atomically under a lock. Returns the entry.
    """
    check_name(name)
    release = Path(release_dir)
    if not release.is_dir():
        raise NotADirectoryError(f"release directory not found: {release}")
    store_dir = Path(store)
    store_dir.mkdir(parents=True, exist_ok=True)

    sources: list[tuple[str, Path]] = []
    for p in sorted(release.rglob("*")):
        rel = p.relative_to(release).as_posix()
        if any(part.startswith(".") for part in rel.split("/")) or not p.is_file():
            continue
        check_relpath(rel)
        sources.append((rel, p))
    if not sources:
        raise ValueError(f"release directory {release} has no files to publish")

    files: dict[str, dict] = {}
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.staging-", dir=store_dir))
    open_to_others(staging)  # it becomes <store>/<name>
    try:
        for rel, src in sources:
            dst = staging / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            h, size = hashlib.sha256(), 0
            # Hash the bytes as they are copied, so the manifest describes exactly the copy.
            with open(src, "rb") as fin, open(dst, "wb") as fout:
                for block in iter(lambda: fin.read(CHUNK), b""):
                    h.update(block)
                    size += len(block)
                    fout.write(block)
            files[rel] = {"sha256": h.hexdigest(), "size": size}
        entry = {"files": files, "source": str(source)}

        manifest_path = store_dir / MANIFEST_NAME
        with locked(store_dir / f".{MANIFEST_NAME}.lock"):
            if manifest_path.exists():
                manifest = load_manifest(manifest_path)
            else:
                manifest = {"version": MANIFEST_VERSION, "checkpoints": {}}
            target = store_dir / name
            if target.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{name}.old-", dir=store_dir))
                os.replace(target, old / name)
                os.replace(staging, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(staging, target)
            previous = manifest["checkpoints"].get(name, {})
            if previous.get("sources"):  # where else it is hosted does not change with a republish
                entry["sources"] = previous["sources"]
            manifest["checkpoints"][name] = entry
            validate_manifest(manifest, str(manifest_path))
            atomic_write_bytes(manifest_path, dump_manifest(manifest))
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return entry


def add_source(store: str | os.PathLike, names: list[str], url: str) -> None:
    """Records ``url`` among the ``sources`` of each checkpoint ``names`` in ``store``'s manifest
    (after the ones it lists), so downloads fall back to it where the store lacks the files."""
    check_source(url)
    store_dir = Path(store)
    manifest_path = store_dir / MANIFEST_NAME
    with locked(store_dir / f".{MANIFEST_NAME}.lock"):
        manifest = load_manifest(manifest_path)
        for name in names:
            entry = manifest["checkpoints"][name]
            entry["sources"] = [*[s for s in entry.get("sources", []) if s != url], url]
        validate_manifest(manifest, str(manifest_path))
        atomic_write_bytes(manifest_path, dump_manifest(manifest))
