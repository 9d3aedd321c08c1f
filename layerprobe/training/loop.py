"""Training with SGD + momentum and a piecewise-constant learning rate (the paper's nets), or AdamW with
warmup, cosine decay and gradient clipping (Transformers), checkpointing chosen epochs.

The settings are a recipe (layerprobe.config.recipes). Epoch 0 is the exact initial model; the final epoch
is always saved. Everything random (the initial weights, the batch order, the augmentation) comes
from the run's seed, so a CPU run is bitwise reproducible.

Batches are gathered from the raw uint8 images (or token sequences), moved to the device, augmented
there with whole-batch tensor ops (layerprobe.training.augment) and standardized there; no per-sample
Python runs in the loop. A sequence model's loss is the mean over every predicted token.

A training can be killed and started again: after every epoch a resume state (weights, optimizer,
schedule, every random generator, the log so far and a fingerprint of the settings) is written
atomically beside the checkpoints. Started again with the same settings, training continues from it
and ends bitwise identical (on the CPU) to an uninterrupted run; with other settings the folder is
cleared and training starts over.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from layerprobe.base.atomic import atomic_path, sweep
from layerprobe.base.device import resolve_device
from layerprobe.base.metrics import classify, cross_entropy
from layerprobe.base.seeds import derive_seed
from layerprobe.config import checkpoint_epochs, recipes
from layerprobe.data.dataset import Dataset
from layerprobe.training import augment, checkpoints

RESUME = checkpoints.RESUME
EVAL_BATCH = 1000
STAGE_FRACTION = 0.25  # a split goes to GPU memory whole when it takes at most this share of the free memory


class TrainingDiverged(RuntimeError):
    """The training loss stopped being finite."""


class Batches:
    """A split's raw images and labels where batches are gathered from, and the standardization."""

    def __init__(self, data: Dataset, which: str, device: torch.device):
        x, y = data.raw(which)
        if device.type == "cuda" and x.numel() <= STAGE_FRACTION * torch.cuda.mem_get_info(device)[0]:
            x = x.to(device)  # small enough: gather batches on the GPU, no per-batch copy
        self.x, self.y, self.device = x, y.to(device), device
        self.normalize = data.normalize  # one standardization for training and probing

    def images(self, index: torch.Tensor | slice) -> torch.Tensor:
        if isinstance(index, torch.Tensor):
            index = index.to(self.x.device, non_blocking=True)
        return self.x[index].to(self.device, non_blocking=True)


def _evaluate(model: nn.Module, split: Batches, autocast: torch.autocast) -> dict:
    """Error and loss of the model on a split, standardized batch by batch (no float copy of the split)."""

    def forward(index: torch.Tensor) -> torch.Tensor:
        with autocast:
            return model(split.normalize(split.images(index)))

    return classify(forward, torch.arange(len(split.x)), split.y, batch_size=EVAL_BATCH)


def _log_row(
    model: nn.Module,
    splits: dict[str, Batches] | None,
    epoch: int,
    lr: float,
    step_loss: float,
    autocast: torch.autocast,
) -> dict:
    row = {"epoch": epoch, "lr": lr, "step_loss": step_loss}
    if splits is None:
        return {**row, **{f"{s}_{m}": float("nan") for s in ("train", "test") for m in ("loss", "error")}}
    model.eval()
    train, test = _evaluate(model, splits["train"], autocast), _evaluate(model, splits["test"], autocast)
    model.train()
    return {
        **row,
        "train_loss": train["loss"],
        "train_error": train["error"],
        "test_loss": test["loss"],
        "test_error": test["error"],
    }


def _log_line(row: dict) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in row.items())


def fingerprint(
    settings: dict, seed: int, save_epochs: list[int], meta: dict, data: Dataset, device: torch.device, precision: str
) -> str:
    """SHA-256 of everything that shapes the trained weights: a resume state is used only when it matches."""
    identity = {
        "settings": settings,
        "seed": seed,
        "save_epochs": save_epochs,
        "meta": meta,
        "device": device.type,
        "precision": precision,
        # CPU sums depend on how work is split over threads: bitwise resumes need the same number.
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "data": [
            data.name,
            list(data.x_train.shape),
            list(data.x_test.shape),
            data.num_classes,
            list(data.mean),
            list(data.std),
        ],
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def _rng_states(generators: dict[str, torch.Generator], device: torch.device) -> dict:
    states = {name: g.get_state() for name, g in generators.items()}
    states["torch_cpu"] = torch.get_rng_state()
    if device.type == "cuda":
        states["torch_cuda"] = torch.cuda.get_rng_state(device)  # this device only: others may be absent on resume
    return states


def _set_rng_states(states: dict, generators: dict[str, torch.Generator], device: torch.device) -> None:
    for name, g in generators.items():
        g.set_state(states[name])
    torch.set_rng_state(states["torch_cpu"])
    if device.type == "cuda":
        torch.cuda.set_rng_state(states["torch_cuda"], device)


def _load_resume(directory: Path, expected: str, save_epochs: list[int]) -> dict | None:
    """The folder's resume state when it belongs to this very training and the folder is consistent."""
    path = directory / RESUME
    if not path.is_file():
        return None
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:  # written atomically, so a foreign or damaged file: ask, never clear the run
        raise checkpoints.CheckpointError(
            f"{path}: unreadable resume state ({type(err).__name__}: {str(err).splitlines()[0]}); delete it to train "
            "this run from scratch (its checkpoints are then replaced)"
        ) from err
    if state.get("fingerprint") != expected:
        return None  # other settings: the folder is cleared and training starts over
    epoch = state["epoch"]
    missing = [e for e in save_epochs if e < epoch and not checkpoints.path_for(directory, e).is_file()]
    later = [e for e in save_epochs if e > epoch and checkpoints.path_for(directory, e).is_file()]
    if missing or later:
        warnings.warn(
            f"{directory}: checkpoints {missing or later} do not fit the resume state of epoch {epoch}; "
            "training from scratch",
            stacklevel=2,
        )
        return None
    return state


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    split: Batches,
    batch_size: int,
    crop: int,
    flip: bool,
    generators: dict[str, torch.Generator],
    autocast: torch.autocast,
    schedule: torch.optim.lr_scheduler.LRScheduler | None = None,
    clip_norm: float | None = None,
    epoch_steps: int | None = None,
) -> torch.Tensor:
    """One pass over the split in a random order; the mean step loss as a float64 tensor on the device.

    Per batch: gather the uint8 images, move them to the device, crop and flip them there, standardize,
    one optimizer step (its gradients clipped to `clip_norm` first when set; `schedule`, when given, is
    stepped after every step). With `epoch_steps`, the epoch is that many steps instead, over fresh
    permutations joined end to end (each example once per pass, then reshuffled), so an epoch is a
    fixed count of steps whatever the split's size. Nothing waits on the device (the loss is summed there).
    """
    order, n = generators["order"], len(split.x)
    if epoch_steps is None:
        indices = torch.randperm(n, generator=order)
    else:
        passes = math.ceil(epoch_steps * batch_size / n)
        indices = torch.cat([torch.randperm(n, generator=order) for _ in range(passes)])[: epoch_steps * batch_size]
    total, steps = torch.zeros((), dtype=torch.float64, device=split.device), 0
    for batch in indices.split(batch_size):
        x = augment.crop_flip(split.images(batch), crop, flip, generators["augment"])
        with autocast:
            loss = cross_entropy(model(split.normalize(x)), split.y[batch.to(split.device)])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
        optimizer.step()
        if schedule is not None:
            schedule.step()
        total += loss.detach()
        steps += 1
    return total / steps


def _optimizer(model: nn.Module, settings: dict) -> torch.optim.Optimizer:
    lr = recipes.effective_lr(settings)
    if settings["optimizer"] == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=lr,
            momentum=settings["momentum"],
            weight_decay=settings["weight_decay"],
            nesterov=settings["nesterov"],
        )
    # Decoupled decay on matrices and embeddings only: decaying a norm's gain or a bias towards 0 only
    # fights the model (as GPT-2 and nanoGPT train).
    params = list(model.parameters())
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": settings["weight_decay"]},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(settings["betas"]))


def _schedule(
    optimizer: torch.optim.Optimizer, settings: dict, total_steps: int
) -> tuple[torch.optim.lr_scheduler.LRScheduler, bool]:
    """The learning-rate schedule, and whether it is stepped per optimizer step (else per epoch).

    The paper's multistep schedule without warmup stays torch's MultiStepLR, stepped per epoch, so its
    runs train as they always did; warmup and the cosine decay are a factor of the step count."""
    warmup, cosine = settings["warmup_steps"], settings["schedule"] == "cosine"
    if not cosine and not warmup:
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, settings["lr_milestones"], settings["lr_gamma"]), False
    steps_per_epoch = total_steps // settings["epochs"]
    milestones, gamma = settings["lr_milestones"], settings["lr_gamma"]

    def factor(step: int) -> float:
        rise = min(1.0, (step + 1) / warmup) if warmup else 1.0  # the first step already moves
        if cosine:
            done = min(1.0, max(0, step - warmup) / max(1, total_steps - warmup))
            return rise * 0.5 * (1.0 + math.cos(math.pi * done))
        return rise * gamma ** sum(step // steps_per_epoch >= m for m in milestones)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor), True


def train(
    factory: Callable[[], nn.Module],
    data: Dataset,
    recipe: dict,
    seed: int,
    checkpoint_dir: str | Path,
    save_epochs: list[int],
    progress: bool = True,
    meta: dict | None = None,
) -> list[dict]:
    """Train a model drawn by `factory` under `seed`; return one log row per epoch (0 included).

    With `progress`, a bar shows on a terminal and each epoch's log row is printed.

    `recipe` is a run's `train` settings: a recipe name (`recipe`) with overrides, or the full
    settings a validated config holds (layerprobe.config.recipes; RecipeError before any work when bad).
    Raises TrainingDiverged naming the epoch when the loss becomes NaN or infinite; checkpoints
    saved before that stay as they are. The manifest is written only after the last epoch.
    The folder belongs to this training: a resume state of the same training there is continued;
    anything else in it (checkpoints of an earlier training) is removed first, so checkpoints of
    two different trainings never sit side by side.
    """
    settings = recipes.for_training(recipe)
    directory = Path(checkpoint_dir)
    epochs = settings["epochs"]
    save_epochs = checkpoint_epochs(save_epochs, epochs)
    device = resolve_device(settings["device"])
    precision = settings["precision"]
    if precision == "bf16" and device.type != "cuda":
        warnings.warn(f"precision bf16 is autocast on CUDA only; training on {device} in fp32", stacklevel=2)
        precision = "fp32"
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    meta = {"seed": seed, **(meta or {}), "train": settings}
    key = fingerprint(settings, seed, save_epochs, meta, data, device, precision)
    had_state = (directory / RESUME).is_file()
    resume = _load_resume(directory, key, save_epochs)
    if resume is None:
        if had_state and progress:
            tqdm.write(f"{directory / RESUME} is of other settings or other checkpoints: training from scratch")
        checkpoints.clear(directory)
    else:
        sweep(directory)  # what a kill mid-write left (the folder is this training's alone)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = factory()
    model.to(device)
    optimizer = _optimizer(model, settings)
    steps_per_epoch = settings["steps_per_epoch"] or math.ceil(len(data.y_train) / settings["batch_size"])
    schedule, per_step = _schedule(optimizer, settings, steps_per_epoch * epochs)
    generators = {
        "order": torch.Generator().manual_seed(derive_seed(seed, "batch-order")),
        "augment": torch.Generator(device).manual_seed(derive_seed(seed, "augment")),
    }
    crop, flip = settings["augment"]["crop_padding"], settings["augment"]["flip"]
    splits = {which: Batches(data, which, device) for which in ("train", "test")}
    train_split = splits["train"]

    def snapshot(epoch: int, log: list[dict]) -> None:
        state = {
            "fingerprint": key,
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "rng": _rng_states(generators, device),
            "log": log,
        }
        with atomic_path(directory / RESUME) as tmp, open(tmp, "wb") as handle:
            torch.save(state, handle)

    def save_checkpoint(epoch: int) -> None:
        checkpoints.save(directory, epoch, {k: v.detach().cpu() for k, v in model.state_dict().items()}, **meta)

    if resume is None:
        start = 1
        log = [_log_row(model, splits, 0, optimizer.param_groups[0]["lr"], float("nan"), autocast)]
        snapshot(0, log)  # the resume state first, then the checkpoint: see below
        save_checkpoint(0)
    else:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        schedule.load_state_dict(resume["schedule"])
        _set_rng_states(resume["rng"], generators, device)
        log, start = resume["log"], resume["epoch"] + 1
        # Killed between the resume state and the checkpoint of its epoch: that checkpoint is the state's model.
        if resume["epoch"] in save_epochs and not checkpoints.path_for(directory, resume["epoch"]).is_file():
            save_checkpoint(resume["epoch"])
        if progress:
            # Snakemake deletes a job's log before it runs again: the lines of the epochs before the
            # kill are written again from the resume state, then where training goes on.
            for row in log[1:]:
                tqdm.write(_log_line(row))
            tqdm.write(f"resuming after epoch {resume['epoch']} from {directory / RESUME}")
    model.train()
    # A bar on a terminal (disable=None turns it off elsewhere); one line per epoch in any case.
    bar = tqdm(
        range(start, epochs + 1),
        desc="train",
        unit="epoch",
        disable=None if progress else True,
        initial=start - 1,
        total=epochs,
    )
    for epoch in bar:
        lr = optimizer.param_groups[0]["lr"]
        # One host sync per epoch: a NaN or inf loss anywhere in it makes the mean non-finite.
        step_loss = train_epoch(
            model,
            optimizer,
            train_split,
            settings["batch_size"],
            crop,
            flip,
            generators,
            autocast,
            schedule if per_step else None,
            settings["clip_norm"],
            settings["steps_per_epoch"],
        ).item()
        if not math.isfinite(step_loss):
            kept = [e for e in save_epochs if e < epoch]
            raise TrainingDiverged(
                f"training diverged in epoch {epoch} (mean loss {step_loss}, learning rate {lr}); "
                f"checkpoints of epochs {kept} in {directory} are intact; lower train.lr"
            )
        if not per_step:
            schedule.step()
        evaluate = epoch % settings["eval_every"] == 0 or epoch in save_epochs
        log.append(_log_row(model, splits if evaluate else None, epoch, lr, step_loss, autocast))
        # The resume state before the checkpoint: a kill between them leaves a state whose epoch's
        # checkpoint is missing (written from the state on resume), never a checkpoint ahead of the state.
        snapshot(epoch, log)
        if epoch in save_epochs:
            save_checkpoint(epoch)
        if progress:
            tqdm.write(_log_line(log[-1]))
    checkpoints.write_manifest(directory, save_epochs, **meta)
    (directory / RESUME).unlink(missing_ok=True)
    return log
