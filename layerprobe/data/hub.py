"""A released checkpoint revision from a Hugging Face model repository, downloaded and verified.

`fetch_revision` lists the revision's files with their published hashes (one `model_info` call,
which also resolves a branch or tag to its commit), picks the files a probe needs (`select`),
downloads each from that one commit into `dest/.incomplete/{hash}` (resumed by a rerun with a
Range request), checks it against the published hash (SHA-256 for LFS files, the git blob id
otherwise) and only then renames it to its final name. The marker `revision.json` is written last:
a folder with a valid marker is complete, and a rerun returns it without touching the network.

`read_folder_revision` reads the same files from a local folder (`folder/{revision}/...`), for
users without access to the Hub. huggingface_hub is imported only when the Hub is used.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from layerprobe.base import atomic


class HubError(ValueError):
    """A revision that cannot be used: every message names the repository, the revision and the file."""


MARKER = "revision.json"
PARTIAL = ".incomplete"  # partial downloads, named by their expected hash, so a rerun resumes only the same content

OPTIONAL = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt")
OPTIONAL += ("preprocessor_config.json",)  # ViT-style image models
# weight formats in order of preference: a single file, or an index and the shards it lists
WEIGHTS = (
    ("safetensors", "model.safetensors", "model.safetensors.index.json"),
    ("pickle", "pytorch_model.bin", "pytorch_model.bin.index.json"),
)
OPT_IN = "set `allow_pickle: true` in the run's `released` section"


def select(names: set[str], read_index: Callable[[str], dict], where: str, allow_pickle: bool) -> tuple[list[str], str]:
    """The files of a revision (`names`) a probe needs and the weights' format, "safetensors" or "pickle".

    The one selection for both the Hub and a local folder; `read_index(name)` reads a weights index.
    """
    if "config.json" not in names:
        raise HubError(f"{where}: config.json is missing, so this is not a Hugging Face model checkpoint")
    for kind, single, index in WEIGHTS:
        weights = [single] if single in names else [index] if index in names else []
        if not weights:
            continue
        if kind == "pickle":
            _pickle_check(where, weights, allow_pickle)  # before reading the index: refused, nothing is downloaded
        if weights[0] == index:
            weights += _shards(read_index(index), index, names, where)
        if kind == "pickle":
            _pickle_check(where, weights, allow_pickle, warn=True)
        return ["config.json", *weights, *(name for name in OPTIONAL if name in names)], kind
    raise HubError(
        f"{where}: no weights: none of {', '.join(name for _, *pair in WEIGHTS for name in pair)} is present"
    )


def _pickle_check(where: str, weights: list[str], allow_pickle: bool, warn: bool = False, stacklevel: int = 4) -> None:
    """Refuse pickled weights unless allowed; allowed, warn (at `stacklevel`: the caller of the public function)."""
    if not allow_pickle:
        raise HubError(
            f"{where}: only pickled weights ({', '.join(weights)}), no model.safetensors; pickled weights are refused "
            f"(loading a pickle can run code). To accept them, {OPT_IN}: they are then loaded with "
            "torch.load(weights_only=True)"
        )
    if warn:
        warnings.warn(
            f"{where}: using pickled weights {', '.join(weights)} (allow_pickle is set)", stacklevel=stacklevel
        )


def _shards(index: dict, name: str, names: set[str], where: str) -> list[str]:
    shards = sorted(set(index.get("weight_map", {}).values())) if isinstance(index, dict) else []
    if not shards:
        raise HubError(f"{where}: {name} lists no shards in its weight_map")
    unsafe = [s for s in shards if not isinstance(s, str) or PurePosixPath(s).is_absolute() or ".." in s.split("/")]
    if unsafe:  # the index is input: a shard must not name a file outside the revision's folder
        raise HubError(f"{where}: {name} lists shards outside the repository: {', '.join(map(str, unsafe))}")
    missing = [s for s in shards if s not in names]
    if missing:
        raise HubError(f"{where}: shards listed in {name} are missing: {', '.join(missing)}")
    return shards


def read_folder_revision(folder: str | Path, revision: str, *, allow_pickle: bool = False) -> dict:
    """The files of `revision` in a local folder holding one checkpoint per revision (`folder/{revision}/`).

    Returns the marker's shape (repo and commit None) and writes nothing into the user's folder.
    """
    root = Path(folder)
    path = root / revision
    if PurePosixPath(revision).name != revision or not path.is_dir():
        present = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise HubError(
            f"{root}: revision {revision!r} not found (no folder {path}); revisions present: "
            f"{', '.join(present) or 'none'}"
        )
    where = f"{root}, revision {revision!r}"

    def read_index(name: str) -> dict:
        return _json(path / name, f"{where}: {name}")

    names = {str(p.relative_to(path).as_posix()) for p in path.rglob("*") if p.is_file()}
    chosen, weights = select(names, read_index, where, allow_pickle)
    files = {name: atomic.sha256(path / name) for name in chosen}
    return {"repo": None, "revision": revision, "commit": None, "weights": weights, "files": files}


def fetch_revision(
    repo: str,
    revision: str,
    dest: str | Path,
    *,
    allow_pickle: bool = False,
    endpoint: str | None = None,
    token: str | bool | None = None,
) -> dict:
    """Download the files a probe needs from `repo` at `revision` (branch, tag or commit) into `dest`, verified.

    Returns the marker written to `dest/revision.json`: {"repo", "revision", "commit", "weights",
    "files": {name: sha256}}. A complete earlier fetch of the same revision is returned without network access.
    """
    dest = Path(dest)
    where = f"{repo}, revision {revision!r}"
    done = _complete(dest, repo, revision)
    if done is not None:
        if done["weights"] == "pickle":  # fetched with allow_pickle earlier: the rule holds for this call too
            pickled = [name for name in done["files"] if name.startswith("pytorch_model")]
            _pickle_check(where, pickled, allow_pickle, warn=True, stacklevel=3)
        return done
    hf = _hub()
    (dest / MARKER).unlink(missing_ok=True)  # the folder is about to change: no marker may vouch for it meanwhile
    with _mapped(hf, where):
        info = hf.HfApi(endpoint=endpoint, token=token).model_info(repo, revision=revision, files_metadata=True)
    commit = info.sha
    published = {sibling.rfilename: sibling for sibling in info.siblings or []}
    headers = hf.utils.build_hf_headers(token=token)
    digests: dict[str, str] = {}

    def get(name: str) -> Path:
        """The file, downloaded from the resolved commit and verified; its SHA-256 goes into `digests`."""
        if name not in digests:
            sibling = published[name]
            expected, size = (sibling.lfs.sha256, sibling.lfs.size) if sibling.lfs else (sibling.blob_id, sibling.size)
            which = 0 if sibling.lfs else 1  # the published hash: SHA-256 of an LFS file, else the git blob id
            if not expected:
                raise HubError(f"{where}: {name}: the Hub published no hash for it, so it cannot be verified")
            final = dest / name
            found = _digests(final) if final.is_file() else None
            if found is None or found[which] != expected:  # absent, or left by a fetch of another commit
                partial = dest / PARTIAL / expected
                url = hf.hf_hub_url(repo, name, revision=commit, endpoint=endpoint)
                with _mapped(hf, where, name):
                    _download(hf, url, partial, size, headers)
                found = _digests(partial)
                if found[which] != expected:
                    partial.unlink()
                    kind = "sha256" if sibling.lfs else "git blob id"
                    raise HubError(
                        f"{where}: {name}: {kind} mismatch, expected {expected}, got {found[which]}; "
                        "the download was deleted, rerun to fetch it again"
                    )
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(partial, final)  # verified before it has its name
            digests[name] = found[0]
        return dest / name

    def read_index(name: str) -> dict:
        return _json(get(name), f"{where}: {name}")

    chosen, weights = select(set(published), read_index, where, allow_pickle)
    for name in chosen:
        get(name)
    _remove_empty(dest / PARTIAL)
    marker = {
        "repo": repo,
        "revision": revision,
        "commit": commit,
        "weights": weights,
        "files": {name: digests[name] for name in chosen},
    }
    atomic.write_text(dest / MARKER, json.dumps(marker, indent=2) + "\n")
    return marker


def _complete(dest: Path, repo: str, revision: str) -> dict | None:
    """The marker of an earlier fetch of this revision, if every file it lists is still intact."""
    try:
        marker = json.loads((dest / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or (marker.get("repo"), marker.get("revision")) != (repo, revision):
        return None
    files = marker.get("files")
    if not isinstance(files, dict) or not files:
        return None
    intact = all((dest / name).is_file() and atomic.sha256(dest / name) == digest for name, digest in files.items())
    return marker if intact else None


def _hub():
    try:
        import huggingface_hub
        import huggingface_hub.errors
        import huggingface_hub.file_download
        import huggingface_hub.utils
    except ImportError as error:
        raise ImportError(
            'downloading from the Hugging Face Hub needs huggingface_hub: pip install ".[hf]" '
            "(the optional extra with huggingface_hub, transformers and safetensors)"
        ) from error
    return huggingface_hub


def _download(hf, url: str, partial: Path, size: int | None, headers: dict) -> None:
    """Stream `url` into `partial`, continuing what an earlier attempt left there (HTTP Range)."""
    partial.parent.mkdir(parents=True, exist_ok=True)
    if partial.is_file() and size is not None and partial.stat().st_size > size:
        partial.unlink()  # longer than the file: not a prefix of it
    # our own partial file rather than hf_hub_download's: in huggingface_hub 2.x that deletes its
    # temporary on any failure, so a rerun would start a multi-GB file over
    with open(partial, "r+b" if partial.is_file() else "wb") as handle:
        handle.seek(0, os.SEEK_END)
        hf.file_download.http_get(url, handle, resume_size=handle.tell(), headers=headers, expected_size=size)


def _digests(path: Path) -> tuple[str, str]:
    """The file's SHA-256 and its git blob id (SHA-1 of "blob {size}\\0" + content), in one read."""
    sha256, blob = hashlib.sha256(), hashlib.sha1()
    blob.update(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha256.update(block)
            blob.update(block)
    return sha256.hexdigest(), blob.hexdigest()


def _json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except ValueError as error:
        raise HubError(f"{what} is not valid JSON: {error}") from None


def _remove_empty(folder: Path) -> None:
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


@contextmanager
def _mapped(hf, where: str, name: str | None = None) -> Iterator[None]:
    """huggingface_hub's and the network's errors as a one-line HubError."""
    errors = hf.errors
    at = f"{where}: {name}" if name else where
    rerun = "rerun to resume the download" if name else "rerun to retry"
    try:
        yield
    except errors.GatedRepoError as error:
        raise HubError(f"{at}: the repository is gated; accept its terms on the Hub and pass a token") from error
    except errors.RepositoryNotFoundError as error:
        raise HubError(f"{at}: repository not found (or private, and the token gives no access)") from error
    except errors.RevisionNotFoundError as error:
        raise HubError(f"{at}: the revision does not exist in the repository") from error
    except errors.RemoteEntryNotFoundError as error:
        raise HubError(f"{at}: the file is listed but the Hub does not serve it") from error
    except errors.HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        if status in (401, 403):
            raise HubError(f"{at}: access refused (HTTP {status}); check the token") from error
        raise HubError(f"{at}: the Hub answered HTTP {status}; {rerun}") from error
    except (errors.HTTPError, OSError) as error:  # HTTPError: the HTTP client's own (connection, protocol)
        raise HubError(
            f"{at}: network failure or interrupted transfer ({type(error).__name__}: {error}); {rerun}"
        ) from error
