"""Training with SGD + momentum and a piecewise-constant learning rate, checkpointing chosen epochs.

Epoch 0 is the exact initial model; the final epoch is always saved. Everything random (the initial
weights, the batch order) comes from the run's seed, so a CPU run is bitwise reproducible.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from layerprobe import checkpoints
from layerprobe.datasets import Splits
from layerprobe.metrics import classify
from layerprobe.seeds import derive_seed


class TrainingDiverged(RuntimeError):
    """The training loss stopped being finite."""


def checkpoint_epochs(requested: list[int], epochs: int) -> list[int]:
    """The epochs to save: the requested ones plus 0 (initialization) and the final epoch."""
    bad = [e for e in requested if not 0 <= e <= epochs]
    if bad:
        raise ValueError(f"checkpoint epochs {bad} lie outside 0..{epochs} (the training length)")
    return sorted({0, epochs, *requested})


def _log_row(model: nn.Module, data: Splits, epoch: int, lr: float, step_loss: float) -> dict:
    model.eval()
    train = classify(model, *data.split("train"))
    test = classify(model, *data.split("test"))
    model.train()
    return {"epoch": epoch, "lr": lr, "step_loss": step_loss, "train_loss": train["loss"],
            "train_error": train["error"], "test_loss": test["loss"], "test_error": test["error"]}


def train(factory: Callable[[], nn.Module], data: Splits, recipe: dict, seed: int,
          checkpoint_dir: str | Path, save_epochs: list[int], progress: bool = True,
          meta: dict | None = None) -> list[dict]:
    """Train a model drawn by `factory` under `seed`; return one log row per epoch (0 included).

    With `progress`, a bar shows on a terminal and each epoch's log row is printed.

    `recipe` holds epochs, batch_size, lr, momentum, weight_decay, lr_milestones, lr_gamma.
    Raises TrainingDiverged naming the epoch when the loss becomes NaN or infinite; checkpoints
    saved before that stay as they are. The manifest is written only after the last epoch.
    The folder belongs to this training: checkpoints of an earlier training in it are removed
    first, so checkpoints of two different trainings never sit side by side.
    """
    epochs = recipe["epochs"]
    save_epochs = checkpoint_epochs(save_epochs, epochs)
    checkpoints.clear(checkpoint_dir)
    meta = {"seed": seed, **(meta or {})}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = factory()
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe["lr"], momentum=recipe["momentum"],
                                weight_decay=recipe["weight_decay"])
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, recipe["lr_milestones"], recipe["lr_gamma"])
    order = torch.Generator().manual_seed(derive_seed(seed, "batch-order"))

    checkpoints.save(checkpoint_dir, 0, model.state_dict(), **meta)
    log = [_log_row(model, data, 0, optimizer.param_groups[0]["lr"], float("nan"))]
    model.train()
    # A bar on a terminal (disable=None turns it off elsewhere); one line per epoch in any case.
    bar = tqdm(range(1, epochs + 1), desc="train", unit="epoch", disable=None if progress else True)
    for epoch in bar:
        lr = optimizer.param_groups[0]["lr"]
        total, steps = 0.0, 0
        for batch in torch.randperm(len(data.x_train), generator=order).split(recipe["batch_size"]):
            loss = F.cross_entropy(model(data.normalize(data.x_train[batch])), data.y_train[batch])
            if not math.isfinite(loss.item()):
                kept = [e for e in save_epochs if e < epoch]
                raise TrainingDiverged(
                    f"training diverged in epoch {epoch} (loss {loss.item()}, learning rate {lr}); "
                    f"checkpoints of epochs {kept} in {checkpoint_dir} are intact; lower train.lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, steps = total + loss.item(), steps + 1
        schedule.step()
        if epoch in save_epochs:
            checkpoints.save(checkpoint_dir, epoch, model.state_dict(), **meta)
        log.append(_log_row(model, data, epoch, lr, total / steps))
        if progress:
            tqdm.write(", ".join(f"{k} {v:.4g}" for k, v in log[-1].items()))
    checkpoints.write_manifest(checkpoint_dir, save_epochs, **meta)
    return log
