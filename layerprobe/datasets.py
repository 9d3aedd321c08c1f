"""Datasets as tensors: prepared once by the data rule, then loaded by training and probing.

A prepared dataset is a `Splits`: standardized float32 images (N, C, H, W) and int64 labels for a
train and a test split. The built-in `digits` is scikit-learn's bundled copy of the UCI handwritten
digits (1,797 real 8x8 images), so the embedded default needs no download.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from layerprobe.atomic import atomic_path


SPLITS = ("test", "train")


@dataclass(frozen=True)
class Splits:
    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def split(self, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        if which not in SPLITS:
            raise ValueError(f"unknown split {which!r}; expected 'train' or 'test'")
        return (self.x_train, self.y_train) if which == "train" else (self.x_test, self.y_test)

    def splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {name: self.split(name) for name in SPLITS}


def _digits(settings: dict) -> Splits:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = bunch.images.reshape(len(bunch.images), -1).astype(np.float64)
    y = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=settings["test_fraction"], stratify=y, random_state=settings["split_seed"])
    # One mean and std over all training pixels, as is usual for images (per-pixel scaling would
    # blow up the nearly constant border pixels); statistics from the training split only.
    mean, std = x_train.mean(), x_train.std()

    def images(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((a - mean) / std).astype(np.float32)).reshape(-1, 1, 8, 8)

    return Splits("digits", images(x_train), torch.from_numpy(y_train),
                  images(x_test), torch.from_numpy(y_test), num_classes=10)


# name -> builder taking that dataset's settings from the config's `datasets` section.
BUILTIN: dict[str, Callable[[dict], Splits]] = {"digits": _digits}


def prepare(name: str, settings: dict) -> Splits:
    if name not in BUILTIN:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(BUILTIN))}")
    return BUILTIN[name](settings)


def save(splits: Splits, path: str | Path) -> None:
    payload = {"name": splits.name, "num_classes": splits.num_classes,
               "x_train": splits.x_train, "y_train": splits.y_train,
               "x_test": splits.x_test, "y_test": splits.y_test}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load(path: str | Path) -> Splits:
    try:
        payload = torch.load(path, weights_only=True)
        return Splits(payload["name"], payload["x_train"], payload["y_train"],
                      payload["x_test"], payload["y_test"], int(payload["num_classes"]))
    except Exception as err:  # any unreadable file gets the same clear message
        raise ValueError(f"{path}: not a readable layerprobe dataset file ({err})") from err
