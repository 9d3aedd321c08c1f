"""A run's `released` section read without torch: its revisions, their training steps, where their files
lie, and the model config a revision declares (its config.json) once it is on disk.

A released run is probed on the checkpoints a training published (e.g. Pythia's step0 ... step143000),
fetched from a Hugging Face model repository into `data/hub/{repo}/{revision}/` or read from a local
folder with one subfolder per revision. A revision's step is its τ: step 0 is the initialization and
the largest step the final model, as epochs are for a run layerprobe trained.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

HUB_FOLDER = "data/hub"  # fetched revisions: data/hub/{owner}/{name}/{revision}/ (the workflow's working folder)
MARKER = "revision.json"  # written last into a fetched revision's folder (layerprobe.data.hub)
STEP = re.compile(r"step(\d+)")


def steps(released: dict) -> list[int]:
    """The training step of each revision, in the order of `revisions` (ValueError naming what is wrong)."""
    revisions, given = released["revisions"], released.get("steps")
    if given is not None:
        if len(given) != len(revisions):
            raise ValueError(f"steps: {len(given)} steps for {len(revisions)} revisions; give one step per revision")
        found = list(given)
    else:
        unnamed = [r for r in revisions if not STEP.search(r)]
        if unnamed:
            raise ValueError(
                f"steps: no step in the name of revision(s) {unnamed} (e.g. step1000); give `steps`, one per revision"
            )
        found = [int(STEP.search(r).group(1)) for r in revisions]
    twice = sorted({s for s in found if found.count(s) > 1})
    if twice:
        raise ValueError(f"steps: step(s) {twice} belong to more than one revision")
    if 0 not in found:
        raise ValueError(
            "revisions: none is at step 0, the initialization (re-initialization rewinds to it and distances "
            "are measured from it); add the suite's step-0 revision (Pythia: step0)"
        )
    return found


def problems(released: dict, where: str) -> list[str]:
    try:
        steps(released)
    except ValueError as err:
        return [f"{where}.{err}"]
    return []


def revision_folder(released: dict, revision: str) -> Path:
    """Where a revision's files lie: the user's folder, or the fetch rule's folder under data/hub."""
    if released.get("folder"):
        return Path(released["folder"]).expanduser() / revision
    return Path(HUB_FOLDER) / released["repo"] / revision


def final_revision(released: dict) -> str:
    """The revision at the largest step: the final model."""
    pairs = zip(steps(released), released["revisions"])
    return max(pairs)[1]


def model_config(released: dict) -> dict | None:
    """The final revision's config.json as a dict, when it is on disk (a folder; a fetched revision); else None."""
    path = revision_folder(released, final_revision(released)) / "config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def classes(hf_config: dict) -> int:
    """The model's output width: its vocabulary (a decoder, padded as trained), or its labels (a classifier)."""
    if hf_config.get("model_type") == "vit":
        return len(hf_config.get("id2label") or {0: 0, 1: 1})  # transformers' default is two labels
    return hf_config["vocab_size"]


def hub_uses(runs: list[dict], repo: str) -> list[dict]:
    """The `released` sections of the runs that fetch from `repo`."""
    return [run["released"] for run in runs if (run.get("released") or {}).get("repo") == repo]


def allow_pickle(runs: list[dict], repo: str) -> bool:
    """Whether a run on `repo` accepts pickled weights (then its revisions are fetched with them)."""
    return any(released["allow_pickle"] for released in hub_uses(runs, repo))


def hub_endpoint(runs: list[dict], repo: str) -> str | None:
    """The hub address the runs on `repo` give (the first that gives one); None: huggingface_hub's default."""
    return next((released["endpoint"] for released in hub_uses(runs, repo) if released["endpoint"]), None)
