"""Training-batch augmentation as whole-batch tensor ops on the batch's device: no per-sample Python.

`crop_flip` is torchvision's RandomCrop(size, padding=p) followed by RandomHorizontalFlip(), for a
whole batch at once: the batch is zero-padded once, and one gather with per-sample row and column
indices takes every sample's crop, its columns reversed where the sample is flipped. The random
offsets and flips are drawn from a torch.Generator on the batch's device, so a run's augmentation is
reproducible from its seed (bitwise on the CPU). `crop_flip_reference` is the same, one sample at a
time in plain Python, for the tests.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def draw(
    batch: int, padding: int, flip: bool, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample (row offset, column offset, flipped) on the generator's device."""
    device = generator.device
    if padding:
        offsets = torch.randint(0, 2 * padding + 1, (2, batch), generator=generator, device=device)
    else:
        offsets = torch.zeros(2, batch, dtype=torch.long, device=device)
    flips = (
        (torch.rand(batch, generator=generator, device=device) < 0.5)
        if flip
        else torch.zeros(batch, dtype=torch.bool, device=device)
    )
    return offsets[0], offsets[1], flips


def apply(x: torch.Tensor, padding: int, top: torch.Tensor, left: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Crop each sample of x (N, C, H, W) at (top, left) of its zero-padded image, flipping where `flips`."""
    n, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4) if padding else x
    rows = top[:, None] + torch.arange(h, device=x.device)  # (N, H)
    columns = torch.arange(w, device=x.device).expand(n, w)
    columns = torch.where(flips[:, None], columns.flip(1), columns) + left[:, None]  # (N, W)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], columns[:, None, None, :]]


def crop_flip(x: torch.Tensor, padding: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """A random crop (zero padding `padding` per side) and a random horizontal flip of every sample."""
    if not padding and not flip:
        return x
    return apply(x, padding, *draw(len(x), padding, flip, generator))


def crop_flip_reference(
    x: torch.Tensor, padding: int, top: torch.Tensor, left: torch.Tensor, flips: torch.Tensor
) -> torch.Tensor:
    """The same as `apply`, one sample at a time (the oracle of the tests)."""
    out = []
    for i in range(len(x)):
        image = F.pad(x[i], (padding,) * 4) if padding else x[i]
        image = image[:, int(top[i]) : int(top[i]) + x.shape[2], int(left[i]) : int(left[i]) + x.shape[3]]
        out.append(image.flip(2) if flips[i] else image)
    return torch.stack(out)
