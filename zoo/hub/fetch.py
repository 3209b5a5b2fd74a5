"""Verified downloads from a hub (a local store or an http(s) URL): the manifest first, then each
file streamed, resumed where it stopped, and checked against its sha256 before use."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from zoo.files import atomic_write_bytes, sha256_bytes
from zoo.hub.manifest import (
    CHUNK,
    DEFAULT_TIMEOUT,
    MANIFEST_NAME,
    DownloadError,
    NotCachedError,
    UnknownCheckpointError,
    check_name,
    check_relpath,
    default_hub,
    dump_manifest,
    file_sha256,
    load_manifest,
    locked,
    shipped_store,
    validate_manifest,
)

# ----------------------------------------------------------------------------- hub access


class _NotFound(Exception):
    """The hub has no such file (HTTP 404/410, missing local path)."""


class _RangeNotSatisfiable(Exception):
    """HTTP 416: the partial file is not a prefix the server can continue from."""


def _hub_kind(hub: str) -> str:
    scheme = urllib.parse.urlsplit(hub).scheme.lower()
    if scheme in ("", "file") or (len(scheme) == 1 and sys.platform == "win32"):
        return "file"
    if scheme in ("http", "https"):
        return "http"
    if scheme == "hf":
        return "hf"
    raise ValueError(f"unsupported hub {hub!r}: use a folder, file://, http(s):// or hf://org/repo[@revision]")


def _local_root(hub: str) -> Path:
    parts = urllib.parse.urlsplit(hub)
    if parts.scheme.lower() == "file":
        return Path(urllib.request.url2pathname(parts.path))
    return Path(hub).expanduser()


def _hub_url(hub: str, relpath: str) -> str:
    base = hub.rstrip("/")
    if _hub_kind(hub) == "http":
        return f"{base}/{urllib.parse.quote(relpath)}"
    return f"{base}/{relpath}"


@contextmanager
def _open_remote(hub: str, relpath: str, offset: int, timeout: float) -> Iterator[tuple[IO[bytes], int]]:
    """Open ``<hub>/<relpath>`` for reading from byte ``offset``.

    Yields ``(stream, start)`` where ``start`` is where the stream really begins: ``offset``
    when the hub honoured the range, ``0`` when it sent the whole file instead.
    """
    kind = _hub_kind(hub)
    if kind == "file":
        path = _local_root(hub).joinpath(*relpath.split("/"))
        try:
            f = open(path, "rb")
        except (FileNotFoundError, NotADirectoryError):
            raise _NotFound(str(path)) from None
        with f:
            f.seek(offset)
            yield f, offset
        return

    if kind == "http":
        url = _hub_url(hub, relpath)
        headers = {"User-Agent": "moezoo-hub", "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
        except urllib.error.HTTPError as e:
            e.close()
            if e.code in (404, 410):
                raise _NotFound(f"HTTP {e.code} for {url}") from None
            if e.code == 416:
                raise _RangeNotSatisfiable(url) from None
            raise OSError(f"HTTP {e.code} {e.reason} for {url}") from None
        with resp:
            start = 0
            if offset and resp.status == 206:
                # Only trust a 206 whose Content-Range starts where the partial file ends.
                m = re.match(r"bytes\s+(\d+)-", resp.headers.get("Content-Range", ""))
                if not m or int(m.group(1)) != offset:
                    raise _RangeNotSatisfiable(url)
                start = offset
            yield resp, start
        return

    raise ValueError(f"unsupported hub {hub!r}")  # hf:// goes through zoo.hub.hf_source


def _describe(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"timed out (no data for {timeout:g} s)"
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            return f"timed out (no data for {timeout:g} s)"
        return f"connection failed: {reason}"
    if isinstance(exc, http.client.IncompleteRead):
        return f"connection dropped after {len(exc.partial)} more bytes"
    return f"{type(exc).__name__}: {exc}"


_NET_ERRORS = (OSError, http.client.HTTPException)


def fetch_hub_manifest(hub: str, name: str, timeout: float) -> tuple[dict, str] | None:
    """The hub's own manifest, or ``None`` when the hub has none (a bytes-only mirror)."""
    origin = _hub_url(hub, MANIFEST_NAME)
    if _hub_kind(hub) == "file" and not _local_root(hub).is_dir():
        raise DownloadError(name, MANIFEST_NAME, f"the hub directory {_local_root(hub)} does not exist")
    try:
        with _open_remote(hub, MANIFEST_NAME, 0, timeout) as (stream, _):
            raw = stream.read()
    except _NotFound:
        return None
    except _NET_ERRORS as e:
        raise DownloadError(name, MANIFEST_NAME, f"cannot read the hub's manifest {origin}: {_describe(e, timeout)}") from e
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"invalid zoo manifest {origin}: not JSON ({e})") from None
    return validate_manifest(data, origin), origin


def _resolve_manifest(hub: str, name: str, root: Path, offline: bool, timeout: float) -> tuple[dict, str]:
    if _hub_kind(hub) == "hf":
        # a Hugging Face repository is a bytes-only mirror: the shipped manifest pins its files
        shipped = shipped_store() / MANIFEST_NAME
        return load_manifest(shipped), str(shipped)
    saved = root / ".hubs" / (sha256_bytes(hub.encode("utf-8"))[:16] + ".json")
    if offline:
        # Reading a local hub's manifest is not network access, and it is fresher than a copy.
        if _hub_kind(hub) == "file" and (_local_root(hub) / MANIFEST_NAME).exists():
            return load_manifest(_local_root(hub) / MANIFEST_NAME), str(_local_root(hub) / MANIFEST_NAME)
        if saved.exists():
            return load_manifest(saved), f"{saved} (cached copy of {hub})"
        shipped = shipped_store() / MANIFEST_NAME
        return load_manifest(shipped), str(shipped)
    try:
        found = fetch_hub_manifest(hub, name, timeout)
    except DownloadError:
        # Hub unreachable: what is already cached can still be verified against the copy
        # kept from the last successful contact; anything missing fails on its own.
        if not saved.exists():
            raise
        return load_manifest(saved), f"{saved} (cached copy of unreachable {hub})"
    if found is None:
        shipped = shipped_store() / MANIFEST_NAME
        found = load_manifest(shipped), f"{shipped} (hub {hub} has no {MANIFEST_NAME})"
    atomic_write_bytes(saved, dump_manifest(found[0]))
    return found


def trusted_manifest(hub: str | None = None, *, offline: bool | None = None, timeout: float | None = None) -> dict:
    """The manifest :func:`download` trusts for ``hub`` (default ``$ZOO_HUB`` or the shipped
    store): the hub's own, else the shipped one; offline, the copy kept from the last contact."""
    hub, offline, timeout, root = _settings(hub, offline, timeout, None)
    return _resolve_manifest(hub, "(manifest)", root, offline, timeout)[0]


def _settings(
    hub: str | None, offline: bool | None, timeout: float | None, cache_dir: str | os.PathLike | None
) -> tuple[str, bool, float, Path]:
    """The defaults of a hub access: hub URL, offline flag, stall timeout, cache root."""
    from zoo import paths

    hub = hub or default_hub()
    offline = paths.offline_mode() if offline is None else offline
    timeout = float(os.environ.get("ZOO_HUB_TIMEOUT") or DEFAULT_TIMEOUT) if timeout is None else timeout
    if cache_dir is not None:
        root = Path(cache_dir).expanduser()
        root.mkdir(parents=True, exist_ok=True)
    else:
        root = paths.cache_dir("checkpoints")
    return hub, offline, timeout, root


# ----------------------------------------------------------------------------- download


def _stamp_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.verified")


def _is_verified(final: Path, spec: dict) -> bool:
    """True when ``final`` holds exactly the manifest's bytes (hashing only when needed)."""
    try:
        st = final.stat()
    except FileNotFoundError:
        return False
    if st.st_size != spec["size"]:
        return False
    stamp = _stamp_path(final)
    try:
        seen = json.loads(stamp.read_text())
        if seen == {"sha256": spec["sha256"], "size": st.st_size, "mtime_ns": st.st_mtime_ns}:
            return True
    except (OSError, ValueError):
        pass
    if file_sha256(final) != spec["sha256"]:
        return False
    _write_stamp(final, spec["sha256"])
    return True


def _write_stamp(final: Path, sha: str) -> None:
    st = final.stat()
    record = {"sha256": sha, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    atomic_write_bytes(_stamp_path(final), json.dumps(record).encode())


def _progress_bar(total: int, initial: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=not enabled,
        leave=False,
        file=sys.stderr,
    )


def _transfer(hub: str, name: str, relpath: str, spec: dict, part: Path, progress: bool, timeout: float) -> bool:
    """Bring ``part`` up to the manifest's size from the hub; return True if it resumed."""
    size = spec["size"]
    remote = f"{name}/{relpath}"
    offset = part.stat().st_size if part.exists() else 0
    if offset > size:
        # Longer than the real file: it cannot be a prefix of it.
        part.unlink()
        offset = 0
    if offset == size and part.exists():
        return offset > 0  # already complete from an earlier attempt; only verification left
    try:
        opened = _open_remote(hub, remote, offset, timeout)
        with opened as (stream, start):
            resumed = start == offset and offset > 0
            with open(part, "ab" if resumed else "wb") as out, _progress_bar(size, start, f"{name}/{relpath}", progress) as bar:
                got = start
                try:
                    while True:
                        block = stream.read(CHUNK)
                        if not block:
                            break
                        got += len(block)
                        if got > size:
                            raise DownloadError(name, relpath, f"size mismatch: the hub sent more than the manifest's {size} bytes")
                        out.write(block)
                        bar.update(len(block))
                finally:
                    # Keep what arrived (for resume) even when the connection broke.
                    out.flush()
                    os.fsync(out.fileno())
    except _NotFound as e:
        raise DownloadError(name, relpath, f"not found on the hub ({e})") from None
    except _RangeNotSatisfiable:
        # The server will not continue this partial file: start over once, from byte 0.
        part.unlink(missing_ok=True)
        return _transfer(hub, name, relpath, spec, part, progress, timeout)
    except DownloadError:
        part.unlink(missing_ok=True)
        raise
    except _NET_ERRORS as e:
        raise DownloadError(name, relpath, f"{_describe(e, timeout)} from {_hub_url(hub, remote)}; partial file kept for resume") from e
    return resumed


def _fetch_file(hub: str, name: str, relpath: str, spec: dict, final: Path, *, offline: bool, progress: bool, timeout: float) -> None:
    if _is_verified(final, spec):
        return
    if offline:
        what = "a corrupt copy is" if final.exists() else "it is not"
        raise NotCachedError(name, relpath, f"offline mode and {what} cached at {final} (unset ZOO_OFFLINE to download)")
    final.parent.mkdir(parents=True, exist_ok=True)
    part = final.with_name(f".{final.name}.part")
    with locked(final.with_name(f".{final.name}.lock")):
        # Another process may have finished this file while we waited for the lock.
        if _is_verified(final, spec):
            return
        # A wrong file must never be readable under the final name, not even briefly later.
        final.unlink(missing_ok=True)
        _stamp_path(final).unlink(missing_ok=True)
        for attempt in (0, 1):
            resumed = _transfer(hub, name, relpath, spec, part, progress, timeout)
            got = part.stat().st_size
            if got < spec["size"]:
                raise DownloadError(
                    name,
                    relpath,
                    f"truncated: received {got} of {spec['size']} bytes from {_hub_url(hub, f'{name}/{relpath}')}; "
                    "partial file kept, run again to resume",
                )
            sha = file_sha256(part)
            if sha == spec["sha256"]:
                break
            part.unlink()
            if resumed and attempt == 0:
                # The kept prefix may be stale (the hub's file changed since): retry from 0.
                continue
            raise DownloadError(name, relpath, f"checksum mismatch: sha256 {sha} but the manifest says {spec['sha256']}; file deleted")
        os.replace(part, final)
        _write_stamp(final, spec["sha256"])


def download(
    name: str,
    *,
    hub: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    offline: bool | None = None,
    progress: bool = True,
    timeout: float | None = None,
) -> Path:
    """Fetch (or find in the cache) every file of zoo checkpoint ``name``; return its directory.

    ``hub``: URL root (default ``$ZOO_HUB``, else the shipped store). ``cache_dir``: root of
    the checkpoint cache (default ``$ZOO_HOME/checkpoints``). ``offline`` (default
    ``$ZOO_OFFLINE``): never contact the hub; fail with :class:`NotCachedError` if a file is
    missing. ``timeout``: seconds without data before giving up (default ``$ZOO_HUB_TIMEOUT``
    or 60). Raises :class:`UnknownCheckpointError` (a ``KeyError``) for unknown names,
    ``ValueError`` for unsafe names or file names, :class:`DownloadError` for anything that
    goes wrong on the way (404, timeout, truncation, size or checksum mismatch).
    """
    check_name(name)
    explicit = hub or os.environ.get("ZOO_HUB")
    hub, offline, timeout, root = _settings(hub, offline, timeout, cache_dir)
    manifest, origin = _resolve_manifest(hub, name, root, offline, timeout)
    entry = manifest["checkpoints"].get(name)
    if entry is None:
        if offline:
            raise NotCachedError(name, None, f"offline mode and the checkpoint is not cached (not in manifest {origin})")
        raise UnknownCheckpointError(name, list(manifest["checkpoints"]), origin)
    # A hub the user named is the only one; by default the project's store (a source checkout
    # holds the weights), then the hubs the manifest lists for this checkpoint, in order.
    hubs = [hub] if explicit else [hub, *entry.get("sources", [])]
    failures: list[str] = []
    for candidate in hubs:
        try:
            return _download_from(candidate, name, entry, root, offline=offline, progress=progress, timeout=timeout)
        except DownloadError as error:
            if explicit:
                raise
            failures.append(f"{candidate}: {error.cause}")
    kind = NotCachedError if offline else DownloadError
    hint = "" if entry.get("sources") else f"; the manifest lists no other hub for it: {NO_COPY_HINT}"
    raise kind(name, None, "no hub could supply it: " + "; ".join(failures) + hint)


# What to do where a published checkpoint has no copy within reach: a wheel carries the manifest
# and never the weights, which live in a source checkout's store/ (or wherever the manifest's
# sources, or ZOO_HUB, point).
NO_COPY_HINT = "set ZOO_HUB to a moezoo checkout's store/ folder, a mirror or hf://org/repo that has it"


def weights_source(name: str, entry: dict, hub: str | None = None) -> str | None:
    """Where :func:`download` would get the published checkpoint ``name`` (its manifest ``entry``)
    from, without fetching: ``"hub"`` (a hub the user named), ``"store"`` (the project's store
    holds the files), ``"cache"`` (downloaded before), the first of the manifest's ``sources``, or
    None (nowhere: the manifest lists it, but a pip install has no store; see :data:`NO_COPY_HINT`)."""
    if hub or os.environ.get("ZOO_HUB"):
        return "hub"
    store = shipped_store() / name
    if all((store / rel).is_file() and (store / rel).stat().st_size == spec["size"] for rel, spec in entry["files"].items()):
        return "store"
    cached = _settings(None, None, None, None)[3] / name
    if all(_stamp_path(cached / rel).is_file() for rel in entry["files"]):
        return "cache"
    return (entry.get("sources") or [None])[0]


def _download_from(hub: str, name: str, entry: dict, root: Path, *, offline: bool, progress: bool, timeout: float) -> Path:
    if _hub_kind(hub) == "hf":
        from zoo.hub.hf_source import download_from_hf

        return download_from_hf(hub, name, entry["files"], offline=offline, timeout=timeout)
    dest = root / name
    targets: list[tuple[str, dict, Path]] = []
    dest_real = dest.resolve()
    for relpath, spec in entry["files"].items():
        check_relpath(relpath)  # already validated with the manifest; kept as a last guard
        final = dest.joinpath(*relpath.split("/"))
        if not final.resolve().is_relative_to(dest_real):
            raise ValueError(f"zoo checkpoint {name!r}: file {relpath!r} would land outside {dest}")
        targets.append((relpath, spec, final))

    for relpath, spec, final in targets:
        _fetch_file(hub, name, relpath, spec, final, offline=offline, progress=progress, timeout=timeout)
    return dest
