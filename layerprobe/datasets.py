"""Datasets as tensors: prepared once by the data rule, then loaded by training and probing.

A prepared dataset is a `Splits`: raw uint8 images (N, C, H, W) and int64 labels for a train and a
test split, with the per-channel mean and std (from the training split) that standardize them.
Images stay uint8 in memory and on disk (4x smaller; a large file is memory-mapped) and are
standardized where they are used, batch by batch, on the device (`normalize`), so training and
probing see the very same float values. The built-in `digits` is scikit-learn's bundled copy of the
UCI handwritten digits (1,797 real 8x8 images, pixel values 0..16), so the embedded default needs
no download.
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
        shape = (1, -1, 1, 1)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(shape)
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


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images (N, C, H, W), in float64, a channel at a time."""
    means, stds = [], []
    for c in range(x.shape[1]):
        channel = x[:, c].double()
        means.append(channel.mean().item())
        stds.append(channel.std().item())
    return tuple(means), tuple(stds)


def _digits(settings: dict) -> Splits:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = bunch.images.astype(np.uint8).reshape(-1, 1, 8, 8)  # pixel values 0..16
    y = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=settings["test_fraction"], stratify=y, random_state=settings["split_seed"])
    x_train, x_test = torch.from_numpy(x_train), torch.from_numpy(x_test)
    # One mean and std over all training pixels of the one channel, as is usual for images
    # (per-pixel scaling would blow up the nearly constant border pixels).
    mean, std = channel_stats(x_train)
    return Splits("digits", x_train, torch.from_numpy(y_train), x_test, torch.from_numpy(y_test),
                  num_classes=10, mean=mean, std=std)


# name -> builder taking that dataset's settings from the config's `datasets` section.
BUILTIN: dict[str, Callable[[dict], Splits]] = {"digits": _digits}


def prepare(name: str, settings: dict) -> Splits:
    if name not in BUILTIN:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(BUILTIN))}")
    return BUILTIN[name](settings)


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
