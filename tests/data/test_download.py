"""download_celeba against a local HTTP server on 127.0.0.1 that serves a zip built from the sample.

The server supports Range (206 + Content-Range, 416), and can be told to drop the connection
after K bytes, to ignore Range, to serve corrupted bytes, or to answer an error status first.
"""

from __future__ import annotations

import hashlib
import http.server
import shutil
import socket
import threading
import urllib.parse
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from facegan.data import download as dl
from facegan.data.download import RemoteFile, download_celeba, file_md5, resolve_mirror
from facegan.errors import FaceganError

ANNOTATIONS = ("list_attr_celeba.txt", "list_eval_partition.txt", "identity_CelebA.txt")
N_IMAGES = 50
ZIP = "img_align_celeba.zip"


# --------------------------------------------------------------------------- served files


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory, celeba_dir: Path) -> dict[str, Path]:
    """Name -> file to serve: a zip of 50 sample images (official layout) and the annotations.

    The sample is conftest's (FACEGAN_SHARED_DATA, else ../shared/data): without it these tests
    skip with the path they looked in, as every test of the real data does, rather than serve
    stand-ins. The annotation files are served straight from it (read-only, never copied).
    """
    images = sorted((celeba_dir / "img_align_celeba").glob("*.jpg"))[:N_IMAGES]
    missing = [name for name in ANNOTATIONS if not (celeba_dir / name).is_file()]
    if len(images) < N_IMAGES or missing:
        pytest.fail(f"the CelebA sample at {celeba_dir} is incomplete: it has {len(images)} JPEGs (these tests "
                    f"serve {N_IMAGES}) and lacks {', '.join(missing) or 'no annotation file'}")
    zip_path = tmp_path_factory.mktemp("mirror") / ZIP
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("img_align_celeba/", b"")
        for image in images:
            zf.write(image, f"img_align_celeba/{image.name}")
    return {ZIP: zip_path, **{name: celeba_dir / name for name in ANNOTATIONS}}


def remote(sources: dict[str, Path], *names: str, with_size: bool = True) -> list[RemoteFile]:
    """RemoteFile entries (real MD5s) for the named served files."""
    return [
        RemoteFile(n, file_md5(sources[n]), sources[n].stat().st_size if with_size else None)
        for n in names
    ]


# --------------------------------------------------------------------------- the server


@dataclass
class Behaviour:
    """How the test server misbehaves, and what it saw. Lists are consumed one per request."""

    files: dict[str, Path]
    drop_after: dict[str, list[int]] = field(default_factory=dict)  # body bytes, then cut
    status_first: dict[str, list[int]] = field(default_factory=dict)  # error statuses first
    stall_after: dict[str, list[int]] = field(default_factory=dict)  # body bytes, then hang
    release: threading.Event = field(default_factory=threading.Event)  # ends every hang
    ignore_range: bool = False
    corrupt: set[str] = field(default_factory=set)
    requests: list[tuple[str, str | None, int]] = field(default_factory=list)  # name, Range, status
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ranges(self, name: str) -> list[str | None]:
        return [r for n, r, _ in self.requests if n == name]

    def statuses(self, name: str) -> list[int]:
        return [s for n, _, s in self.requests if n == name]


def make_handler(b: Behaviour) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
            pass

        def _record(self, name: str, status: int) -> None:
            with b.lock:
                b.requests.append((name, self.headers.get("Range"), status))

        def do_GET(self) -> None:
            url_path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
            name = url_path.removeprefix("/mirror/")  # the test mirror's base path
            with b.lock:
                queued = b.status_first.get(name)
                forced = queued.pop(0) if queued else None
                drops = b.drop_after.get(name)
                cut = drops.pop(0) if drops else None
                stalls = b.stall_after.get(name)
                stall = stalls.pop(0) if stalls else None
            if url_path.startswith("/redirect/"):  # like Hugging Face's resolve -> CDN hop
                self._record(name.removeprefix("/redirect/"), 302)
                self.send_response(302)
                self.send_header("Location", "/mirror/" + url_path.removeprefix("/redirect/"))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if name not in b.files:
                forced = forced or 404
            if forced:
                self._record(name, forced)
                self.send_error(forced)
                return
            path = b.files[name]
            size = path.stat().st_size
            start = 0
            range_header = self.headers.get("Range")
            if range_header and not b.ignore_range:
                first = range_header.split("=", 1)[1].split("-", 1)[0]
                start = int(first)
                if start >= size:
                    self._record(name, 416)
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
            status = 206 if start else 200
            self._record(name, status)
            self.send_response(status)
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
            self.send_header("Content-Length", str(size - start))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            with open(path, "rb") as f:
                f.seek(start)
                body = f.read()
            if name in b.corrupt:
                body = bytes(x ^ 0xFF for x in body[:64]) + body[64:]
            if stall is not None:
                self.wfile.write(body[:stall])
                self.wfile.flush()
                b.release.wait(10)  # the client's timeout fires first
                return
            if cut is not None:
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)  # cut mid-body
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler


@dataclass
class Server:
    url: str
    behaviour: Behaviour


@pytest.fixture
def server(sources: dict[str, Path]) -> Iterator[Server]:
    behaviour = Behaviour(files=dict(sources))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make_handler(behaviour))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        host, port = httpd.server_address[:2]
        yield Server(f"http://{host}:{port}/mirror/", behaviour)
    finally:
        behaviour.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _no_env_mirror(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(dl.MIRROR_ENV, raising=False)


def fetch(server: Server, dest: Path, files: list[RemoteFile], **kw: object) -> Path:
    kw.setdefault("progress", False)
    kw.setdefault("backoff", 0.0)
    kw.setdefault("timeout", 5.0)
    return download_celeba(dest, mirror=server.url, files=files, **kw)  # type: ignore[arg-type]


def same_bytes(a: Path, b: Path) -> bool:
    return hashlib.md5(a.read_bytes()).digest() == hashlib.md5(b.read_bytes()).digest()


# --------------------------------------------------------------------------- cases


def test_full_download_verifies_and_keeps_official_layout(server, sources, tmp_path):
    dest = tmp_path / "celeba"
    files = remote(sources, ZIP, *ANNOTATIONS)
    assert fetch(server, dest, files) == dest
    for rf in files:
        assert same_bytes(dest / rf.name, sources[rf.name])
        assert file_md5(dest / rf.name) == rf.md5
    assert not list(dest.glob("*.part"))
    with zipfile.ZipFile(dest / ZIP) as zf:
        jpgs = [n for n in zf.namelist() if n.endswith(".jpg")]
    assert len(jpgs) == N_IMAGES
    assert all(n.startswith("img_align_celeba/") for n in jpgs)


def test_progress_bar_path_works(server, sources, tmp_path, capsys):
    files = remote(sources, ZIP)
    fetch(server, tmp_path, files, progress=True)
    assert same_bytes(tmp_path / ZIP, sources[ZIP])
    assert ZIP in capsys.readouterr().err


def test_dropped_connection_resumes_with_range(server, sources, tmp_path):
    server.behaviour.drop_after[ZIP] = [10_000, 25_000]  # two cuts, then a healthy answer
    files = remote(sources, ZIP, with_size=False)
    fetch(server, tmp_path, files, retries=3)
    assert same_bytes(tmp_path / ZIP, sources[ZIP])
    assert server.behaviour.ranges(ZIP) == [None, "bytes=10000-", "bytes=35000-"]
    assert server.behaviour.statuses(ZIP) == [200, 206, 206]


def test_stalled_transfer_times_out_and_resumes(server, sources, tmp_path):
    server.behaviour.stall_after[ZIP] = [7_000]
    fetch(server, tmp_path, remote(sources, ZIP), timeout=0.3)
    assert server.behaviour.ranges(ZIP) == [None, "bytes=7000-"]
    assert same_bytes(tmp_path / ZIP, sources[ZIP])


def test_redirect_keeps_the_range_header(server, sources, tmp_path):
    (tmp_path / f"{ZIP}.part").write_bytes(sources[ZIP].read_bytes()[:3000])
    mirror = server.url.replace("/mirror/", "/redirect/")
    download_celeba(tmp_path, mirror=mirror, files=remote(sources, ZIP), progress=False)
    assert server.behaviour.statuses(ZIP) == [302, 206]
    assert server.behaviour.ranges(ZIP) == ["bytes=3000-", "bytes=3000-"]
    assert same_bytes(tmp_path / ZIP, sources[ZIP])


def test_existing_correct_file_is_not_downloaded_again(server, sources, tmp_path):
    files = remote(sources, ZIP, "list_eval_partition.txt")
    fetch(server, tmp_path, files)
    assert len(server.behaviour.requests) == 2
    fetch(server, tmp_path, files)
    assert len(server.behaviour.requests) == 2


def test_existing_wrong_file_is_replaced(server, sources, tmp_path):
    (tmp_path / ZIP).write_bytes(b"not the zip")
    files = remote(sources, ZIP)
    fetch(server, tmp_path, files)
    assert same_bytes(tmp_path / ZIP, sources[ZIP])


def test_preexisting_part_is_resumed(server, sources, tmp_path):
    data = sources[ZIP].read_bytes()
    (tmp_path / f"{ZIP}.part").write_bytes(data[:1000])
    fetch(server, tmp_path, remote(sources, ZIP))
    assert same_bytes(tmp_path / ZIP, sources[ZIP])
    assert server.behaviour.ranges(ZIP) == ["bytes=1000-"]
    assert server.behaviour.statuses(ZIP) == [206]
    assert not (tmp_path / f"{ZIP}.part").exists()


def test_server_ignoring_range_still_gives_correct_file(server, sources, tmp_path):
    server.behaviour.ignore_range = True
    data = sources[ZIP].read_bytes()
    (tmp_path / f"{ZIP}.part").write_bytes(data[:1000])
    server.behaviour.drop_after[ZIP] = [5_000]  # and a cut, so the retry asks for a range too
    fetch(server, tmp_path, remote(sources, ZIP))
    assert same_bytes(tmp_path / ZIP, sources[ZIP])
    assert server.behaviour.ranges(ZIP) == ["bytes=1000-", "bytes=5000-"]
    assert server.behaviour.statuses(ZIP) == [200, 200]


def test_whole_part_answered_416_is_verified_and_kept(server, sources, tmp_path):
    (tmp_path / f"{ZIP}.part").write_bytes(sources[ZIP].read_bytes())
    fetch(server, tmp_path, remote(sources, ZIP, with_size=False))
    assert server.behaviour.statuses(ZIP) == [416]
    assert same_bytes(tmp_path / ZIP, sources[ZIP])


def test_whole_part_with_known_size_needs_no_request(server, sources, tmp_path):
    (tmp_path / f"{ZIP}.part").write_bytes(sources[ZIP].read_bytes())
    fetch(server, tmp_path, remote(sources, ZIP))
    assert server.behaviour.requests == []
    assert same_bytes(tmp_path / ZIP, sources[ZIP])


def test_corrupted_download_fails_on_md5_and_leaves_nothing(server, sources, tmp_path):
    server.behaviour.corrupt.add(ZIP)
    with pytest.raises(FaceganError, match="MD5") as info:
        fetch(server, tmp_path, remote(sources, ZIP))
    assert ZIP in str(info.value)
    assert not (tmp_path / ZIP).exists()
    assert not (tmp_path / f"{ZIP}.part").exists()


def test_retries_exhausted_keeps_part_and_next_run_resumes(server, sources, tmp_path):
    server.behaviour.drop_after[ZIP] = [4_000, 4_000, 4_000]
    files = remote(sources, ZIP)
    with pytest.raises(FaceganError, match="resume") as info:
        fetch(server, tmp_path, files, retries=2)
    assert "\n" not in str(info.value)
    assert not (tmp_path / ZIP).exists()
    assert (tmp_path / f"{ZIP}.part").stat().st_size == 12_000
    fetch(server, tmp_path, files, retries=0)
    assert server.behaviour.ranges(ZIP)[-1] == "bytes=12000-"
    assert same_bytes(tmp_path / ZIP, sources[ZIP])


def test_transient_server_error_is_retried(server, sources, tmp_path):
    server.behaviour.status_first[ZIP] = [503]
    fetch(server, tmp_path, remote(sources, ZIP))
    assert server.behaviour.statuses(ZIP) == [503, 200]
    assert same_bytes(tmp_path / ZIP, sources[ZIP])


def test_not_found_is_a_clear_error(server, sources, tmp_path):
    files = [RemoteFile("no_such_file.zip", "0" * 32)]
    with pytest.raises(FaceganError, match="404") as info:
        fetch(server, tmp_path, files)
    assert "no_such_file.zip" in str(info.value)
    assert not list(tmp_path.iterdir())


def test_forbidden_is_a_clear_error(server, sources, tmp_path):
    server.behaviour.status_first[ZIP] = [403]
    with pytest.raises(FaceganError, match="403"):
        fetch(server, tmp_path, remote(sources, ZIP))


def test_unreachable_host_says_where_to_put_the_files(tmp_path):
    with socket.socket() as s:  # find a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dest = tmp_path / "celeba"
    with pytest.raises(FaceganError) as info:
        download_celeba(
            dest, mirror=f"http://127.0.0.1:{port}", progress=False, retries=5, backoff=0.0
        )
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message
    assert str(dest) in message
    assert dl.OFFICIAL_PAGE in message
    for rf in dl.CELEBA_FILES:
        assert rf.name in message
    assert "\n" not in message


def test_dest_that_is_a_file_is_a_clear_error(server, sources, tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(FaceganError, match="not a folder"):
        fetch(server, target, remote(sources, ZIP))


def test_mirror_precedence(monkeypatch):
    assert resolve_mirror() == dl.DEFAULT_MIRROR
    monkeypatch.setenv(dl.MIRROR_ENV, "https://env.example/celeba/")
    assert resolve_mirror() == "https://env.example/celeba"
    assert resolve_mirror("http://arg.example/x") == "http://arg.example/x"


def test_env_mirror_is_used(server, sources, tmp_path, monkeypatch):
    monkeypatch.setenv(dl.MIRROR_ENV, server.url)
    download_celeba(tmp_path, files=remote(sources, ZIP), progress=False)
    assert same_bytes(tmp_path / ZIP, sources[ZIP])


@pytest.mark.parametrize("bad", ["huggingface.co/datasets/x", "ftp://example.org/celeba"])
def test_mirror_must_be_http(bad, tmp_path):
    with pytest.raises(FaceganError, match="http"):
        download_celeba(tmp_path, mirror=bad, progress=False)


def test_default_file_list_is_the_official_release():
    names = {rf.name: rf.md5 for rf in dl.CELEBA_FILES}
    assert names == {
        "img_align_celeba.zip": "00d2c5bc6d35e252742224ab0c1e8fcb",
        "list_attr_celeba.txt": "75e246fa4810816ffd6ee81facbd244c",
        "list_eval_partition.txt": "d32c9cbf5e040fd4025c592c306e6668",
        "identity_CelebA.txt": "32bd1bd63d3c78cd57e08160ec5ed1e2",
    }
    assert dl.DEFAULT_MIRROR.startswith("https://")


def test_sample_annotations_match_official_md5_and_size(celeba_dir):
    for rf in dl.CELEBA_FILES:
        if (celeba_dir / rf.name).is_file():
            assert file_md5(celeba_dir / rf.name) == rf.md5
            assert (celeba_dir / rf.name).stat().st_size == rf.size


def test_not_enough_space_is_a_clear_error(tmp_path, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(dl.shutil, "disk_usage", lambda _p: usage._replace(free=10))
    with pytest.raises(FaceganError, match="free"):
        download_celeba(tmp_path, mirror="http://127.0.0.1:9", progress=False)


def test_host_that_never_answers_gives_the_offline_message(tmp_path):
    with socket.socket() as listener:  # accepts connections (backlog) but never replies
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        with pytest.raises(FaceganError, match="put them in") as info:
            download_celeba(
                tmp_path,
                mirror=f"http://127.0.0.1:{port}",
                files=[RemoteFile(ZIP, "0" * 32)],
                progress=False,
                retries=1,
                backoff=0.0,
                timeout=0.2,
            )
    assert "timed out" in str(info.value)
    assert not list(tmp_path.iterdir())


def test_unwritable_part_is_a_clear_error(server, sources, tmp_path):
    (tmp_path / f"{ZIP}.part").mkdir()  # something that cannot be opened for writing
    with pytest.raises(FaceganError, match="could not write"):
        fetch(server, tmp_path, remote(sources, ZIP))
