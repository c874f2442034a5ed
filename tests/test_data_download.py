"""download_mvtec: loopback HTTP (with and without Range), checksums, safe extraction, offline message.

Every archive is built here; the only server is http.server on 127.0.0.1.
"""

import hashlib
import io
import socket
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rdtutorial.data import DownloadError, MVTecAD, download_mvtec
from rdtutorial.data.download import ARCHIVE_NAME, safe_extract

CATEGORIES = ("bottle", "grid", "zipper")


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes = b"", **fields) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in fields.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data) if data else None)


def _fake_mvtec(path: Path) -> tuple[Path, str]:
    """A tar.xz shaped like the real archive: ./<category>/{train,test,ground_truth}/..., plus license.txt."""
    with tarfile.open(path, "w:xz") as tar:
        _add(tar, "./license.txt", b"CC BY-NC-SA 4.0")
        for i, c in enumerate(CATEGORIES):
            _add(tar, f"./{c}/train/good/000.png", _png(10 * i))
            _add(tar, f"./{c}/train/good/001.png", _png(10 * i + 1))
            _add(tar, f"./{c}/test/good/000.png", _png(10 * i + 2))
            _add(tar, f"./{c}/test/broken/000.png", _png(10 * i + 3))
            mask = io.BytesIO()
            Image.fromarray(np.pad(np.full((4, 4), 255, np.uint8), 6)).save(mask, "PNG")
            _add(tar, f"./{c}/ground_truth/broken/000_mask.png", mask.getvalue())
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


class _Server:
    """Serves one byte string at /archive on 127.0.0.1, honouring Range unless told not to."""

    def __init__(self, payload: bytes, honour_range: bool = True):
        self.payload, self.honour_range, self.requests = payload, honour_range, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append(rng)
                body, status = server.payload, 200
                if rng and server.honour_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.end_headers()
                        return
                    body, status = body[start:], 206
                self.send_response(status)
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(server.payload) - 1}/{len(server.payload)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/archive"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/archive"


@pytest.fixture
def archive(tmp_path):
    return _fake_mvtec(tmp_path / "served.tar.xz")


def test_downloads_verifies_and_extracts_only_requested_categories(tmp_path, archive):
    path, digest = archive
    root = tmp_path / "mvtec"
    with _Server(path.read_bytes()) as server:
        assert download_mvtec(root, ["bottle", "zipper"], url=server.url, sha256=digest) == root
    assert server.requests == [None]
    assert (root / ARCHIVE_NAME).read_bytes() == path.read_bytes()
    assert sorted(p.name for p in root.iterdir()) == sorted([ARCHIVE_NAME, "bottle", "zipper", "license.txt"])
    test = MVTecAD(root, "bottle", "test", image_size=16)
    assert test.labels == [1, 0] and test[0]["mask"].sum() == 16


def test_nothing_to_do_when_categories_are_complete(tmp_path, archive):
    path, digest = archive
    root = tmp_path / "mvtec"
    with _Server(path.read_bytes()) as server:
        download_mvtec(root, ["grid"], url=server.url, sha256=digest)
    (root / ARCHIVE_NAME).unlink()
    assert download_mvtec(root, ["grid"], url=_closed_port_url(), sha256=digest) == root  # no network needed


def test_incomplete_category_is_completed_from_the_kept_archive(tmp_path, archive):
    path, digest = archive
    root = tmp_path / "mvtec"
    with _Server(path.read_bytes()) as server:
        download_mvtec(root, ["grid"], url=server.url, sha256=digest)
        for f in (root / "grid/train/good").iterdir():
            f.unlink()
        download_mvtec(root, ["grid", "bottle"], url=server.url, sha256=digest)
    assert server.requests == [None]  # the second call reused the archive
    assert len(MVTecAD(root, "grid")) == 2 and len(MVTecAD(root, "bottle")) == 2


def test_resumes_a_partial_download_with_range(tmp_path, archive):
    path, digest = archive
    payload = path.read_bytes()
    root = tmp_path / "mvtec"
    root.mkdir()
    (root / (ARCHIVE_NAME + ".part")).write_bytes(payload[:1000])
    with _Server(payload) as server:
        download_mvtec(root, ["grid"], url=server.url, sha256=digest)
    assert server.requests == ["bytes=1000-"]
    assert (root / ARCHIVE_NAME).read_bytes() == payload
    assert not (root / (ARCHIVE_NAME + ".part")).exists()


def test_restarts_when_the_server_ignores_range(tmp_path, archive):
    path, digest = archive
    payload = path.read_bytes()
    root = tmp_path / "mvtec"
    root.mkdir()
    (root / (ARCHIVE_NAME + ".part")).write_bytes(b"x" * 1000)  # garbage: appending would break the hash
    with _Server(payload, honour_range=False) as server:
        download_mvtec(root, ["grid"], url=server.url, sha256=digest)
    assert server.requests == ["bytes=1000-"]
    assert (root / ARCHIVE_NAME).read_bytes() == payload


def test_a_complete_part_file_gets_416_and_is_used(tmp_path, archive):
    path, digest = archive
    root = tmp_path / "mvtec"
    root.mkdir()
    (root / (ARCHIVE_NAME + ".part")).write_bytes(path.read_bytes())
    with _Server(path.read_bytes()) as server:
        download_mvtec(root, ["zipper"], url=server.url, sha256=digest)
    assert len(MVTecAD(root, "zipper")) == 2


def test_wrong_hash_extracts_nothing_and_deletes_the_download(tmp_path, archive):
    path, _ = archive
    root = tmp_path / "mvtec"
    with _Server(path.read_bytes()) as server:
        with pytest.raises(DownloadError, match="SHA-256"):
            download_mvtec(root, ["grid"], url=server.url, sha256="0" * 64)
    assert list(root.iterdir()) == []


def test_manually_placed_archive_is_verified_and_used_offline(tmp_path, archive):
    path, digest = archive
    root = tmp_path / "mvtec"
    root.mkdir()
    (root / ARCHIVE_NAME).write_bytes(path.read_bytes())
    download_mvtec(root, ["bottle"], url=_closed_port_url(), sha256=digest)
    assert len(MVTecAD(root, "bottle")) == 2
    with pytest.raises(DownloadError, match=rf"{ARCHIVE_NAME} has SHA-256 .* expected {'1' * 64}.*Delete it"):
        download_mvtec(root, ["grid"], url=_closed_port_url(), sha256="1" * 64)


def test_offline_error_explains_manual_placement(tmp_path):
    root = tmp_path / "mvtec"
    with pytest.raises(DownloadError) as err:
        download_mvtec(root, ["bottle"], url=_closed_port_url(), timeout=5)
    message = str(err.value)
    assert "offline" in message and str(root / ARCHIVE_NAME) in message
    assert "verify" in message and "cf4313b13603bec6" in message


def test_unknown_category_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"'bottel'.*'bottle'"):
        download_mvtec(tmp_path, ["bottel"])


def test_category_absent_from_archive_is_named(tmp_path, archive):
    path, digest = archive
    root = tmp_path / "mvtec"
    root.mkdir()
    (root / ARCHIVE_NAME).write_bytes(path.read_bytes())
    with pytest.raises(DownloadError, match="'screw'"):
        download_mvtec(root, ["screw"], url=_closed_port_url(), sha256=digest)
    assert sorted(p.name for p in root.iterdir()) == [ARCHIVE_NAME]


def _malicious(path: Path, members) -> Path:
    with tarfile.open(path, "w:xz") as tar:
        _add(tar, "bottle/train/good/000.png", _png(0))
        for name, fields in members:
            _add(tar, name, b"pwned" if not fields else b"", **fields)
    return path


MALICIOUS = {
    "dotdot": [("bottle/../../escaped.txt", {})],
    "absolute": [("/tmp/rdtutorial-escaped.txt", {})],
    "symlink out": [("bottle/link", {"type": tarfile.SYMTYPE, "linkname": "../../.."})],
    "absolute symlink": [("bottle/link", {"type": tarfile.SYMTYPE, "linkname": "/etc"})],
    "hardlink out": [("bottle/hard", {"type": tarfile.LNKTYPE, "linkname": "../outside.txt"})],
    "chained symlinks": [
        ("bottle/a/b/up", {"type": tarfile.SYMTYPE, "linkname": "../.."}),
        ("bottle/esc", {"type": tarfile.SYMTYPE, "linkname": "a/b/up/../../.."}),  # lexically inside
    ],
    "write through chained symlinks": [
        ("bottle/a/b/up", {"type": tarfile.SYMTYPE, "linkname": "../.."}),
        ("bottle/a/b/up2", {"type": tarfile.SYMTYPE, "linkname": "up/../.."}),
        ("bottle/a/b/up2/x.txt", {}),
    ],
    "device": [("bottle/dev", {"type": tarfile.CHRTYPE})],
}


@pytest.mark.parametrize("data_filter", [True, False], ids=["with-data-filter", "own-checks-only"])
@pytest.mark.parametrize("kind", sorted(MALICIOUS))
def test_unsafe_archives_are_refused_and_leave_nothing(tmp_path, monkeypatch, kind, data_filter):
    if not data_filter:  # as on Python 3.10/3.11 builds without tarfile's data filter
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    elif not hasattr(tarfile, "data_filter"):
        pytest.skip("this Python has no tarfile data filter")
    archive = _malicious(tmp_path / "evil.tar.xz", MALICIOUS[kind])
    dest = tmp_path / "a" / "b" / "dest"
    dest.mkdir(parents=True)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(DownloadError, match="refusing"):
        safe_extract(archive, dest, ["bottle"])
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert not Path("/tmp/rdtutorial-escaped.txt").exists()


def test_links_that_stay_inside_are_allowed(tmp_path):
    archive = _malicious(
        tmp_path / "ok.tar.xz",
        [
            ("bottle/alias.png", {"type": tarfile.SYMTYPE, "linkname": "train/good/000.png"}),
            ("bottle/copy.png", {"type": tarfile.LNKTYPE, "linkname": "bottle/train/good/000.png"}),
        ],
    )
    safe_extract(archive, tmp_path / "dest", ["bottle"])
    original = (tmp_path / "dest/bottle/train/good/000.png").read_bytes()
    assert (tmp_path / "dest/bottle/alias.png").read_bytes() == original
    assert (tmp_path / "dest/bottle/copy.png").read_bytes() == original


def test_download_refuses_a_malicious_archive_with_a_matching_hash(tmp_path):
    archive = _malicious(tmp_path / "evil.tar.xz", MALICIOUS["dotdot"])
    root = tmp_path / "mvtec"
    root.mkdir()
    (root / ARCHIVE_NAME).write_bytes(archive.read_bytes())
    with pytest.raises(DownloadError, match="refusing"):
        download_mvtec(root, ["bottle"], url=_closed_port_url(), sha256=hashlib.sha256(archive.read_bytes()).hexdigest())
    assert sorted(p.name for p in root.iterdir()) == [ARCHIVE_NAME]
    assert not (tmp_path / "escaped.txt").exists()
