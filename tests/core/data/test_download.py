"""Tests for :mod:`fedrec.core.data.download` against a local HTTP server.

The MovieLens files are taken from the shared data folder next to the
repository (never copied into it); archives are built under ``tmp_path``.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import socket
import threading
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedrec.core.data.download import (
    ML100K_FOLDER,
    ML100K_UDATA_MD5,
    ML100K_URL,
    DownloadError,
    download_ml100k,
    md5_of,
)

SHARED_ML100K = (
    Path(__file__).resolve().parents[3].parent / "shared" / "data" / "ml-100k"
)
# Files packed into the test archives (u.data plus a few small companions).
ARCHIVE_FILES = ("u.data", "u.item", "u.user", "u.genre", "u.occupation", "README")


def _require_shared_data() -> Path:
    """Return the shared ml-100k folder or skip the test if it is absent."""
    if not (SHARED_ML100K / "u.data").is_file():
        pytest.skip(f"MovieLens 100K not available at {SHARED_ML100K}")
    return SHARED_ML100K


@pytest.fixture(scope="module")
def member_bytes() -> dict[str, bytes]:
    """Contents of the archive members, keyed by archive path."""
    src = _require_shared_data()
    members = {}
    for name in ARCHIVE_FILES:
        path = src / name
        if path.is_file():
            members[f"{ML100K_FOLDER}/{name}"] = path.read_bytes()
    return members


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    """Build an in-memory zip archive (stored, for speed) from ``members``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Static file handler that does not log requests to stderr."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Discard log lines."""


class _Server:
    """A local static HTTP server serving files from a directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()
        self.stopped = False

    def publish(self, name: str, data: bytes) -> str:
        """Serve ``data`` under ``name`` and return its URL."""
        (self.root / name).write_bytes(data)
        return self.url(name)

    def url(self, name: str) -> str:
        """Return the URL of ``name`` on this server."""
        return f"http://127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        """Shut the server down (idempotent)."""
        if not self.stopped:
            self.stopped = True
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join(timeout=5)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[_Server]:
    """A running local HTTP server, shut down after the test."""
    root = tmp_path / "www"
    root.mkdir()
    srv = _Server(root)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to open a URL fail the test."""

    def _fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("download_ml100k must not access the network here")

    monkeypatch.setattr(urllib.request, "urlopen", _fail)


def _assert_nothing_left(target: Path, existed_before: bool) -> None:
    """Check a failed call left no trace in (or of) ``target``."""
    if existed_before:
        assert target.is_dir()
        assert sorted(p.name for p in target.iterdir()) == []
    else:
        assert not target.exists()


# --------------------------------------------------------------------------- #


def test_constants() -> None:
    assert ML100K_URL.startswith("https://files.grouplens.org/")
    assert ML100K_URL.endswith("/ml-100k.zip")
    assert ML100K_FOLDER == "ml-100k"
    assert len(ML100K_UDATA_MD5) == 32


def test_md5_of_matches_hashlib(tmp_path: Path) -> None:
    data = bytes(range(256)) * 1000
    path = tmp_path / "blob"
    path.write_bytes(data)
    expected = hashlib.md5(data).hexdigest()
    assert md5_of(path) == expected
    assert md5_of(path, chunk_size=7) == expected


def test_download_extracts_and_verifies(
    tmp_path: Path, server: _Server, member_bytes: dict[str, bytes]
) -> None:
    url = server.publish("ml-100k.zip", _zip_bytes(member_bytes))
    target = tmp_path / "data" / "nested"  # parents do not exist yet

    result = download_ml100k(target, url=url, timeout_s=10)

    assert result == target / "ml-100k"
    assert md5_of(result / "u.data") == ML100K_UDATA_MD5
    for name, data in member_bytes.items():
        assert (target / name).read_bytes() == data
    # Only the installed folder remains: no temporary leftovers.
    assert [p.name for p in target.iterdir()] == ["ml-100k"]


def test_verified_copy_is_reused_without_network(
    tmp_path: Path,
    server: _Server,
    member_bytes: dict[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = server.publish("ml-100k.zip", _zip_bytes(member_bytes))
    target = tmp_path / "target"
    first = download_ml100k(target, url=url, timeout_s=10)
    server.stop()

    def _fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("network accessed although a verified copy exists")

    monkeypatch.setattr(urllib.request, "urlopen", _fail)
    second = download_ml100k(target, url="http://127.0.0.1:9/bogus.zip")
    assert second == first == target / "ml-100k"
    assert md5_of(second / "u.data") == ML100K_UDATA_MD5


def test_checksum_mismatch(
    tmp_path: Path, server: _Server, member_bytes: dict[str, bytes]
) -> None:
    members = dict(member_bytes)
    udata = bytearray(members["ml-100k/u.data"])
    udata[100] = ord("9") if udata[100] != ord("9") else ord("8")
    members["ml-100k/u.data"] = bytes(udata)
    url = server.publish("ml-100k.zip", _zip_bytes(members))
    target = tmp_path / "target"
    target.mkdir()

    with pytest.raises(DownloadError) as info:
        download_ml100k(target, url=url, timeout_s=10)

    msg = str(info.value)
    assert "Checksum mismatch" in msg
    assert ML100K_UDATA_MD5 in msg
    assert hashlib.md5(bytes(udata)).hexdigest() in msg
    assert url in msg
    _assert_nothing_left(target, existed_before=True)


def test_missing_udata(
    tmp_path: Path, server: _Server, member_bytes: dict[str, bytes]
) -> None:
    members = {k: v for k, v in member_bytes.items() if not k.endswith("/u.data")}
    url = server.publish("ml-100k.zip", _zip_bytes(members))
    target = tmp_path / "target"

    with pytest.raises(DownloadError, match="does not contain ml-100k/u.data"):
        download_ml100k(target, url=url, timeout_s=10)
    _assert_nothing_left(target, existed_before=False)


def test_not_a_zip(tmp_path: Path, server: _Server) -> None:
    url = server.publish("ml-100k.zip", b"<html>definitely not a zip</html>\n" * 50)
    target = tmp_path / "a" / "b"

    with pytest.raises(DownloadError, match="not a valid zip"):
        download_ml100k(target, url=url, timeout_s=10)
    _assert_nothing_left(target, existed_before=False)
    # The parents created by the call are gone too.
    assert not (tmp_path / "a").exists()


def test_http_404(tmp_path: Path, server: _Server) -> None:
    url = server.url("missing.zip")
    target = tmp_path / "target"

    with pytest.raises(DownloadError, match="HTTP 404"):
        download_ml100k(target, url=url, timeout_s=10)
    _assert_nothing_left(target, existed_before=False)


def test_connection_refused(tmp_path: Path, server: _Server) -> None:
    url = server.url("ml-100k.zip")
    server.stop()  # nothing listens on the port any more
    target = tmp_path / "target"
    target.mkdir()

    with pytest.raises(DownloadError, match="failed"):
        download_ml100k(target, url=url, timeout_s=5)
    _assert_nothing_left(target, existed_before=True)


def test_timeout(tmp_path: Path) -> None:
    # A listening socket that never answers: the connection is accepted by the
    # kernel backlog but no response ever comes.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/ml-100k.zip"
        target = tmp_path / "target"
        with pytest.raises(DownloadError, match="(?i)timed out"):
            download_ml100k(target, url=url, timeout_s=0.2)
    _assert_nothing_left(target, existed_before=False)


@pytest.mark.parametrize(
    "evil_name",
    ["../evil.txt", "ml-100k/../../evil.txt", "../../../evil.txt", "ABSOLUTE"],
)
def test_zip_slip_rejected(
    tmp_path: Path,
    server: _Server,
    member_bytes: dict[str, bytes],
    evil_name: str,
) -> None:
    outside = tmp_path / "outside" / "evil.txt"
    if evil_name == "ABSOLUTE":
        evil_name = str(outside)
    members = dict(member_bytes)
    members[evil_name] = b"pwned\n"
    url = server.publish("ml-100k.zip", _zip_bytes(members))
    target = tmp_path / "deep" / "target"

    with pytest.raises(DownloadError) as info:
        download_ml100k(target, url=url, timeout_s=10)

    assert repr(evil_name) in str(info.value)
    assert not outside.exists()
    assert not any(p.name == "evil.txt" for p in tmp_path.rglob("*"))
    _assert_nothing_left(target, existed_before=False)
    assert not (tmp_path / "deep").exists()


@pytest.mark.parametrize("kind", ["empty", "wrong_udata", "other_files", "file"])
def test_existing_unverified_folder_is_not_touched(
    tmp_path: Path, no_network: None, kind: str
) -> None:
    target = tmp_path / "target"
    target.mkdir()
    existing = target / "ml-100k"
    if kind == "file":
        existing.write_text("user file\n")
    else:
        existing.mkdir()
        if kind == "wrong_udata":
            (existing / "u.data").write_text("1\t2\t3\t4\n")
        elif kind == "other_files":
            (existing / "notes.txt").write_text("mine\n")
    before = {
        p.relative_to(target): (p.read_bytes() if p.is_file() else None)
        for p in target.rglob("*")
    }

    with pytest.raises(DownloadError, match="[Rr]emove it"):
        download_ml100k(target, url="http://127.0.0.1:9/ml-100k.zip")

    after = {
        p.relative_to(target): (p.read_bytes() if p.is_file() else None)
        for p in target.rglob("*")
    }
    assert after == before
