"""Training checkpoints on disk: one file per epoch plus a manifest with their SHA-256.

Files are `epoch_{τ}.pt`, each a dict with `state_dict`, `epoch` and run metadata, loadable with
`torch.load(path, weights_only=True)`. The manifest is written last, so a training job that died
leaves no manifest and downstream rules never see a half-trained run; the hashes catch a file that
was truncated or replaced after training.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from layerprobe.base.atomic import atomic_path, sha256, sweep, write_text

MANIFEST = "manifest.json"
RESUME = "resume.pt"  # layerprobe.training.loop's state for continuing a killed training


class CheckpointError(ValueError):
    """A checkpoint or manifest that is missing, corrupt, truncated or not what was trained."""


def path_for(directory: str | Path, epoch: int) -> Path:
    return Path(directory) / f"epoch_{epoch}.pt"


def save(directory: str | Path, epoch: int, state_dict: dict[str, torch.Tensor], **meta) -> Path:
    path = path_for(directory, epoch)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        # Saved through a file object, torch names the archive inside "archive" rather than after the
        # (random) temporary name, so the same weights give the same bytes and the same SHA-256.
        torch.save({"state_dict": state_dict, "epoch": epoch, **meta}, handle)
    return path


def load(path: str | Path, expected_sha256: str | None = None) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file is missing")
    if expected_sha256 is not None and sha256(path) != expected_sha256:
        raise CheckpointError(
            f"{path}: content differs from the manifest's SHA-256 "
            "(truncated or replaced after training); retrain this run"
        )
    try:
        payload = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:  # zip, pickle and EOF errors all mean the same to a user
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(payload, dict) or "state_dict" not in payload or "epoch" not in payload:
        raise CheckpointError(f"{path}: not a layerprobe checkpoint (expected a dict with 'state_dict' and 'epoch')")
    return payload


def clear(directory: str | Path) -> list[Path]:
    """Remove the manifest (first: the run stops counting as complete), then every checkpoint and resume
    state, and the temporary files of writes a kill interrupted (base.atomic.sweep)."""
    directory = Path(directory)
    removed = [
        p for p in [directory / MANIFEST, *sorted(directory.glob("epoch_*.pt")), directory / RESUME] if p.exists()
    ]
    for path in removed:
        path.unlink()
    return removed + sweep(directory)


def write_manifest(directory: str | Path, epochs: list[int], **meta) -> Path:
    directory = Path(directory)
    entries = [
        {"epoch": e, "file": path_for(directory, e).name, "sha256": sha256(path_for(directory, e))} for e in epochs
    ]
    path = directory / MANIFEST
    write_text(path, json.dumps({**meta, "checkpoints": entries}, indent=2) + "\n")
    return path


def load_all(manifest_path: str | Path) -> dict[int, dict[str, torch.Tensor]]:
    """Every checkpoint a manifest lists, verified, as {epoch: state_dict}."""
    manifest_path = Path(manifest_path)
    try:
        manifest = json.loads(manifest_path.read_text())
        entries = manifest["checkpoints"]
    except (OSError, ValueError, KeyError) as err:
        raise CheckpointError(f"{manifest_path}: unreadable checkpoint manifest ({err})") from err
    states = {}
    for entry in entries:
        payload = load(manifest_path.parent / entry["file"], entry["sha256"])
        if payload["epoch"] != entry["epoch"]:
            raise CheckpointError(
                f"{manifest_path.parent / entry['file']}: holds epoch {payload['epoch']}, "
                f"manifest says {entry['epoch']}"
            )
        states[entry["epoch"]] = payload["state_dict"]
    return states
