"""Checkpoints a training released, taken in place of training (a run's `released` section).

The manifest plays the part a trained run's does: written last by the rule `released`, it lists each
revision's step (its τ), folder and the SHA-256 of its files (from the fetch's marker, or hashed in a
local folder), so the probe verifies them before it loads anything and a file replaced after the
fetch is named. The revisions must share one architecture (their config.json equal up to bookkeeping
keys); revisions holding the very same weights are reported (some suites publish a branch twice).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

from torch import nn

from layerprobe.base.atomic import sha256, write_text
from layerprobe.config import released as settings
from layerprobe.models.units import State
from layerprobe.training.checkpoints import CheckpointError

# config.json keys that say nothing of the architecture (and differ between a suite's revisions)
BOOKKEEPING = {"_name_or_path", "transformers_version", "torch_dtype", "dtype", "use_cache", "_commit_hash"}


def revision_files(released: dict, revision: str) -> dict:
    """A revision's files and their SHA-256: the fetch's marker, or a local folder's files hashed."""
    from layerprobe.data import hub

    folder = settings.revision_folder(released, revision)
    if released.get("folder"):
        return hub.read_folder_revision(folder.parent, revision, allow_pickle=released["allow_pickle"])
    marker = folder / settings.MARKER
    try:
        return json.loads(marker.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{marker}: the fetched revision's marker is unreadable ({err}); fetch it again") from err


def write_manifest(released: dict, path: str | Path, run: str) -> dict:
    """The manifest of a released run's checkpoints, written atomically to `path`; CheckpointError names
    revisions of different architectures."""
    entries, configs = [], {}
    for revision, step in zip(released["revisions"], settings.steps(released)):
        info = revision_files(released, revision)
        folder = settings.revision_folder(released, revision)
        configs[revision] = _architecture(folder / "config.json")
        entries.append({"epoch": step, "revision": revision, "folder": str(folder), "files": info["files"]})
    first, reference = next(iter(configs.items()))
    for revision, config in configs.items():
        differing = sorted(k for k in set(config) | set(reference) if config.get(k) != reference.get(k))
        if differing:
            raise CheckpointError(
                f"run {run!r}: revisions {first!r} and {revision!r} of {_source(released)} have different "
                f"architectures (config.json differs in {', '.join(differing[:8])}); one run probes one architecture"
            )
    _report_twins(entries, released)
    manifest = {
        "released": {k: v for k, v in released.items() if k != "endpoint"},
        "model_type": reference.get("model_type"),
        "checkpoints": sorted(entries, key=lambda e: e["epoch"]),
    }
    write_text(Path(path), json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_manifest(path: str | Path) -> dict:
    path = Path(path)
    try:
        manifest = json.loads(path.read_text())
        manifest["checkpoints"], manifest["released"]  # noqa: B018 (both must be there)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: unreadable manifest of released checkpoints ({err})") from err
    return manifest


def factory(manifest: dict) -> Callable[[], nn.Module]:
    """A function building the run's architecture anew, weights drawn by its own initializer."""
    from layerprobe.models import pretrained

    final = manifest["checkpoints"][-1]
    return pretrained.factory(pretrained.load_config(final["folder"]), manifest["released"]["units"])


def load_states(manifest: dict, model: nn.Module) -> dict[int, State]:
    """{step: state dict of `model`} of every revision, each file verified against the manifest first."""
    from layerprobe.models import pretrained

    states = {}
    for entry in manifest["checkpoints"]:
        folder = Path(entry["folder"])
        for name, expected in entry["files"].items():
            path = folder / name
            if not path.is_file():
                raise CheckpointError(f"{path}: file of revision {entry['revision']!r} is missing; fetch it again")
            if sha256(path) != expected:
                raise CheckpointError(
                    f"{path}: file of revision {entry['revision']!r} differs from the SHA-256 it was fetched with "
                    "(changed or truncated since); fetch it again"
                )
        try:
            states[entry["epoch"]] = pretrained.load_state(folder, model, manifest["released"]["allow_pickle"])
        except ValueError as err:
            raise CheckpointError(f"revision {entry['revision']!r}: {err}") from err
    return states


def classes(manifest: dict) -> int:
    """The model's output width (its padded vocabulary, or its labels), from the final revision's config."""
    folder = Path(manifest["checkpoints"][-1]["folder"])
    return settings.classes(json.loads((folder / "config.json").read_text()))


def unit_rule(model: nn.Module) -> str | dict | None:
    """How the units of a model built by `factory` are found (None: a UnitChain's own units)."""
    from layerprobe.models import pretrained

    return pretrained.unit_rule(model)


def tokenizer_fingerprint(manifest: dict) -> str | None:
    """The fingerprint of the final revision's tokenizer (layerprobe.data.text), None where it has none."""
    from layerprobe.data import text

    folder = Path(manifest["checkpoints"][-1]["folder"])
    return text.fingerprint(folder) if (folder / "tokenizer.json").is_file() else None


def _architecture(path: Path) -> dict:
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: no readable config.json ({err})") from err
    return {k: v for k, v in config.items() if k not in BOOKKEEPING}


def _report_twins(entries: list[dict], released: dict) -> None:
    """Warn about revisions whose weights are byte-identical: a suite that serves one file under two steps
    would otherwise look like a network that did not change."""
    seen: dict[tuple, str] = {}
    for entry in entries:
        weights = tuple(sorted((k, v) for k, v in entry["files"].items() if _is_weights(k)))
        if weights in seen:
            warnings.warn(
                f"{_source(released)}: revisions {seen[weights]!r} and {entry['revision']!r} hold byte-identical "
                "weights (same SHA-256); their rows will be the same",
                stacklevel=2,
            )
        else:
            seen[weights] = entry["revision"]


def _is_weights(name: str) -> bool:
    return name.endswith((".safetensors", ".bin"))


def _source(released: dict) -> str:
    return released.get("repo") or str(released.get("folder"))
