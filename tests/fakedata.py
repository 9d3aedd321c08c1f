"""Small files in the real dataset formats, and a local HTTP server (with Range support) for them."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file (MNIST's format) of a uint8 array: magic 0x0000 0x08 ndim, big-endian sizes, values."""
    return b"\0\0\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def idx_dataset(seed: int = 0, n_train: int = 30, n_test: int = 12, size: tuple[int, int] = (6, 5), classes: int = 4):
    """Gzipped IDX files by role, and the arrays they hold."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, *size), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % classes).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, *size), dtype=np.uint8),
        "test_labels": (np.arange(n_test) % classes).astype(np.uint8),
    }
    files = {role: gzip.compress(idx_bytes(a), mtime=0) for role, a in arrays.items()}
    return files, arrays


def tar_bytes(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    """A tar.gz holding `members` (name -> bytes) and symbolic links (name -> target)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buffer.getvalue()


def cifar_batch(rng: np.random.Generator, n: int, labels_key: str = "labels", classes: int = 10) -> tuple[bytes, dict]:
    """A pickled CIFAR python batch (protocol 2, as the published ones)."""
    batch = {
        "batch_label": "testing batch",
        "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        labels_key: [int(v) for v in rng.integers(0, classes, n)],
        "filenames": [f"img_{i}.png" for i in range(n)],
    }
    return pickle.dumps(batch, protocol=2), batch


class Server:
    """http.server on 127.0.0.1 in a thread, serving `files` (path -> bytes) with Range requests.

    Per path, `behaviour` may make it ignore Range (`ignore_range`: always 200 with the whole file),
    answer a Range with the wrong one (`wrong_range`: 206 with the whole file, from byte 0) or cut the
    connection after a number of bytes (`cut`: n). Every request's path and Range header
    is recorded in `requests`.
    """

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.behaviour: dict[str, dict] = {}
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                how = server.behaviour.get(self.path, {})
                start = 0
                ranged = self.headers.get("Range")
                if ranged and not how.get("ignore_range"):
                    start = 0 if how.get("wrong_range") else int(ranged.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: how["cut"]] if "cut" in how else body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def add(self, path: str, data: bytes, **behaviour) -> str:
        self.files[path] = data
        self.behaviour[path] = behaviour
        return self.url + path


def dead_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (a port just released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/gone.gz"
