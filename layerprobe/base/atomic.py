"""Files whole or not at all (write to a temporary name beside the target, then rename), and their SHA-256.

A kill mid-write leaves a temporary `.{name}.XXXXXXXX.tmp{suffix}` beside the target and never a
half-written file under the target's name. The next write of the same target removes such leftovers
(`stale`), and a step that owns a whole folder sweeps it when it starts (`sweep`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it replaces `path` atomically.

    The temporary name keeps the target's suffix so writers that infer the format from it
    (matplotlib, pandas) still work. On any exception the temporary file is removed and the
    target is left untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove(stale(target))  # a killed earlier write of this very file
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    tmp_path.chmod(0o666 & ~umask)  # mkstemp makes 0600; outputs should read like any new file
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _temporaries(name: str = ".+") -> re.Pattern:
    """How tempfile.mkstemp/mkdtemp name a temporary of `name` (a regex; default: of any file) here:
    `.{name}.` + 8 random characters + `.tmp` and the target's suffix, matching no other file."""
    return re.compile(rf"\.{name}\.[A-Za-z0-9_]{{8}}\.tmp(\.[^.]*)?")


def _matching(folder: Path, pattern: re.Pattern) -> list[Path]:
    return sorted(p for p in folder.iterdir() if pattern.fullmatch(p.name)) if folder.is_dir() else []


def stale(target: str | os.PathLike) -> list[Path]:
    """The temporaries earlier writes of `target` left (files or folders, sorted)."""
    target = Path(target)
    return _matching(target.parent, _temporaries(re.escape(target.name)))


def sweep(folder: str | os.PathLike) -> list[Path]:
    """Remove every temporary an interrupted write left in `folder` (not below it); returns them. Only
    for a folder that one step writes alone: another job's write in progress would lose its file."""
    return remove(_matching(Path(folder), _temporaries()))


def remove(paths: list[Path]) -> list[Path]:
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return paths


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def sha256(path: str | os.PathLike) -> str:
    """The file's SHA-256, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
