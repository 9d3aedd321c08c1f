"""A fake Hugging Face Hub on 127.0.0.1, answering what huggingface_hub 2.4 asks of the real one.

`root/{owner}/{name}/{revision}/` holds a revision's files; the folder's name is a branch, and the
revision's commit is a fake 40-hex sha (`commit(repo, revision)`), accepted in URLs too. Answered:

- GET  /api/models/{repo}[/revision/{rev}][?blobs=True]  model_info: sha, siblings with size,
  blobId and, for *.safetensors and *.bin (treated as LFS), lfs {sha256, size, pointerSize}
- HEAD and GET /{repo}/resolve/{rev}/{file}  X-Repo-Commit, ETag (the sha256 for LFS files, else
  the git blob id), X-Linked-Etag and X-Linked-Size for LFS, Content-Length, Accept-Ranges; a
  Range "bytes=a-[b]" is answered 206 with Content-Range

Errors as the Hub sends them: 404 with X-Error-Code RepoNotFound, RevisionNotFound or
EntryNotFound (and 403 GatedRepo for a repository in `faults["gated"]`), so huggingface_hub raises
its own exception classes.

Faults, set on the server's `faults` dict while it runs:
- "corrupt": {file name}: GETs of the file serve its bytes with the first one flipped (the
  advertised hashes stay right)
- "get": {file name: [action, ...]}: each GET of the file takes the next action: ("cut", n) sends
  the headers and n bytes of the body, then closes the connection; ("status", code) answers with
  that HTTP status. Each is used once, so a retry or a rerun then succeeds.
- "gated": {repo}
`requests` counts the requests per (method, path), and `ranges` records each GET's Range header.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LFS = (".safetensors", ".bin")


def commit(repo: str, revision: str) -> str:
    return hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()


def is_lfs(name: str) -> bool:
    return name.endswith(LFS)


def blob_id(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


class FakeHub(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path):
        super().__init__(("127.0.0.1", 0), Handler)
        self.root = Path(root)
        self.faults: dict = {"corrupt": set(), "get": {}, "gated": set()}
        self.requests: Counter = Counter()
        self.ranges: list[tuple[str, str | None]] = []
        self.lock = threading.Lock()

    def downloads(self, name: str) -> int:
        """How many GETs of a file's /resolve/ URL the server answered."""
        return sum(n for (method, path), n in self.requests.items() if method == "GET" and path.endswith("/" + name))

    def revision_folder(self, repo: str, revision: str) -> Path | None:
        folder = self.root / repo
        for candidate in sorted(folder.iterdir()) if folder.is_dir() else []:
            if candidate.is_dir() and revision in (candidate.name, commit(repo, candidate.name)):
                return candidate
        return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive as the Hub; every answer carries a Content-Length
    server: FakeHub

    def log_message(self, *args) -> None:  # quiet tests
        pass

    def do_GET(self) -> None:
        self.answer(body=True)

    def do_HEAD(self) -> None:
        self.answer(body=False)

    def answer(self, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        with self.server.lock:
            self.server.requests[(self.command, path)] += 1
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) in (4, 6):
            repo = "/".join(parts[2:4])
            revision = parts[5] if len(parts) == 6 and parts[4] == "revision" else "main"
            return self.model_info(repo, revision, body)
        if len(parts) >= 5 and parts[2] == "resolve":
            return self.resolve("/".join(parts[:2]), parts[3], "/".join(parts[4:]), body)
        self.error(404, "", "Not found")

    def located(self, repo: str, revision: str) -> Path | None:
        """The revision's folder, or None once the error is sent."""
        if not (self.server.root / repo).is_dir():
            self.error(404, "RepoNotFound", "Repository not found")
        elif repo in self.server.faults["gated"]:
            self.error(403, "GatedRepo", "Access to model is restricted. You must have access to it")
        elif (folder := self.server.revision_folder(repo, revision)) is None:
            self.error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        else:
            return folder
        return None

    def model_info(self, repo: str, revision: str, body: bool) -> None:
        folder = self.located(repo, revision)
        if folder is None:
            return
        siblings = []
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            data = file.read_bytes()
            sibling = {"rfilename": file.relative_to(folder).as_posix(), "size": len(data), "blobId": blob_id(data)}
            if is_lfs(file.name):
                pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(data).hexdigest()}"
                sibling["blobId"] = blob_id(pointer.encode())  # git holds the pointer, not the content
                sibling["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            siblings.append(sibling)
        info = {"_id": commit(repo, "id"), "id": repo, "modelId": repo, "private": False, "gated": False}
        info |= {"sha": commit(repo, folder.name), "siblings": siblings, "tags": [], "downloads": 0, "likes": 0}
        self.send(200, json.dumps(info).encode(), {"Content-Type": "application/json"}, body)

    def resolve(self, repo: str, revision: str, name: str, body: bool) -> None:
        folder = self.located(repo, revision)
        if folder is None:
            return
        file = folder / name
        if not file.is_file():
            return self.error(404, "EntryNotFound", f'{name} does not exist on "{revision}"', commit(repo, folder.name))
        data = file.read_bytes()
        headers = {"X-Repo-Commit": commit(repo, folder.name), "Accept-Ranges": "bytes"}
        if is_lfs(name):
            digest = hashlib.sha256(data).hexdigest()
            headers |= {"ETag": f'"{digest}"', "X-Linked-Etag": f'"{digest}"', "X-Linked-Size": str(len(data))}
        else:
            headers["ETag"] = f'"{blob_id(data)}"'
        if not body:
            return self.send(200, b"", headers | {"Content-Length": str(len(data))}, body=False)
        with self.server.lock:
            self.server.ranges.append((name, self.headers.get("Range")))
            actions = self.server.faults["get"].get(name) or []
            action = actions.pop(0) if actions else None
        if name in self.server.faults["corrupt"]:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        if action and action[0] == "status":
            return self.error(action[1], "", "Injected failure")
        status, start = 200, 0
        if (wanted := self.headers.get("Range")) is not None:
            first, _, last = wanted.removeprefix("bytes=").partition("-")
            start, end = int(first), int(last) if last else len(data) - 1
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start : end + 1], 206
        if action and action[0] == "cut":  # announce the whole body, send part of it, hang up
            self.send(status, b"", headers | {"Content-Length": str(len(data))}, body=False)
            self.wfile.write(data[: action[1]])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.send(status, data, headers, body)

    def error(self, status: int, code: str, message: str, repo_commit: str | None = None) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": message}
        headers |= {"X-Error-Code": code} if code else {}
        headers |= {"X-Repo-Commit": repo_commit} if repo_commit else {}
        self.send(status, json.dumps({"error": message}).encode(), headers, self.command != "HEAD")

    def send(self, status: int, data: bytes, headers: dict, body: bool) -> None:
        self.send_response(status)
        headers = {"Content-Length": str(len(data))} | headers
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(data)


@contextlib.contextmanager
def serve(root: Path) -> Iterator[FakeHub]:
    """Run a FakeHub over `root` in a thread; yields the server, whose `endpoint` is its URL."""
    hub = FakeHub(root)
    hub.endpoint = f"http://127.0.0.1:{hub.server_address[1]}"
    thread = threading.Thread(target=hub.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        hub.shutdown()
        hub.server_close()
        thread.join()
