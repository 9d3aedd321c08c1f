"""Datasets as tensors: prepared once by the data rule, then loaded by training and probing.

A prepared dataset is a `Dataset` of images or of token sequences, a train and a test split each.
Images: raw uint8 (N, C, H, W) and int64 labels (N,), with the per-channel mean and std (from the
training split) that standardize them. Token sequences (a text corpus, layerprobe.data.text): int64
token ids (N, T) and their next tokens (N, T), one label per position, so a sequence model is scored
per token; the ids are the model's input as they are.
Images stay uint8 in memory and on disk (4x smaller; a large file is memory-mapped) and are
standardized where they are used, batch by batch, on the device (`normalize`), so training and
probing see the very same float values. The built-in `digits` is scikit-learn's bundled copy of the
UCI handwritten digits (1,797 real 8x8 images, pixel values 0..16), so the embedded default needs
no download.

What evaluation takes is `Splits`: {split name: (inputs, labels)}, for any split names.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch

from layerprobe.base.atomic import atomic_path
from layerprobe.config import SPLITS

Splits = Mapping[str, tuple[torch.Tensor, torch.Tensor]]  # {split name: (inputs, labels)}


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: torch.Tensor  # uint8 (N, C, H, W) raw pixels, or int64 (N, T) token ids
    y_train: torch.Tensor  # int64 (N,) labels, or int64 (N, T) next tokens
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int  # classes, or the tokenizer's vocabulary
    mean: tuple[float, ...]  # per channel, in raw pixel units (none for tokens)
    std: tuple[float, ...]
    tokenizer: str = ""  # what made the tokens: "bytes", a model tokenizer's fingerprint (data.text); "" for images

    def __post_init__(self) -> None:
        for x, y in ((self.x_train, self.y_train), (self.x_test, self.y_test)):
            if self.tokens:
                if x.dim() != 2 or y.shape != x.shape:
                    raise ValueError(f"{self.name}: token ids must be int64 (N, T) with next tokens of the same "
                                     f"shape, got {tuple(x.shape)} and {tuple(y.shape)}")
            elif x.dtype != torch.uint8 or x.dim() != 4:
                raise ValueError(f"{self.name}: images must be uint8 (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
        channels = 0 if self.tokens else self.x_train.shape[1]
        if not len(self.mean) == len(self.std) == channels:
            raise ValueError(f"{self.name}: need one mean and std per channel ({channels})")

    @property
    def tokens(self) -> bool:
        """Whether the inputs are token sequences (not images)."""
        return self.x_train.dtype == torch.int64

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Raw uint8 images (on any device) as standardized float32; token ids as they are."""
        if self.tokens:
            return x
        mean, std = _stats(self.mean, self.std, x.device)
        return (x.float() - mean) / std

    def raw(self, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        """One split's raw inputs (uint8 images, token ids) and labels."""
        if which not in SPLITS:
            raise ValueError(f"unknown split {which!r}; expected 'train' or 'test'")
        return (self.x_train, self.y_train) if which == "train" else (self.x_test, self.y_test)

    def split(self, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        """One split's model inputs (standardized float32 images, token ids) and labels."""
        x, y = self.raw(which)
        return self.normalize(x), y

    def splits(self) -> Splits:
        """Every split, standardized."""
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


def save(splits: Dataset, path: str | Path) -> None:
    payload = {"name": splits.name, "num_classes": splits.num_classes, "tokenizer": splits.tokenizer,
               "mean": list(splits.mean), "std": list(splits.std),
               "x_train": splits.x_train, "y_train": splits.y_train,
               "x_test": splits.x_test, "y_test": splits.y_test}
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save(payload, handle)  # a file object: the same data give the same bytes (see checkpoints.save)


def load(path: str | Path) -> Dataset:
    try:
        # Memory-mapped: a large dataset is paged in as batches touch it, not read whole.
        payload = torch.load(path, weights_only=True, mmap=True)
        return Dataset(payload["name"], payload["x_train"], payload["y_train"],
                      payload["x_test"], payload["y_test"], int(payload["num_classes"]),
                      tuple(payload["mean"]), tuple(payload["std"]), payload.get("tokenizer", ""))
    except Exception as err:  # any unreadable file gets the same clear message
        raise ValueError(f"{path}: not a readable layerprobe dataset file ({err})") from err
