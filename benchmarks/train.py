"""Benchmark: layerprobe's training loop against a plain DataLoader loop, same model, data and recipe.

Run from the repository root:

    python benchmarks/train.py --quick            # tiny sizes: seconds (the tests run this)
    python benchmarks/train.py                    # 4,096 CIFAR-sized images, 5 timed epochs each
    python benchmarks/train.py --device cuda --json train.json

Both loops train the same model from the same initial weights — a small VGG (3×32×32 inputs;
stages 16, 32, 64; fc 128; batch norm), and an FCN 3×128 where the input pipeline weighs more —
with SGD (momentum 0.9, weight decay 5e-4, lr 0.05), batch 128, on the same random uint8 images
with random labels, with the cifar-sgd augmentation (random crop, zero padding 4, horizontal flip):

  layerprobe  layerprobe.training.loop.train_epoch: uint8 batches gathered by index, moved to the device,
              cropped and flipped there for the whole batch (one gather), standardized there
  dataloader  what users write: a Dataset over the standardized float32 images whose __getitem__
              crops (padding 4) and flips one image with Python-level tensor ops, a
              torch.utils.data.DataLoader (shuffle, batch 128, --workers worker processes) collating
              the batch, the batch moved to the device, one SGD step

Timing: per model, one warm-up epoch each, then --epochs epochs each, the two loops taking turns
epoch by epoch (a load that comes and goes on a shared machine hits both alike), timed with
time.perf_counter (after torch.cuda.synchronize on CUDA). Columns: model, loop, samples_per_s
(images trained per second, median over the timed epochs), epoch_s (its seconds per epoch),
speedup (layerprobe's samples/s ÷ the DataLoader's). The first lines name the CPU, torch's threads and the device.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's layerprobe
from layerprobe import models  # noqa: E402
from layerprobe.base.device import resolve_device  # noqa: E402
from layerprobe.data import dataset as prepared  # noqa: E402
from layerprobe.data.dataset import channel_stats  # noqa: E402
from layerprobe.training import loop as train  # noqa: E402

FIELDS = ("model", "loop", "samples_per_s", "epoch_s", "speedup")
PADDING, BATCH, LR = 4, 128, 0.05


def random_data(n: int, size: int, seed: int = 0) -> prepared.Dataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    mean, std = channel_stats(x)
    return prepared.Dataset("random", x, y, x[:BATCH], y[:BATCH], 10, mean, std)


def make_model(data: prepared.Dataset, width: int, kind: str = "vgg") -> torch.nn.Module:
    if kind == "vgg":
        spec = {"name": "vgg", "stages": [[width], [2 * width], [4 * width]], "fc": [8 * width], "batch_norm": True}
    else:
        spec = {"name": "fcn", "depth": 3, "width": 8 * width}
    torch.manual_seed(0)
    return models.build(spec, data.input_shape, data.num_classes)


def optimizer_for(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, weight_decay=5e-4)


class CropFlipDataset(Dataset):
    """The usual per-sample pipeline: standardized float images, crop and flip one image at a time."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        image = F.pad(self.x[i], (PADDING,) * 4)
        top, left = torch.randint(0, 2 * PADDING + 1, (2,)).tolist()
        image = image[:, top : top + self.x.shape[2], left : left + self.x.shape[3]]
        if torch.rand(()) < 0.5:
            image = image.flip(2)
        return image, self.y[i]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_epochs(loops: dict, epochs: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds per epoch of each loop; the loops take turns epoch by epoch, so a load that comes
    and goes on a shared machine hits them alike."""
    for run_epoch in loops.values():  # warm-up
        run_epoch()
    sync(device)
    seconds = {name: [] for name in loops}
    for _ in range(epochs):
        for name, run_epoch in loops.items():
            start = time.perf_counter()
            run_epoch()
            sync(device)
            seconds[name].append(time.perf_counter() - start)
    return seconds


def layerprobe_loop(data: prepared.Dataset, width: int, device: torch.device, kind: str):
    model = make_model(data, width, kind).to(device).train()
    optimizer = optimizer_for(model)
    split = train.Batches(data, "train", device)
    generators = {"order": torch.Generator().manual_seed(1), "augment": torch.Generator(device).manual_seed(2)}
    autocast = torch.autocast(device.type, enabled=False)
    return lambda: train.train_epoch(model, optimizer, split, BATCH, PADDING, True, generators, autocast).item()


def dataloader_loop(data: prepared.Dataset, width: int, device: torch.device, workers: int, kind: str):
    model = make_model(data, width, kind).to(device).train()
    optimizer = optimizer_for(model)
    x, y = data.split("train")
    loader = DataLoader(
        CropFlipDataset(x, y),
        batch_size=BATCH,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=device.type == "cuda",
    )

    def epoch() -> float:
        total = torch.zeros((), dtype=torch.float64, device=device)
        for images, labels in loader:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
        return total.item()

    return epoch


def measure(
    n: int, size: int, width: int, epochs: int, device: torch.device, workers: int, kind: str = "vgg"
) -> list[dict]:
    data = random_data(n, size)
    loops = {
        "layerprobe": layerprobe_loop(data, width, device, kind),
        "dataloader": dataloader_loop(data, width, device, workers, kind),
    }
    rows = []
    for name, seconds in time_epochs(loops, epochs, device).items():
        median = statistics.median(seconds)
        rows.append({"model": kind, "loop": name, "samples_per_s": n / median, "epoch_s": median, "speedup": None})
    rows[0]["speedup"] = rows[0]["samples_per_s"] / rows[1]["samples_per_s"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default 0)")
    parser.add_argument("--epochs", type=int, default=None, help="timed epochs per loop")
    parser.add_argument("--models", default="vgg,fcn", help="vgg, fcn or both (default vgg,fcn)")
    parser.add_argument("--json", type=Path, default=None, help="write the rows as JSON")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    n, size, width, epochs = (512, 16, 8, 1) if args.quick else (4_096, 32, 16, 5)
    epochs = args.epochs or epochs
    print(
        f"cpu: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, device {device}, DataLoader workers {args.workers}"
    )
    print(
        f"{n} images 3x{size}x{size}, width {width}, batch {BATCH}, crop pad {PADDING} + flip, "
        f"{epochs} timed epoch(s) after a warm-up"
    )
    rows = [
        row for kind in args.models.split(",") for row in measure(n, size, width, epochs, device, args.workers, kind)
    ]
    print(f"{'model':<7}{'loop':<12}{'samples/s':>12}{'epoch s':>10}{'speedup':>10}")
    for row in rows:
        speedup = f"{row['speedup']:.2f}x" if row["speedup"] else ""
        print(f"{row['model']:<7}{row['loop']:<12}{row['samples_per_s']:>12.0f}{row['epoch_s']:>10.2f}{speedup:>10}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
