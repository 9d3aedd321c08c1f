"""Readers of dataset formats: each turns a declaration (and its verified files) into raw tensors.

An image reader returns uint8 images (N, C, H, W) and int64 labels for the train and the test split;
a text reader, int64 token sequences (N, T) and their next tokens (N, T) (layerprobe.data.text). The
declarations in datasets.yaml (and in a user's config) name their reader by `format`. Errors name
the file or folder and what was expected.
"""
from __future__ import annotations

import fnmatch
import gzip
import io
import math
import pickle
import struct
import tarfile
import tempfile
import warnings
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable
from zlib import error as zlib_error

import numpy as np
import torch

from layerprobe.data import download, text

Raw = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # x_train, y_train, x_test, y_test


def read_digits(decl: dict, files: dict[str, Path], workers: int = 1) -> Raw:
    """scikit-learn's bundled UCI digits (pixel values 0..16), split by class with a seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = bunch.images.astype(np.uint8).reshape(-1, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=decl["test_fraction"], stratify=y, random_state=decl["split_seed"])
    return tuple(torch.from_numpy(a) for a in (x_train, y_train, x_test, y_test))


# ---- idx: MNIST's format (http://yann.lecun.com/exdb/mnist/, "FILE FORMATS"), optionally gzipped.

_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx_file(path: str | Path) -> np.ndarray:
    """One IDX file: magic 0x0000, a type byte, a dimension count, big-endian sizes, the values."""
    path = Path(path)
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as err:
            raise ValueError(f"{path}: a broken gzip file ({err})") from err
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_TYPES:
        raise ValueError(f"{path}: not an IDX file (magic bytes {data[:4].hex() or 'missing'})")
    ndim, dtype = data[3], np.dtype(_IDX_TYPES[data[2]])
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise ValueError(f"{path}: IDX header is cut short")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = math.prod(shape) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(f"{path}: IDX sizes {shape} need {expected} bytes of values, the file has {len(data) - header}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def read_idx(decl: dict, files: dict[str, Path], workers: int = 1) -> Raw:
    out = []
    for split in ("train", "test"):
        images, labels = read_idx_file(files[f"{split}_images"]), read_idx_file(files[f"{split}_labels"])
        if images.dtype != np.uint8 or images.ndim != 3:
            raise ValueError(f"{files[f'{split}_images']}: expected uint8 images (N, H, W), got {images.dtype} {images.shape}")
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise ValueError(f"{files[f'{split}_labels']}: expected integer labels (N,), got {labels.dtype} {labels.shape}")
        if len(images) != len(labels):
            raise ValueError(f"{split}: {len(images)} images but {len(labels)} labels")
        if decl["transpose"]:  # EMNIST stores each image transposed
            images = images.transpose(0, 2, 1)
        out += [torch.from_numpy(np.array(images[:, None], order="C")), torch.from_numpy(labels.astype(np.int64))]  # copies: the file's bytes are read-only
    return tuple(out)


# ---- cifar: python pickle batches in a tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html).

class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists and numpy arrays only: a pickle can otherwise run any code."""
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("numpy.core.numeric", "_frombuffer"),
               ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data batch")
        return super().find_class(module, name)


def read_cifar_batch(path: Path, labels_key: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as handle:
            batch = _ArrayUnpickler(handle, encoding="latin1").load()
        data, labels = np.asarray(batch["data"]), np.asarray(batch[labels_key])
    except KeyError as err:
        raise ValueError(f"{path}: no {err} entry in this batch (labels_key: {labels_key!r})") from err
    except Exception as err:
        raise ValueError(f"{path}: not a CIFAR python batch ({err})") from err
    if data.dtype != np.uint8 or labels.dtype.kind not in "iu":  # never cast: 0..1 floats would become zeros
        raise ValueError(f"{path}: expected uint8 data and integer labels, got {data.dtype} and {labels.dtype}")
    labels = labels.astype(np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise ValueError(f"{path}: expected data (N, 3072) and N labels, got {data.shape} and {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar(decl: dict, files: dict[str, Path], workers: int = 1) -> Raw:
    archive = files["archive"]
    # Unpacked beside the download (not /tmp, often small on clusters), and removed afterwards.
    with tempfile.TemporaryDirectory(prefix=".extract.", dir=archive.parent) as tmp:
        root = download.extract(archive, Path(tmp) / "archive")
        out = []
        for split in ("train", "test"):
            parts = []
            for member in decl[f"{split}_batches"]:
                path = root / member
                if not path.is_file():
                    raise ValueError(f"{archive}: no member {member!r} ({split}_batches); "
                                     f"it holds {sorted(str(p.relative_to(root)) for p in root.rglob('*') if p.is_file())[:20]}")
                parts.append(read_cifar_batch(path, decl["labels_key"]))
            out += [torch.from_numpy(np.concatenate([p[0] for p in parts])),
                    torch.from_numpy(np.concatenate([p[1] for p in parts]))]
    return tuple(out)


# ---- imagefolder: root/{train,val}/<class>/<image>, decoded and resized once.

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


def load_image(path: str | Path, size: int) -> np.ndarray:
    """An image as uint8 (3, size, size): shorter side resized to `size`, then the center cropped."""
    from PIL import Image

    with Image.open(path) as img:
        img.draft("RGB", (size, size))  # JPEG: decode at a reduced scale that still covers `size`; far faster
        img = img.convert("RGB")
        width, height = img.size
        scale = size / min(width, height)
        new = (max(size, round(width * scale)), max(size, round(height * scale)))
        img = img.resize(new, Image.Resampling.BICUBIC)  # antialiased when shrinking
        left, top = (new[0] - size) // 2, (new[1] - size) // 2
        img = img.crop((left, top, left + size, top + size))
        return np.array(img, dtype=np.uint8).transpose(2, 0, 1)


def _try_load(job: tuple[Path, int]) -> np.ndarray | str:
    path, size = job
    try:
        return load_image(path, size)
    except Exception as err:  # every way a file can fail to decode: report it, the caller decides
        return f"{type(err).__name__}: {err}"


def image_list(folder: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Class names (sorted folder names) and every (image, label) below `folder`."""
    if not folder.is_dir():
        raise ValueError(f"{folder}: no such folder (expected class folders in {folder.parent}/{folder.name})")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"{folder}: no class folders (expected {folder}/<class>/<image>)")
    items = []
    for label, name in enumerate(classes):
        images = sorted(p for p in (folder / name).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not images:
            raise ValueError(f"{folder / name}: class folder with no images ({', '.join(IMAGE_SUFFIXES)})")
        items += [(p, label) for p in images]
    return classes, items


def read_imagefolder(decl: dict, files: dict[str, Path], workers: int = 1) -> Raw:
    if decl.get("root") is None:
        raise ValueError("root is not set: give the folder holding train/ and val/ class folders")
    root = Path(decl["root"]).expanduser()
    if not root.is_dir():
        raise ValueError(f"root {root} is not a folder")
    size = decl["image_size"]
    splits = {split: image_list(root / decl[f"{split}_dir"]) for split in ("train", "test")}
    train_classes, test_classes = splits["train"][0], splits["test"][0]
    if train_classes != test_classes:
        only = sorted(set(train_classes) ^ set(test_classes))
        raise ValueError(f"{root}: {decl['train_dir']}/ and {decl['test_dir']}/ have different class folders "
                         f"(in one only: {only[:10]}{' ...' if len(only) > 10 else ''})")
    if len(train_classes) != decl["num_classes"]:
        raise ValueError(f"{root / decl['train_dir']}: {len(train_classes)} class folders, "
                         f"but num_classes is {decl['num_classes']}")
    out = []
    for split, (_, items) in splits.items():
        x = np.empty((len(items), 3, size, size), dtype=np.uint8)
        y, kept = np.empty(len(items), dtype=np.int64), 0
        jobs = [(path, size) for path, _ in items]
        with _pool(workers) as pool:
            for (path, label), image in zip(items, pool(_try_load, jobs)):
                if isinstance(image, str):
                    if decl["on_bad_image"] == "fail":
                        raise ValueError(f"{path}: cannot decode ({image}); set on_bad_image: skip to leave such images out")
                    warnings.warn(f"skipping {path}: cannot decode ({image})", stacklevel=2)
                    continue
                x[kept], y[kept] = image, label  # compacted in place: no second copy of a large split
                kept += 1
        if kept == 0:
            raise ValueError(f"{root / decl[f'{split}_dir']}: no image could be decoded")
        out += [torch.from_numpy(x[:kept]), torch.from_numpy(y[:kept])]
    return tuple(out)


# ---- text: documents (the embedded pydoc topics, or a folder of .txt files), split, then tokenized.


def read_text(decl: dict, files: dict[str, Path], workers: int = 1) -> Raw:
    if decl["corpus"] == "pydoc":
        documents, where = text.embedded_documents(), "the pydoc corpus"
    else:
        documents, where = _folder_documents(decl.get("root")), str(decl["root"])
    train, test = text.split_documents(documents, decl["test_fraction"], decl["split_seed"], where)
    limit, tokenizer = decl["max_tokens"], model_tokenizer(files)
    tokens = [text.tokens(docs, tokenizer, limit[split]) for split, docs in (("train", train), ("test", test))]
    return text.token_splits(*tokens, decl["sequence_length"], where)


def model_tokenizer(files: dict[str, Path]):
    """The model tokenizer a text dataset declares (its folder is the file role `tokenizer`), or None: bytes."""
    return text.load_tokenizer(files["tokenizer"]) if "tokenizer" in files else None


def _folder_documents(root: str | None) -> list[tuple[str, str]]:
    if root is None:
        raise ValueError("root is not set: give the folder holding the corpus's .txt documents")
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise ValueError(f"root {folder} is not a folder")
    paths = sorted(p for p in folder.rglob("*.txt") if p.is_file())
    if not paths:
        raise ValueError(f"{folder}: no .txt documents in this folder")
    return [(str(p.relative_to(folder)), text.decode(p.read_bytes(), str(p))) for p in paths]


# ---- lm1b: the One Billion Word benchmark (https://www.statmt.org/lm-benchmark/): a tar.gz of
# sentence files, one tokenized news sentence per line, read as a stream (never unpacked).


def read_lm1b(decl: dict, files: dict[str, Path], workers: int = 1) -> Raw:
    archive = files["archive"]
    splits = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = sorted((m for m in tar if m.isfile()), key=lambda m: m.name)
            for split in ("train", "test"):
                patterns = decl[f"{split}_members"]
                chosen = [m for m in members if any(fnmatch.fnmatchcase(m.name, p) for p in patterns)]
                if not chosen:
                    raise ValueError(f"{archive}: no member matches {split}_members {patterns}")
                splits[split] = _sentences(tar, chosen, decl["max_tokens"][split], archive)
    except (tarfile.TarError, EOFError, OSError, zlib_error) as err:
        raise ValueError(f"{archive}: not a readable tar archive ({err})") from err
    return text.token_splits(splits["train"], splits["test"], decl["sequence_length"], str(archive))


def _sentences(tar: tarfile.TarFile, members: list, limit: int | None, archive: Path) -> torch.Tensor:
    """The members' sentences as byte tokens, one line each, up to `limit` tokens."""
    parts, total = [], 0
    for member in members:
        data = tar.extractfile(member).read()
        text.decode(data, f"{archive}: {member.name}")  # strictly UTF-8, or an error naming the member
        parts.append(data if data.endswith(b"\n") or not data else data + b"\n")
        total += len(parts[-1])
        if limit is not None and total >= limit:
            break
    joined = b"".join(parts)[:limit]
    return torch.frombuffer(bytearray(joined), dtype=torch.uint8).clone()


# ---- wikitext: WikiText (Merity et al. 2016), Wikipedia's Good and Featured articles, raw: a zip with
# one file per split, a paragraph per line, each article opened by a ' = Title = ' line.


def read_wikitext(decl: dict, files: dict[str, Path], workers: int = 1) -> Raw:
    archive, limit, tokenizer = files["archive"], decl["max_tokens"], model_tokenizer(files)
    splits = {}
    try:
        with zipfile.ZipFile(archive) as zipped:
            names = set(zipped.namelist())
            for split in ("train", "test"):
                member = decl[f"{split}_member"]
                if member not in names:
                    raise ValueError(f"{archive}: no member {member!r} ({split}_member); it holds {sorted(names)[:8]}")
                with zipped.open(member) as handle:
                    lines = io.TextIOWrapper(handle, encoding="utf-8", errors="strict")
                    splits[split] = text.tokens(_articles(lines, f"{archive}: {member}"), tokenizer, limit[split])
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise ValueError(f"{archive}: not a readable zip archive ({err})") from err
    except UnicodeDecodeError as err:
        raise ValueError(f"{archive}: not UTF-8 text ({err})") from err
    return text.token_splits(splits["train"], splits["test"], decl["sequence_length"], str(archive))


def _articles(lines, where: str):
    """(title, text) per article, read lazily (a split stops being read once it has its tokens)."""
    title, body = None, []
    for line in lines:
        heading = line.strip()
        if heading.startswith("= ") and heading.endswith(" =") and not heading.startswith("= ="):
            if body and "".join(body).strip():
                yield title or f"{where} (before the first article)", "".join(body).strip("\n")
            title, body = heading.strip("= ").strip(), [line]
        else:
            body.append(line)
    if body and "".join(body).strip():
        yield title or where, "".join(body).strip("\n")


class _pool:
    """map over processes when workers > 1 (decoding is CPU-bound), in order, else in this process."""

    def __init__(self, workers: int):
        self.executor = ProcessPoolExecutor(workers) if workers > 1 else None

    def __enter__(self) -> Callable:
        if self.executor is None:
            return map
        return lambda fn, jobs: self.executor.map(fn, jobs, chunksize=64)

    def __exit__(self, *exc) -> None:
        if self.executor is not None:
            self.executor.shutdown(cancel_futures=True)


# format name -> (reader, the file roles a declaration of it must list)
READERS: dict[str, tuple[Callable[..., Raw], tuple[str, ...]]] = {
    "digits": (read_digits, ()),
    "idx": (read_idx, ("train_images", "train_labels", "test_images", "test_labels")),
    "cifar": (read_cifar, ("archive",)),
    "imagefolder": (read_imagefolder, ()),
    "text": (read_text, ()),
    "lm1b": (read_lm1b, ("archive",)),
    "wikitext": (read_wikitext, ("archive",)),
}


def reader(fmt: str) -> Callable[..., Raw]:
    if fmt not in READERS:
        raise ValueError(f"unknown dataset format {fmt!r}; known: {', '.join(sorted(READERS))}")
    return READERS[fmt][0]
