"""Datasets as tensors: prepared once by the data rule, then loaded by training and probing.

A prepared dataset is a `Splits`: raw uint8 images (N, C, H, W) and int64 labels for a train and a
test split, with the per-channel mean and std (from the training split) that standardize them.
Images stay uint8 in memory and on disk (4x smaller; a large file is memory-mapped) and are
standardized where they are used, batch by batch, on the device (`normalize`), so training and
probing see the very same float values. The built-in `digits` is scikit-learn's bundled copy of the
UCI handwritten digits (1,797 real 8x8 images, pixel values 0..16), so the embedded default needs
no download.

A dataset is *declared*, not coded: a format (one reader in `layerprobe.formats`), its files with
mirrors and SHA-256, the number of classes and optionally the normalization. The built-ins are such
declarations (datasets.yaml); a config declares more, or overrides a built-in's keys.
"""
from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from layerprobe import download, formats
from layerprobe.atomic import atomic_path


SPLITS = ("test", "train")


@dataclass(frozen=True)
class Splits:
    name: str
    x_train: torch.Tensor  # uint8 (N, C, H, W), raw pixels
    y_train: torch.Tensor  # int64 (N,)
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]  # per channel, in raw pixel units
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        for x in (self.x_train, self.x_test):
            if x.dtype != torch.uint8 or x.dim() != 4:
                raise ValueError(f"{self.name}: images must be uint8 (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
        if not len(self.mean) == len(self.std) == self.x_train.shape[1]:
            raise ValueError(f"{self.name}: need one mean and std per channel ({self.x_train.shape[1]})")

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Raw uint8 images (on any device) as standardized float32."""
        mean, std = _stats(self.mean, self.std, x.device)
        return (x.float() - mean) / std

    def raw(self, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        """One split's raw uint8 images and labels."""
        if which not in SPLITS:
            raise ValueError(f"unknown split {which!r}; expected 'train' or 'test'")
        return (self.x_train, self.y_train) if which == "train" else (self.x_test, self.y_test)

    def split(self, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        """One split's standardized float32 images and labels."""
        x, y = self.raw(which)
        return self.normalize(x), y

    def splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {name: self.split(name) for name in SPLITS}


@functools.cache
def _stats(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std as (1, C, 1, 1) float32 tensors on `device`, made once, not per batch."""
    shape = (1, -1, 1, 1)
    return (torch.tensor(mean, dtype=torch.float32).view(shape).to(device),
            torch.tensor(std, dtype=torch.float32).view(shape).to(device))


def channel_stats(x: torch.Tensor, chunk: int = 1 << 26) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images (N, C, H, W), in float64, a channel at a time.

    A channel of up to `chunk` values is converted whole; a larger one (ImageNet) is summed in
    slices of images, two passes (mean, then squared deviations), so memory stays bounded.
    """
    means, stds = [], []
    n, per_image = x.shape[0], x[0, 0].numel()
    for c in range(x.shape[1]):
        if n * per_image <= chunk:
            channel = x[:, c].double()
            means.append(channel.mean().item())
            stds.append(channel.std().item())
            continue
        step = max(1, chunk // per_image)
        total = sum(x[i:i + step, c].double().sum().item() for i in range(0, n, step))
        mean = total / (n * per_image)
        squares = sum(((x[i:i + step, c].double() - mean) ** 2).sum().item() for i in range(0, n, step))
        means.append(mean)
        stds.append(math.sqrt(squares / (n * per_image - 1)))
    return tuple(means), tuple(stds)


# The built-in declarations; a config's `datasets` entries are merged over them (`declarations`).
BUILTIN_FILE = Path(__file__).with_name("datasets.yaml")
BUILTIN: dict[str, dict] = yaml.safe_load(BUILTIN_FILE.read_text())


def declarations(user: dict | None) -> dict[str, dict]:
    """The built-in declarations with a config's `datasets` entries merged over them.

    An entry with a built-in's name and the same (or no) `format` overrides just the keys it gives,
    nested ones too (e.g. one file's `urls`); one with another format replaces the built-in; any
    other name is taken as it is (the schema then checks that it is complete).
    """
    merged = copy.deepcopy(BUILTIN)
    for name, entry in (user or {}).items():
        base = merged.get(name)
        if isinstance(entry, dict) and base is not None and entry.get("format", base["format"]) == base["format"]:
            merged[name] = _merge(base, entry)
        else:
            merged[name] = copy.deepcopy(entry)
    return merged


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else copy.deepcopy(value)
    return out


def file_roles(declaration: dict) -> list[str]:
    """The roles of a declaration's downloaded files (e.g. train_images), in declaration order."""
    return list(declaration.get("files") or {})


def job_settings(declaration: dict) -> dict:
    """What shapes a prepared dataset: the declaration with each file reduced to its SHA-256.

    Mirrors do not change the bytes a checksum admits, so editing URLs reruns nothing.
    """
    settings = copy.deepcopy(declaration)
    if "files" in settings:
        settings["files"] = {role: entry["sha256"].lower() for role, entry in settings["files"].items()}
    return settings


def prepare(name: str, declaration: dict | None = None, files: dict[str, str | Path] | None = None,
            download_dir: str | Path | None = None, workers: int = 1) -> Splits:
    """Read a declared dataset into `Splits`.

    `declaration` is merged over the built-in of the same name (so `prepare("digits", {"split_seed": 1})`
    works); a dataset with files takes them from `files` (role -> path) or, missing there, downloads
    them into `download_dir`. Every file's SHA-256 is checked before it is read.
    """
    if declaration is None or "format" not in declaration:
        if name not in BUILTIN:
            raise ValueError(f"unknown dataset {name!r}: not a built-in ({', '.join(sorted(BUILTIN))}), "
                             "and no declaration with a format was given")
    decl = declarations({name: declaration or {}})[name]
    read = formats.reader(decl["format"])  # an unknown format: the error lists the known ones
    decl = _with_defaults(name, decl)
    local = {}
    for role in file_roles(decl):
        entry = decl["files"][role]
        if files and role in files:
            local[role] = Path(files[role])
            download.verify(local[role], entry["sha256"])
        elif download_dir is not None:
            local[role] = download.fetch(entry["urls"], entry["sha256"], Path(download_dir) / name / role)
        else:
            raise ValueError(f"dataset {name!r}: no path for its file {role!r} (give files= or download_dir=)")
    try:
        x_train, y_train, x_test, y_test = read(decl, local, workers=workers)
    except ValueError as err:
        raise ValueError(f"dataset {name!r} ({decl['format']}): {err}") from err
    num_classes = decl["num_classes"]
    for split, y in (("train", y_train), ("test", y_test)):
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise ValueError(f"dataset {name!r}: {split} labels span {int(y.min())}..{int(y.max())}, "
                             f"outside 0..{num_classes - 1} (num_classes: {num_classes})")
    if decl.get("normalization"):
        mean, std = tuple(decl["normalization"]["mean"]), tuple(decl["normalization"]["std"])
        if not len(mean) == len(std) == x_train.shape[1]:
            raise ValueError(f"datasets.{name}.normalization: {len(mean)} means and {len(std)} stds "
                             f"for images with {x_train.shape[1]} channel(s)")
    else:
        # Per channel over all training pixels, as is usual for images (per-pixel scaling would blow
        # up the nearly constant border pixels).
        mean, std = channel_stats(x_train)
    return Splits(name, x_train, y_train, x_test, y_test, num_classes=num_classes, mean=mean, std=std)


def _with_defaults(name: str, decl: dict) -> dict:
    """A declaration checked against the config schema, its defaults filled (for library callers)."""
    from layerprobe.config import section  # config imports this module

    return section("datasets", {name: decl})[name]


def save(splits: Splits, path: str | Path) -> None:
    payload = {"name": splits.name, "num_classes": splits.num_classes,
               "mean": list(splits.mean), "std": list(splits.std),
               "x_train": splits.x_train, "y_train": splits.y_train,
               "x_test": splits.x_test, "y_test": splits.y_test}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load(path: str | Path) -> Splits:
    try:
        # Memory-mapped: a large dataset is paged in as batches touch it, not read whole.
        payload = torch.load(path, weights_only=True, mmap=True)
        return Splits(payload["name"], payload["x_train"], payload["y_train"],
                      payload["x_test"], payload["y_test"], int(payload["num_classes"]),
                      tuple(payload["mean"]), tuple(payload["std"]))
    except Exception as err:  # any unreadable file gets the same clear message
        raise ValueError(f"{path}: not a readable layerprobe dataset file ({err})") from err
