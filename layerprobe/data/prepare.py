"""A declared dataset read into a `Dataset`: its files verified (or downloaded), read by its format."""

from __future__ import annotations

from pathlib import Path

import torch

from layerprobe.config import section
from layerprobe.config.datasets import BUILTIN, declarations, file_roles, model_tokenizer
from layerprobe.data import download, formats, text
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
    tokenizer = model_tokenizer(decl)
    if tokenizer is not None:
        local["tokenizer"] = _tokenizer_folder(name, tokenizer, (files or {}).get("tokenizer"), download_dir)
    try:
        x_train, y_train, x_test, y_test = read(decl, local, workers=workers)
    except ValueError as err:
        raise ValueError(f"dataset {name!r} ({decl['format']}): {err}") from err
    num_classes = decl["num_classes"]
    if num_classes is None:  # a model tokenizer's own vocabulary (added tokens included)
        num_classes = text.load_tokenizer(local["tokenizer"]).get_vocab_size(with_added_tokens=True)
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
    stamp = text.fingerprint(local["tokenizer"]) if tokenizer is not None else ("bytes" if x_train.dtype == torch.int64 else "")
    return Dataset(name, x_train, y_train, x_test, y_test, num_classes=num_classes, mean=mean, std=std, tokenizer=stamp)


def _tokenizer_folder(name: str, tokenizer: dict, given: str | Path | None, download_dir: str | Path | None) -> Path:
    """The folder holding the model tokenizer's tokenizer.json: given (a folder, or a file in it such as a
    fetched revision's marker), the declared folder, or the revision fetched into download_dir/hub."""
    if given is not None:
        return Path(given) if Path(given).is_dir() else Path(given).parent
    if "folder" in tokenizer:
        return Path(tokenizer["folder"]).expanduser()
    if download_dir is None:
        raise ValueError(f"dataset {name!r}: its tokenizer is {tokenizer['repo']}@{tokenizer['revision']}; "
                         "give files={'tokenizer': folder} or download_dir=")
    from layerprobe.data import hub

    folder = Path(download_dir) / "hub" / tokenizer["repo"] / tokenizer["revision"]
    hub.fetch_revision(tokenizer["repo"], tokenizer["revision"], folder)
    return folder


def _with_defaults(name: str, decl: dict) -> dict:
    """A declaration checked against the config schema, its defaults filled (for library callers)."""
    return section("datasets", {name: decl})[name]
