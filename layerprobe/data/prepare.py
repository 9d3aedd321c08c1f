"""A declared dataset read into a `Dataset`: its files verified (or downloaded), read by its format."""

from __future__ import annotations

from pathlib import Path

import torch

from layerprobe.config import section
from layerprobe.config.datasets import BUILTIN, declarations, file_roles
from layerprobe.data import download, formats
from layerprobe.data.dataset import Dataset, channel_stats


def prepare(name: str, declaration: dict | None = None, files: dict[str, str | Path] | None = None,
            download_dir: str | Path | None = None, workers: int = 1) -> Dataset:
    """Read a declared dataset into a `Dataset`.

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
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if len(y) == 0:  # refused here: training would fail on it only after the file was written
            raise ValueError(f"dataset {name!r}: its {split} split is empty (0 examples); "
                             "check its files and settings")
        if len(x) != len(y):
            raise ValueError(f"dataset {name!r}: its {split} split has {len(x)} examples but {len(y)} labels")
        if int(y.min()) < 0 or int(y.max()) >= num_classes:
            raise ValueError(f"dataset {name!r}: {split} labels span {int(y.min())}..{int(y.max())}, "
                             f"outside 0..{num_classes - 1} (num_classes: {num_classes})")
    if x_train.dtype == torch.int64:  # token ids: the model's input as they are
        mean, std = (), ()
    elif decl.get("normalization"):
        mean, std = tuple(decl["normalization"]["mean"]), tuple(decl["normalization"]["std"])
        if not len(mean) == len(std) == x_train.shape[1]:
            raise ValueError(f"datasets.{name}.normalization: {len(mean)} means and {len(std)} stds "
                             f"for images with {x_train.shape[1]} channel(s)")
    else:
        # Per channel over all training pixels, as is usual for images (per-pixel scaling would blow
        # up the nearly constant border pixels).
        mean, std = channel_stats(x_train)
    return Dataset(name, x_train, y_train, x_test, y_test, num_classes=num_classes, mean=mean, std=std)


def _with_defaults(name: str, decl: dict) -> dict:
    """A declaration checked against the config schema, its defaults filled (for library callers)."""
    return section("datasets", {name: decl})[name]
