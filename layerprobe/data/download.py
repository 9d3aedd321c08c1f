"""Getting a file with integrity: mirrors tried in order, resumed, checked, placed atomically.

`fetch` streams a file into `<dest>.part` (resuming a partial one with an HTTP Range request),
checks its SHA-256 before anything can use it, and only then renames it to `dest`; a file with the
wrong checksum is deleted and the next mirror is tried. `extract` unpacks an archive, refusing any
member that would land outside the target folder, and links or devices (an archive is input from
the internet, like any other).
"""
from __future__ import annotations

import http.client
import os
import re
import shutil
import stat
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from layerprobe.base import atomic
from layerprobe.base.atomic import sha256

USER_AGENT = "layerprobe (python urllib)"  # some hosts refuse urllib's default agent
TIMEOUT_S = 60
CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """No mirror delivered the file with the declared checksum."""


class WrongRange(ValueError):
    """A resume request answered with a range that does not start where the part file ends."""


class UnsafeArchive(ValueError):
    """An archive member that would escape the target folder, or a link or device."""


def verify(path: str | Path, expected: str) -> None:
    """Raise ValueError naming the file unless its SHA-256 is `expected`."""
    actual = sha256(path)
    if actual != expected.lower():
        raise ValueError(f"{path}: SHA-256 is {actual}, expected {expected.lower()} "
                         "(a corrupt or replaced file; delete it to download it again)")


def fetch(urls: list[str], expected_sha256: str, dest: str | Path, progress: bool = True) -> Path:
    """`dest` with the declared SHA-256, from the first mirror that serves it; DownloadError lists every try."""
    dest, expected = Path(dest), expected_sha256.lower()
    if dest.exists() and sha256(dest) == expected:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if part.exists() and sha256(part) == expected:  # killed between the download and the rename
        os.replace(part, dest)
        return dest
    tried = []
    for url in urls:
        try:
            try:
                _stream(url, part, progress, dest.name)
            except WrongRange as err:
                # The server resumes from the wrong place: the part file cannot be continued there, so
                # this mirror starts over from byte 0, once (a second failure moves on to the next).
                part.unlink()
                print(f"{url}: {err}; removed {part.name} and downloading it again from byte 0", file=sys.stderr)
                _stream(url, part, progress, dest.name)
        except (OSError, http.client.HTTPException, ValueError) as err:  # HTTP errors, timeouts, short reads
            tried.append(f"{url}: {_reason(err)}")
            continue  # the part file stays: the next mirror serves the same bytes and can resume it
        actual = sha256(part)
        if actual != expected:
            part.unlink()  # never resume from bytes that are known to be wrong
            tried.append(f"{url}: served a file whose SHA-256 is {actual}, not the declared {expected} (removed)")
            continue
        os.replace(part, dest)  # same folder: atomic, so `dest` is either absent or verified
        return dest
    raise DownloadError(f"could not download {dest} with SHA-256 {expected}; tried:\n  " + "\n  ".join(tried))


def _reason(err: Exception) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return f"unreachable ({err.reason})"
    return f"{type(err).__name__}: {err}"


def _stream(url: str, part: Path, progress: bool, label: str) -> None:
    """Append the rest of `url` to `part` (or write it whole when the server cannot resume)."""
    offset = part.stat().st_size if part.exists() else 0
    remote = url.split(":", 1)[0].lower() in ("http", "https")
    if offset and not remote:
        offset = 0  # file:// and ftp:// have no ranges: start over
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if err.code != 416 or not offset:
            raise
        # Range not satisfiable: the part file is complete already (or longer than the file).
        # Start over without it; the checksum decides whether what we get is right.
        part.unlink()
        offset = 0
        request.remove_header("Range")
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    with response:
        status = getattr(response, "status", None)
        if offset and status == 206:
            start = _range_start(response.headers.get("Content-Range", ""))
            if start != offset:
                raise WrongRange(f"asked to resume at byte {offset}, the server sent a range starting at {start}")
        elif offset:
            offset = 0  # 200: the server ignored the Range header and sends the whole file
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        received = offset
        with open(part, "ab" if offset else "wb") as out, \
                tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=label,
                     disable=not progress, mininterval=1.0) as bar:
            for block in iter(lambda: response.read(CHUNK), b""):
                out.write(block)
                received += len(block)
                bar.update(len(block))
        if total is not None and received < total:
            raise ValueError(f"connection closed after {received} of {total} bytes")


def _range_start(content_range: str) -> int | None:
    match = re.match(r"\s*bytes\s+(\d+)-", content_range)
    return int(match[1]) if match else None


def extract(archive: str | Path, target: str | Path) -> Path:
    """Unpack a tar (any compression) or zip archive into the folder `target`, atomically.

    Every member is checked before anything is written: an absolute path, a `..` that leaves the
    target, a symbolic or hard link, or a device is refused (UnsafeArchive names the member).
    The archive is unpacked into a temporary folder beside `target` and renamed into place.
    """
    archive, target = Path(archive), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic.remove(atomic.stale(target))  # an extraction a kill interrupted
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        if tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tar:
                members = tar.getmembers()
                for member in members:
                    _check_member(archive, member.name)
                    if not (member.isfile() or member.isdir()):
                        kind = "link" if member.issym() or member.islnk() else "device or special file"
                        raise UnsafeArchive(f"{archive}: member {member.name!r} is a {kind}; refused")
                kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(tmp, members=members, **kwargs)
        elif zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    _check_member(archive, info.filename)
                    if stat.S_ISLNK(info.external_attr >> 16):
                        raise UnsafeArchive(f"{archive}: member {info.filename!r} is a link; refused")
                zf.extractall(tmp)
        else:
            raise ValueError(f"{archive}: not a tar or zip archive")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target


def _check_member(archive: Path, name: str) -> None:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or re.match(r"^[A-Za-z]:", name) or ".." in path.parts:
        raise UnsafeArchive(f"{archive}: member {name!r} would be written outside the target folder; refused")
