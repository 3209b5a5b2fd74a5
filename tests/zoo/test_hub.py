"""zoo.hub against a loopback HTTP server that can 404, drop connections, stall or ignore ranges."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import random
import shutil
import socket
import stat
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

import zoo
from zoo import hub
from zoo.hub import DownloadError, NotCachedError, UnknownCheckpointError
from zoo.hub import fetch as hub_fetch
from zoo.hub import manifest as hub_manifest

NAME = "tiny-test"
FILES = {"model.safetensors": 300_000, "config.yaml": 1_000, "README.md": 64}


class _Behaviour:
    """What the test server does; tests flip these between requests."""

    def __init__(self, root: Path):
        self.root = root
        self.missing: set[str] = set()  # paths answered with 404
        self.truncate: set[str] = set()  # full Content-Length, then close after half
        self.stall: set[str] = set()  # send headers and a little, then hang
        self.ranges = True  # honour Range: bytes=N-
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.lock = threading.Lock()
        self.release = threading.Event()

    def file_requests(self, suffix: str = "") -> list[tuple[str, str | None]]:
        return [r for r in self.requests if not r[0].endswith("manifest.json") and r[0].endswith(suffix)]


def _handler(b: _Behaviour):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep pytest output clean
            pass

        def do_GET(self):
            rel = unquote(urlsplit(self.path).path).lstrip("/")
            rng = self.headers.get("Range")
            with b.lock:
                b.requests.append((rel, rng))
            path = b.root / rel
            if rel in b.missing or not path.is_file():
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = path.read_bytes()
            start = 0
            if rng and b.ranges:
                start = int(rng.strip().removeprefix("bytes=").split("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            if rel in b.truncate:
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if rel in b.stall:
                self.wfile.write(body[:100])
                self.wfile.flush()
                b.release.wait(10)
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler


@pytest.fixture
def release(tmp_path):
    rel = tmp_path / "release"
    rel.mkdir()
    rng = random.Random(0)
    for fn, size in FILES.items():
        (rel / fn).write_bytes(rng.randbytes(size))
    return rel


@pytest.fixture
def store(tmp_path, release):
    s = tmp_path / "store"
    hub.publish(release, NAME, store=s, source="random bytes for tests")
    return s


@pytest.fixture
def server(store, monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    b = _Behaviour(store)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _handler(b))
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    b.url = f"http://127.0.0.1:{srv.server_address[1]}"
    b.server = srv
    yield b
    b.release.set()
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    h = tmp_path / "home"
    monkeypatch.setenv("ZOO_HOME", str(h))
    monkeypatch.delenv("ZOO_HUB", raising=False)
    monkeypatch.delenv("ZOO_OFFLINE", raising=False)
    monkeypatch.delenv("ZOO_HUB_TIMEOUT", raising=False)
    return h


def _cache_files(home: Path) -> list[str]:
    return sorted(p.relative_to(home).as_posix() for p in home.rglob("*") if p.is_file())


def _assert_same(d: Path, release: Path):
    for fn in FILES:
        assert (d / fn).read_bytes() == (release / fn).read_bytes(), fn


# ----------------------------------------------------------------------------- manifest / publish


def test_publish_writes_manifest_entry(store, release):
    manifest = hub.load_manifest(store / "manifest.json")
    entry = manifest["checkpoints"][NAME]
    assert entry["source"] == "random bytes for tests"
    assert set(entry["files"]) == set(FILES)
    for fn, size in FILES.items():
        assert entry["files"][fn] == {
            "sha256": hashlib.sha256((release / fn).read_bytes()).hexdigest(),
            "size": size,
        }
        assert hub.file_sha256(store / NAME / fn) == entry["files"][fn]["sha256"]
    assert not [p for p in store.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock")]


def test_republish_replaces_files_and_keeps_other_entries(store, release, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.safetensors").write_bytes(b"x" * 10)
    hub.publish(other, "other-ckpt", store=store, source="second")
    (release / "README.md").unlink()
    entry = hub.publish(release, NAME, store=store, source="again")
    manifest = hub.load_manifest(store / "manifest.json")
    assert set(manifest["checkpoints"]) == {NAME, "other-ckpt"}
    assert manifest["checkpoints"][NAME] == entry and "README.md" not in entry["files"]
    assert not (store / NAME / "README.md").exists()


def test_shipped_manifest_is_valid():
    m = hub.load_manifest()
    assert m["version"] == 1 and isinstance(m["checkpoints"], dict)
    assert hub.default_hub() == hub.shipped_store().as_uri()
    # from a source checkout, the project's store folder (weights included); never package data
    assert hub.shipped_store() == Path(zoo.__file__).resolve().parents[1] / "store"
    assert all((hub.shipped_store() / name / "model.safetensors").is_file() for name in m["checkpoints"])


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda m: m.update(version=2), "version"),
        (lambda m: m["checkpoints"][NAME]["files"]["config.yaml"].update(sha256="abc"), "sha256"),
        (lambda m: m["checkpoints"][NAME]["files"]["config.yaml"].update(size=-1), "size"),
        (lambda m: m["checkpoints"][NAME].update(files={}), "files"),
    ],
)
def test_load_manifest_rejects_bad_fields(store, mutate, field):
    path = store / "manifest.json"
    m = json.loads(path.read_text())
    mutate(m)
    path.write_text(json.dumps(m))
    with pytest.raises(ValueError) as e:
        hub.load_manifest(path)
    assert str(path) in str(e.value) and field in str(e.value)


# ----------------------------------------------------------------------------- downloads


def test_good_download_over_http(server, release, home):
    d = hub.download(NAME, hub=server.url, progress=False)
    assert d == home / "checkpoints" / NAME
    _assert_same(d, release)
    entry = hub.load_manifest(server.root / "manifest.json")["checkpoints"][NAME]
    for fn, spec in entry["files"].items():
        assert hub.file_sha256(d / fn) == spec["sha256"]
    assert sorted(p.name for p in d.iterdir() if not p.name.startswith(".")) == sorted(FILES)
    assert not list(d.glob(".*.part"))


def test_progress_bar_does_not_break_download(server, release, capsys):
    d = hub.download(NAME, hub=server.url, progress=True)
    _assert_same(d, release)
    assert "tiny-test/model.safetensors" in capsys.readouterr().err


def test_unknown_name_lists_known(server):
    with pytest.raises(KeyError) as e:
        hub.download("nope", hub=server.url, progress=False)
    assert isinstance(e.value, UnknownCheckpointError)
    assert "nope" in str(e.value) and NAME in str(e.value)


def test_404_raises_and_leaves_nothing_final(server, home):
    server.missing.add(f"{NAME}/model.safetensors")
    with pytest.raises(DownloadError) as e:
        hub.download(NAME, hub=server.url, progress=False)
    msg = str(e.value)
    assert NAME in msg and "model.safetensors" in msg and "404" in msg
    d = home / "checkpoints" / NAME
    assert not (d / "model.safetensors").exists()
    assert not (d / ".model.safetensors.part").exists()


def test_truncated_download_then_resume_with_range(server, release, home):
    target = f"{NAME}/model.safetensors"
    server.truncate.add(target)
    with pytest.raises(DownloadError) as e:
        hub.download(NAME, hub=server.url, progress=False)
    assert "model.safetensors" in str(e.value) and NAME in str(e.value)
    d = home / "checkpoints" / NAME
    part = d / ".model.safetensors.part"
    assert not (d / "model.safetensors").exists()
    assert 0 < part.stat().st_size < FILES["model.safetensors"]
    kept = part.stat().st_size

    server.truncate.clear()
    server.requests.clear()
    d = hub.download(NAME, hub=server.url, progress=False)
    _assert_same(d, release)
    assert server.file_requests("model.safetensors") == [(target, f"bytes={kept}-")]
    assert not part.exists()


def test_resume_falls_back_to_full_download_without_range_support(server, release, home):
    target = f"{NAME}/model.safetensors"
    server.truncate.add(target)
    with pytest.raises(DownloadError):
        hub.download(NAME, hub=server.url, progress=False)
    server.truncate.clear()
    server.ranges = False
    server.requests.clear()
    d = hub.download(NAME, hub=server.url, progress=False)
    _assert_same(d, release)
    ((path, rng),) = server.file_requests("model.safetensors")
    assert rng is not None  # it asked; the server answered 200 with the whole file


def test_stale_partial_is_discarded_and_refetched(server, release, home):
    # A partial file whose prefix no longer matches the hub: resume fails the checksum,
    # so the hub retries once from byte 0 instead of failing forever.
    d = home / "checkpoints" / NAME
    d.mkdir(parents=True)
    (d / ".model.safetensors.part").write_bytes(b"\0" * 1000)
    out = hub.download(NAME, hub=server.url, progress=False)
    _assert_same(out, release)
    ranges = [r for _, r in server.file_requests("model.safetensors")]
    assert ranges == ["bytes=1000-", None]


def test_checksum_mismatch_deletes_everything(server, home):
    f = server.root / NAME / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[1234] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(DownloadError) as e:
        hub.download(NAME, hub=server.url, progress=False)
    msg = str(e.value)
    assert "checksum" in msg and "model.safetensors" in msg and NAME in msg
    d = home / "checkpoints" / NAME
    assert not (d / "model.safetensors").exists()
    assert not (d / ".model.safetensors.part").exists()


def test_size_mismatch_longer_file(server, home):
    f = server.root / NAME / "README.md"
    f.write_bytes(f.read_bytes() + b"extra")
    with pytest.raises(DownloadError) as e:
        hub.download(NAME, hub=server.url, progress=False)
    assert "size" in str(e.value) and "README.md" in str(e.value)
    d = home / "checkpoints" / NAME
    assert not (d / "README.md").exists() and not (d / ".README.md.part").exists()


def test_timeout_is_a_download_error(server, home):
    server.stall.add(f"{NAME}/model.safetensors")
    t0 = time.monotonic()
    with pytest.raises(DownloadError) as e:
        hub.download(NAME, hub=server.url, progress=False, timeout=0.5)
    assert time.monotonic() - t0 < 5
    assert "timed out" in str(e.value) and "model.safetensors" in str(e.value)
    assert not (home / "checkpoints" / NAME / "model.safetensors").exists()


def test_connection_refused_is_a_download_error(home):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(DownloadError) as e:
        hub.download(NAME, hub=f"http://127.0.0.1:{port}", progress=False, timeout=2)
    assert "manifest.json" in str(e.value)


@pytest.mark.parametrize("bad", ["../evil", "/tmp/evil-abs", "sub/../../evil", "a\\..\\evil", "C:evil"])
def test_escaping_file_names_are_refused(server, home, tmp_path, bad):
    mpath = server.root / "manifest.json"
    m = json.loads(mpath.read_text())
    m["checkpoints"][NAME]["files"][bad] = {"sha256": "0" * 64, "size": 3}
    mpath.write_text(json.dumps(m))
    (server.root / "evil").write_bytes(b"bad")
    before = sorted(p for p in tmp_path.rglob("*"))
    with pytest.raises(ValueError) as e:
        hub.download(NAME, hub=server.url, progress=False)
    assert repr(bad) in str(e.value) or bad in str(e.value)
    assert server.file_requests() == []  # refused before fetching any checkpoint file
    assert not (home / "evil").exists() and not (home / "checkpoints" / "evil").exists()
    assert not Path("/tmp/evil-abs").exists()
    new = [p for p in tmp_path.rglob("*") if p not in before]
    assert all(p.is_relative_to(home) for p in new)
    assert not [p for p in new if p.is_file() and p.parent != home / "checkpoints" / ".hubs"]


def test_bad_checkpoint_name_refused(home):
    with pytest.raises(ValueError):
        hub.download("../x", progress=False)


def test_cached_file_not_downloaded_again(server, release):
    hub.download(NAME, hub=server.url, progress=False)
    assert len(server.file_requests()) == len(FILES)
    server.requests.clear()
    d = hub.download(NAME, hub=server.url, progress=False)
    _assert_same(d, release)
    assert server.file_requests() == []


def test_corrupt_cached_file_is_refetched(server, release, home):
    d = hub.download(NAME, hub=server.url, progress=False)
    (d / "config.yaml").write_bytes(b"tampered")
    server.requests.clear()
    hub.download(NAME, hub=server.url, progress=False)
    _assert_same(d, release)
    assert [p for p, _ in server.file_requests()] == [f"{NAME}/config.yaml"]


def test_offline_uses_cache_without_requests(server, release, monkeypatch):
    hub.download(NAME, hub=server.url, progress=False)
    server.requests.clear()
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    d = hub.download(NAME, hub=server.url, progress=False)
    _assert_same(d, release)
    assert server.requests == []


def test_unreachable_hub_falls_back_to_cache(store, release, home, tmp_path):
    copy = tmp_path / "gone"
    shutil.copytree(store, copy)
    hub.download(NAME, hub=copy.as_uri(), progress=False)
    shutil.rmtree(copy)  # the hub disappears: the cached copy of its manifest is used
    d = hub.download(NAME, hub=copy.as_uri(), progress=False)
    _assert_same(d, release)
    (d / "README.md").unlink()
    with pytest.raises(DownloadError) as e:
        hub.download(NAME, hub=copy.as_uri(), progress=False)
    assert "README.md" in str(e.value) and "not found" in str(e.value)
    with pytest.raises(DownloadError) as e:
        hub.download(NAME, hub=copy.as_uri(), progress=False, cache_dir=tmp_path / "fresh")
    assert "does not exist" in str(e.value)


def test_unreachable_http_hub_falls_back_to_cache(server, release):
    hub.download(NAME, hub=server.url, progress=False)
    server.server.shutdown()
    server.server.server_close()
    d = hub.download(NAME, hub=server.url, progress=False, timeout=2)
    _assert_same(d, release)
    (d / "config.yaml").unlink()
    with pytest.raises(DownloadError) as e:
        hub.download(NAME, hub=server.url, progress=False, timeout=2)
    assert "config.yaml" in str(e.value) and "connection failed" in str(e.value)


def test_offline_without_cache_fails_clearly(server):
    with pytest.raises(NotCachedError) as e:
        hub.download(NAME, hub=server.url, offline=True, progress=False)
    assert "offline" in str(e.value) and "not cached" in str(e.value) and NAME in str(e.value)
    assert server.requests == []


def test_offline_missing_one_file_names_it(server, monkeypatch):
    d = hub.download(NAME, hub=server.url, progress=False)
    (d / "config.yaml").unlink()
    server.requests.clear()
    with pytest.raises(NotCachedError) as e:
        hub.download(NAME, hub=server.url, offline=True, progress=False)
    assert "config.yaml" in str(e.value) and "not cached" in str(e.value)
    assert server.requests == []


def test_zoo_hub_env_override(server, release, monkeypatch):
    monkeypatch.setenv("ZOO_HUB", server.url)
    d = hub.download(NAME, progress=False)
    _assert_same(d, release)
    assert len(server.file_requests()) == len(FILES)


def test_file_hub_and_explicit_cache_dir(store, release, tmp_path, home):
    cache = tmp_path / "elsewhere"
    d = hub.download(NAME, hub=store.as_uri(), cache_dir=cache, progress=False)
    assert d == cache / NAME
    _assert_same(d, release)
    assert not (home / "checkpoints" / NAME).exists()


def test_file_hub_missing_file(store, home):
    (store / NAME / "config.yaml").unlink()
    with pytest.raises(DownloadError) as e:
        hub.download(NAME, hub=store.as_uri(), progress=False)
    assert "config.yaml" in str(e.value) and "not found" in str(e.value)


def test_hub_without_manifest_uses_shipped_manifest(server, release, monkeypatch, tmp_path):
    # A bytes-only mirror: checksums come from the shipped manifest.
    shipped = tmp_path / "shipped"
    shutil.copytree(server.root, shipped)
    monkeypatch.setattr(hub_fetch, "shipped_store", lambda: shipped)
    (server.root / "manifest.json").unlink()
    d = hub.download(NAME, hub=server.url, progress=False)
    _assert_same(d, release)


def test_concurrent_downloads_of_same_checkpoint(server, release):
    errors: list[BaseException] = []

    def run():
        try:
            hub.download(NAME, hub=server.url, progress=False)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    _assert_same(Path(os.environ["ZOO_HOME"]) / "checkpoints" / NAME, release)
    # The lock serialises fetchers: each file crosses the wire once.
    counts = {fn: len(server.file_requests(fn)) for fn in FILES}
    assert counts == {fn: 1 for fn in FILES}


@pytest.fixture
def fake_hf(store, monkeypatch):
    """huggingface_hub.hf_hub_download served from a copy of ``store`` laid out as a snapshot,
    recording each call; the test store stands in as the shipped manifest (a repo has none)."""
    import huggingface_hub

    snapshot = store.parent / "hf-snapshot"
    shutil.copytree(store, snapshot, ignore=shutil.ignore_patterns("manifest.json", ".*"))
    calls = []

    def hf_hub_download(repo_id, filename, *, subfolder=None, revision=None, local_files_only=False, etag_timeout=None):
        calls.append({"repo_id": repo_id, "filename": filename, "subfolder": subfolder, "revision": revision, "offline": local_files_only})
        path = snapshot / (subfolder or "") / filename
        if not path.is_file():
            raise FileNotFoundError(f"404 {repo_id}/{subfolder}/{filename}")
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    monkeypatch.setattr(hub_fetch, "shipped_store", lambda: store)
    return snapshot, calls


def test_hf_hub_downloads_through_huggingface_hub_and_verifies(fake_hf, release):
    snapshot, calls = fake_hf
    out = hub.download(NAME, hub="hf://moezoo/checkpoints@v1", progress=False)
    _assert_same(out, release)
    assert out == snapshot / NAME  # huggingface_hub's cache is the one copy: nothing copied into ours
    assert {(c["repo_id"], c["revision"], c["subfolder"], c["offline"]) for c in calls} == {("moezoo/checkpoints", "v1", NAME, False)}
    assert sorted(c["filename"] for c in calls) == sorted(FILES)
    # offline: huggingface_hub is asked for its cache only
    calls.clear()
    hub.download(NAME, hub="hf://moezoo/checkpoints@v1", progress=False, offline=True)
    assert calls and all(c["offline"] for c in calls)
    # a file that is not the one the manifest pins is refused
    data = bytearray((snapshot / NAME / "config.yaml").read_bytes())
    data[0] ^= 0xFF
    (snapshot / NAME / "config.yaml").write_bytes(bytes(data))
    with pytest.raises(DownloadError, match="config.yaml.*sha256 mismatch from hf://moezoo/checkpoints@v1"):
        hub.download(NAME, hub="hf://moezoo/checkpoints@v1", progress=False)


def test_default_hub_falls_back_to_the_sources_the_manifest_lists(fake_hf, store, release, monkeypatch):
    snapshot, calls = fake_hf
    monkeypatch.setattr(hub_fetch, "default_hub", lambda: store.as_uri())
    manifest = json.loads((store / "manifest.json").read_text())
    manifest["checkpoints"][NAME]["sources"] = ["hf://moezoo/checkpoints@v2"]
    (store / "manifest.json").write_text(json.dumps(manifest))
    shutil.rmtree(store / NAME)  # what a wheel holds: the manifest, no weights
    out = hub.download(NAME, progress=False)  # default hub: the store, then its sources
    _assert_same(out, release)
    assert calls and all(c["revision"] == "v2" for c in calls)
    # republishing keeps where else the checkpoint is hosted
    hub.publish(release, NAME, store=store, source="again")
    assert hub.load_manifest(store / "manifest.json")["checkpoints"][NAME]["sources"] == ["hf://moezoo/checkpoints@v2"]


def test_without_weights_or_sources_the_error_says_what_to_do(store, monkeypatch):
    monkeypatch.setattr(hub_fetch, "shipped_store", lambda: store)
    monkeypatch.setattr(hub_fetch, "default_hub", lambda: store.as_uri())
    shutil.rmtree(store / NAME)
    with pytest.raises(DownloadError, match="no hub could supply it: .*not found.*lists no other hub for it: set ZOO_HUB"):
        hub.download(NAME, progress=False)


@pytest.mark.parametrize("bad", ["s3://bucket/x", "hf://not-a-repo", "ftp://host/x", 3])
def test_manifest_sources_must_be_hub_urls(store, bad):
    manifest = json.loads((store / "manifest.json").read_text())
    manifest["checkpoints"][NAME]["sources"] = [bad]
    with pytest.raises(ValueError, match=f"checkpoint '{NAME}': source .* is not an hf://"):
        hub_manifest.validate_manifest(manifest, "test")


def test_published_and_downloaded_files_get_the_usual_permissions(tmp_path, release):
    """tempfile makes private files and folders; a store or cache shared with a group must get what a
    plain open or mkdir gives under the umask, like any other file."""
    from zoo.files import process_umask

    store = tmp_path / "shared-store"
    hub.publish(release, NAME, store=store, source="random bytes for tests")
    local = Path(hub.download(NAME, hub=store.as_uri(), progress=False))
    folder, file = 0o777 & ~process_umask(), 0o666 & ~process_umask()
    assert stat.S_IMODE((store / NAME).stat().st_mode) == folder
    for path in [store / "manifest.json", *(store / NAME).iterdir(), *local.iterdir()]:
        assert stat.S_IMODE(path.stat().st_mode) == file, path


def test_publish_to_hf_uploads_the_store_and_downloads_come_back_from_it(store, release, tmp_path, monkeypatch, capsys):
    """zoo publish --to hf:org/repo against a mocked huggingface_hub: the files land in the layout
    downloads read, the manifest records the repository as a source, and a store without the
    weights (a pip install) then gets them from there, verified."""
    import huggingface_hub

    from zoo.cli import main

    remote = tmp_path / "remote"
    uploads = []

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, exist_ok=False):
            (remote / repo_id).mkdir(parents=True, exist_ok=True)

        def create_branch(self, repo_id, branch, exist_ok=False):
            pass

        def upload_folder(self, *, repo_id, folder_path, path_in_repo=None, allow_patterns=None, revision=None, commit_message=""):
            uploads.append({"repo": repo_id, "patterns": allow_patterns, "revision": revision})
            for path in Path(folder_path).rglob("*"):
                rel = path.relative_to(folder_path).as_posix()
                if path.is_file() and any(fnmatch.fnmatch(rel, p) for p in allow_patterns):
                    target = remote / repo_id / (path_in_repo or "") / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, target)

    def hf_hub_download(repo_id, filename, *, subfolder=None, revision=None, local_files_only=False, etag_timeout=None):
        path = remote / repo_id / (subfolder or "") / filename
        if not path.is_file():
            raise FileNotFoundError(f"404 {repo_id}/{subfolder}/{filename}")
        return str(path)

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    assert main(["publish", "--to", "hf:moezoo/store", "--store", str(store)]) == 0
    assert "uploaded tiny-test to hf://moezoo/store" in capsys.readouterr().out
    assert uploads == [{"repo": "moezoo/store", "patterns": [f"{NAME}/**"], "revision": None}]
    assert sorted(p.name for p in (remote / "moezoo/store" / NAME).iterdir()) == sorted(FILES)
    assert hub.load_manifest(store / "manifest.json")["checkpoints"][NAME]["sources"] == ["hf://moezoo/store"]
    # a pip install: the manifest without the weights; the download falls back to the repository
    monkeypatch.setattr(hub_fetch, "default_hub", lambda: store.as_uri())
    monkeypatch.setattr(hub_fetch, "shipped_store", lambda: store)
    shutil.rmtree(store / NAME)
    _assert_same(hub.download(NAME, progress=False), release)
    # a store whose files do not match its manifest is refused before anything is uploaded
    uploads.clear()
    assert main(["publish", "--to", "hf:moezoo/store", "--store", str(store)]) == 1
    assert "missing or not the file the manifest pins" in capsys.readouterr().err and not uploads
