"""Fetch the official CelebA release over plain HTTP(S), resuming and verifying MD5s.

Only the standard library talks HTTP here (``urllib.request``); tqdm draws the progress bar.

The default mirror is the Hugging Face dataset repository ``Yuehao/celeba``, which holds the
official files under their official names, so each one resolves as
``https://huggingface.co/datasets/Yuehao/celeba/resolve/main/<name>``. Evidence that it serves
them by plain URL: ramikeller/face-diffusion ``scripts/export_faces.py`` fetches
``img_align_celeba.zip`` from it ("the actual img_align_celeba.zip"), and public training code
downloads all six files (zip, attributes, identities, partition, bboxes, landmarks) from
``.../Yuehao/celeba/resolve/main`` with ``urlretrieve`` and then loads them with torchvision's
``CelebA``, whose integrity check compares the annotation files with the same MD5s listed
below. torchvision's own Google Drive links fail for most users with "quota exceeded" pages
(pytorch/vision issues #1920, #2262, #8268). Whatever the mirror, every file is checked
against the official MD5 before it gets its final name, so a wrong or changed mirror can
never pass for CelebA.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from facegan import __version__
from facegan.errors import FaceganError

__all__ = [
    "CELEBA_EXTRA_FILES",
    "CELEBA_FILES",
    "DEFAULT_MIRROR",
    "MIRROR_ENV",
    "OFFICIAL_PAGE",
    "RemoteFile",
    "download_celeba",
    "file_md5",
    "resolve_mirror",
]


@dataclass(frozen=True)
class RemoteFile:
    """One file of the release: its name on the mirror and on disk, its MD5, its size if known."""

    name: str
    md5: str
    size: int | None = None


# MD5s are torchvision's (torchvision/datasets/celeba.py); the sizes are those of the official
# files (tensorflow/datasets issue #1271 lists the zip's and three annotation files' sizes).
CELEBA_FILES: tuple[RemoteFile, ...] = (
    RemoteFile("img_align_celeba.zip", "00d2c5bc6d35e252742224ab0c1e8fcb", 1_443_490_838),
    RemoteFile("list_attr_celeba.txt", "75e246fa4810816ffd6ee81facbd244c", 26_721_026),
    RemoteFile("list_eval_partition.txt", "d32c9cbf5e040fd4025c592c306e6668", 2_836_386),
    RemoteFile("identity_CelebA.txt", "32bd1bd63d3c78cd57e08160ec5ed1e2", 3_424_458),
)
"""What ``facegan prepare celeba`` needs: the aligned images and three annotation files."""

CELEBA_EXTRA_FILES: tuple[RemoteFile, ...] = (
    RemoteFile("list_bbox_celeba.txt", "00566efa6fedff7a56946cd1c10f1c16"),
    RemoteFile("list_landmarks_align_celeba.txt", "cc24ecafdb5b50baae59b03474781f8c", 12_156_055),
)
"""Optional annotations facegan does not use; pass ``files=CELEBA_FILES + CELEBA_EXTRA_FILES``."""

DEFAULT_MIRROR = "https://huggingface.co/datasets/Yuehao/celeba/resolve/main"
MIRROR_ENV = "FACEGAN_CELEBA_MIRROR"
OFFICIAL_PAGE = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"

_CHUNK = 1 << 20  # bytes per read/write/hash step; nothing ever holds a whole file in memory
_MAX_BACKOFF = 30.0  # seconds
_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.IGNORECASE)
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)", re.IGNORECASE)


class _Broken(Exception):
    """A transfer that broke off in a way worth retrying (reset, timeout, short body, 5xx)."""


class _Unreachable(Exception):
    """The mirror could not be reached at all (DNS failure, refused, no route)."""


def resolve_mirror(mirror: str | None = None) -> str:
    """Return the base URL to use: ``mirror``, else ``$FACEGAN_CELEBA_MIRROR``, else the default."""
    chosen = mirror or os.environ.get(MIRROR_ENV, "").strip() or DEFAULT_MIRROR
    scheme = urllib.parse.urlsplit(chosen).scheme.lower()
    if scheme not in ("http", "https") or not urllib.parse.urlsplit(chosen).netloc:
        raise FaceganError(
            f"the CelebA mirror {chosen!r} is not an http:// or https:// URL; give a base URL "
            f"such as {DEFAULT_MIRROR} with --mirror or {MIRROR_ENV}"
        )
    return chosen.rstrip("/")


def file_md5(path: Path, *, progress: bool = False) -> str:
    """MD5 of a file, read in 1 MiB chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f, tqdm(
        total=path.stat().st_size,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=f"checking {path.name}",
        disable=not progress,
        leave=False,
    ) as bar:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def download_celeba(
    dest: Path,
    *,
    mirror: str | None = None,
    files: Sequence[RemoteFile] = CELEBA_FILES,
    retries: int = 5,
    progress: bool = True,
    timeout: float = 60.0,
    backoff: float = 1.0,
) -> Path:
    """Fetch CelebA's files into `dest`, resuming partial files and verifying MD5s; return `dest`.

    A file already in `dest` with the right MD5 is kept. Otherwise it is downloaded to
    ``<name>.part`` (resuming with an HTTP Range request when that exists), its MD5 checked,
    and only then renamed to ``<name>``. A transfer that breaks off is retried up to `retries`
    times, each retry resuming from what is on disk, after ``backoff * 2**k`` seconds.
    Every problem the user can fix raises :class:`FaceganError`.
    """
    dest = Path(dest).expanduser()
    base = resolve_mirror(mirror)
    if retries < 0:
        raise FaceganError(f"retries must be 0 or more, not {retries}; pass a count such as 5")
    _make_dest(dest)

    todo: list[RemoteFile] = []
    for rf in files:
        final = dest / rf.name
        if final.is_file() and _matches(final, rf, progress):
            continue
        todo.append(rf)
    _check_free_space(dest, todo)

    state = _State()
    for rf in todo:
        url = f"{base}/{urllib.parse.quote(rf.name)}"
        final = dest / rf.name
        part = dest / (rf.name + ".part")
        try:
            _fetch_with_retries(url, part, rf, state, retries, timeout, backoff, progress)
        except _Unreachable as exc:
            raise FaceganError(_offline_message(base, dest, files, str(exc))) from None
        got = file_md5(part, progress=progress)
        if got != rf.md5.lower():
            part.unlink(missing_ok=True)
            raise FaceganError(
                f"{rf.name} from {url} has MD5 {got} but the official file has {rf.md5}, so it "
                f"was deleted; run the command again, and if this repeats use another mirror "
                f"(--mirror or {MIRROR_ENV}) or put the official file from {OFFICIAL_PAGE} in {dest}"
            )
        os.replace(part, final)
    return dest


@dataclass
class _State:
    """What this call has seen so far: whether the mirror answered at least once."""

    reached: bool = False


def _make_dest(dest: Path) -> None:
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise FaceganError(
            f"{dest} exists and is not a folder; give --download a folder to put CelebA in"
        ) from None
    except OSError as exc:
        raise FaceganError(
            f"could not create the folder {dest} ({exc.strerror or exc}); choose a folder you "
            f"can write to"
        ) from None
    if not os.access(dest, os.W_OK):
        raise FaceganError(f"the folder {dest} is not writable; choose a folder you can write to")


def _matches(path: Path, rf: RemoteFile, progress: bool) -> bool:
    if rf.size is not None and path.stat().st_size != rf.size:
        return False
    return file_md5(path, progress=progress) == rf.md5.lower()


def _check_free_space(dest: Path, todo: Sequence[RemoteFile]) -> None:
    need = 0
    for rf in todo:
        if rf.size is None:
            continue
        part = dest / (rf.name + ".part")
        have = part.stat().st_size if part.is_file() else 0
        need += max(rf.size - have, 0)
    free = shutil.disk_usage(dest).free
    if need > free:
        raise FaceganError(
            f"downloading CelebA needs {need / 2**30:.1f} GiB more in {dest} but only "
            f"{free / 2**30:.1f} GiB is free; free some space or choose another folder"
        )


def _offline_message(base: str, dest: Path, files: Sequence[RemoteFile], reason: str) -> str:
    host = urllib.parse.urlsplit(base).netloc
    names = [rf.name for rf in files]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return (
        f"could not reach {host} ({reason}; offline?); download {listed} from {OFFICIAL_PAGE}, "
        f"put them in {dest}, then run `facegan prepare {dest} --out DIR`"
    )


def _fetch_with_retries(
    url: str,
    part: Path,
    rf: RemoteFile,
    state: _State,
    retries: int,
    timeout: float,
    backoff: float,
    progress: bool,
) -> None:
    """Bring `part` to the whole file, retrying broken transfers; MD5 is checked by the caller."""
    failures = 0
    while True:
        try:
            _transfer_once(url, part, rf, state, timeout, progress)
            return
        except _Broken as exc:
            failures += 1
            if failures > retries and not state.reached:
                raise _Unreachable(str(exc)) from None  # never got an answer: likely offline
            if failures > retries:
                saved = part.stat().st_size if part.is_file() else 0
                raise FaceganError(
                    f"downloading {rf.name} from {url} failed {failures} times ({exc}); "
                    f"run the command again to resume from the {saved:,} bytes saved in {part}"
                ) from None
            delay = min(backoff * 2 ** (failures - 1), _MAX_BACKOFF)
            if delay > 0:
                time.sleep(delay)


def _transfer_once(
    url: str, part: Path, rf: RemoteFile, state: _State, timeout: float, progress: bool
) -> None:
    """One HTTP request: append the rest of the file to `part`, or rewrite it from byte 0."""
    offset = _resume_offset(part, rf)
    if rf.size is not None and offset == rf.size:
        return  # already whole; the MD5 check decides
    response = _request(url, part, rf, state, offset, timeout)
    if response is None:
        return  # 416 on a whole .part
    with response:
        start, total, expected = _body_range(response, url, part, offset, rf)
        received = _save_body(response, part, rf, start, total, progress)
    if expected is not None and received < expected:
        raise _Broken(f"the connection closed after {received:,} of {expected:,} bytes")
    if rf.size is not None and part.stat().st_size < rf.size:
        raise _Broken(f"got {part.stat().st_size:,} of {rf.size:,} bytes")


def _resume_offset(part: Path, rf: RemoteFile) -> int:
    """How many bytes of `part` to keep and resume after: its size, or 0 when it cannot be a prefix."""
    offset = part.stat().st_size if part.is_file() else 0
    if rf.size is not None and offset > rf.size:
        part.unlink()  # longer than the real file: it cannot be a prefix of it
        offset = 0
    return offset


def _request(
    url: str, part: Path, rf: RemoteFile, state: _State, offset: int, timeout: float
) -> http.client.HTTPResponse | None:
    """Send the request (a Range from `offset` when resuming); None when `part` is already whole."""
    headers = {"User-Agent": f"facegan/{__version__}", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        state.reached = True
        try:
            _raise_for_status(exc, url, part, offset, rf)
        finally:
            exc.close()
        return None  # 416 on a whole .part
    except urllib.error.URLError as exc:
        reason = exc.reason
        # Before the mirror has ever answered, a failure that is not a timeout means offline;
        # after that it is a broken transfer worth retrying.
        if not state.reached and not isinstance(reason, (TimeoutError, socket.timeout)):
            raise _Unreachable(_describe(reason)) from None
        raise _Broken(f"connection failed: {_describe(reason)}") from None
    except (OSError, http.client.HTTPException) as exc:
        # Timeouts and resets while reading the status line or headers.
        raise _Broken(_describe(exc)) from None
    state.reached = True
    return response


def _body_range(
    response: http.client.HTTPResponse, url: str, part: Path, offset: int, rf: RemoteFile
) -> tuple[int, int | None, int | None]:
    """From the status and headers: (byte the body starts at, file size or None, body length or None)."""
    status = getattr(response, "status", None) or 200
    start, total = 0, None
    if status == 206:
        start, total = _parse_content_range(response.headers.get("Content-Range"), url)
        if start > offset:
            # A gap we cannot fill: start over.
            part.unlink(missing_ok=True)
            raise _Broken(f"the server resumed at byte {start} instead of {offset}")
    elif not 200 <= status < 300:
        raise FaceganError(f"{url} answered HTTP {status}; check the mirror URL")
    # 200 (server ignored Range, or no Range sent): the body is the whole file.
    length_header = response.headers.get("Content-Length")
    expected = int(length_header) if length_header and length_header.isdigit() else None
    if total is None:
        total = expected if expected is not None else rf.size
    return start, total, expected


def _save_body(
    response: http.client.HTTPResponse,
    part: Path,
    rf: RemoteFile,
    start: int,
    total: int | None,
    progress: bool,
) -> int:
    """Write the body into `part` from byte `start`, dropping what lay past it; return bytes received."""
    mode = "r+b" if start > 0 else "wb"
    # read1 returns what has arrived, so a timeout or reset loses nothing already received.
    read = getattr(response, "read1", response.read)
    received = 0
    try:
        with open(part, mode) as out, tqdm(
            total=total,
            initial=start,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=rf.name,
            disable=not progress,
        ) as bar:
            if start:
                out.seek(start)
                out.truncate()
            while True:
                try:
                    chunk = read(_CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    raise _Broken(f"the transfer broke off: {_describe(exc)}") from None
                if not chunk:
                    break
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    except OSError as exc:  # the disk side: full, read-only, removed
        raise FaceganError(
            f"could not write {part} ({exc.strerror or exc}); free some space or choose "
            f"another folder, then run the command again to resume"
        ) from None
    return received


def _raise_for_status(
    exc: urllib.error.HTTPError, url: str, part: Path, offset: int, rf: RemoteFile
) -> None:
    """Map an HTTP error to a retry, a FaceganError, or (416 on a whole file) a plain return."""
    code = exc.code
    if code == 416 and offset:
        match = _UNSATISFIED_RANGE.search(exc.headers.get("Content-Range", "") or "")
        if match and int(match.group(1)) != offset:
            part.unlink(missing_ok=True)  # not a prefix of the server's file: start over
            raise _Broken(f"the server's copy has {match.group(1)} bytes, the partial file {offset}")
        return  # the .part already holds the whole file; the MD5 check decides
    if code in _RETRY_STATUSES:
        raise _Broken(f"HTTP {code} {exc.reason}")
    hint = {
        401: "the mirror wants a login",
        403: "the mirror refused access",
        404: "the mirror does not have this file",
    }.get(code, "the mirror cannot serve this file")
    raise FaceganError(
        f"{url} answered HTTP {code} {exc.reason} ({hint}); give a working mirror with --mirror "
        f"or {MIRROR_ENV}, or put {rf.name} from {OFFICIAL_PAGE} in {part.parent}"
    )


def _parse_content_range(value: str | None, url: str) -> tuple[int, int | None]:
    match = _CONTENT_RANGE.search(value or "")
    if not match:
        raise _Broken(f"{url} sent a partial answer without a usable Content-Range ({value!r})")
    total = None if match.group(3) == "*" else int(match.group(3))
    return int(match.group(1)), total


def _describe(reason: object) -> str:
    if isinstance(reason, socket.gaierror):
        return "the host name could not be resolved"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(reason, ConnectionResetError):
        return "connection reset"
    if isinstance(reason, http.client.IncompleteRead):
        return "incomplete read"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__
