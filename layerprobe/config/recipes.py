"""Named training recipes: full sets of `train` settings that a run picks by name and overrides.

The built-in recipes live in `recipes.yaml` beside this file (default, mnist-sgd, cifar-sgd,
imagenet-sgd, transformer-adamw); a config may declare more under `recipes`. A run's `train` is
`{recipe: NAME, <overrides>}`; a declared recipe may itself build on another with `recipe` (else on
`default`). `resolve` turns either into the full, checked settings the training loop uses, and names
every problem (an unknown recipe or key, a wrong type, milestones beyond the training length)
before any training starts.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import jsonschema
import yaml

from layerprobe.config.merge import merged
from layerprobe.config.schema import key_path, load_schema

HERE = Path(__file__).parent
DEFAULT = "default"
SETTINGS = (
    "epochs",
    "batch_size",
    "lr",
    "lr_reference_batch",
    "momentum",
    "nesterov",
    "weight_decay",
    "lr_milestones",
    "lr_gamma",
    "optimizer",
    "betas",
    "schedule",
    "warmup_steps",
    "clip_norm",
    "steps_per_epoch",
    "augment",
    "device",
    "precision",
    "eval_every",
)


class RecipeError(ValueError):
    """A training recipe that cannot be trained: unknown name or key, wrong type, inconsistent values."""


@cache
def _schema() -> dict:
    return load_schema()["definitions"]["train"]


BUILTIN: dict[str, dict] = yaml.safe_load((HERE / "recipes.yaml").read_text())  # {name: full settings}


def _type_problems(settings: dict, at: str, complete: bool) -> list[str]:
    schema = dict(_schema())
    if complete:
        schema["required"] = list(SETTINGS)
        schema["properties"] = {
            **schema["properties"],
            "augment": {**schema["properties"]["augment"], "required": ["crop_padding", "flip"]},
        }
    errors = sorted(
        jsonschema.Draft7Validator(schema).iter_errors(settings), key=lambda e: list(map(str, e.absolute_path))
    )
    return [f"{key_path(e.absolute_path, at)}: {e.message}" for e in errors]


def problems(spec: dict | None, declared: dict | None = None, where: str = "train") -> tuple[dict | None, list[str]]:
    """(the full settings or None, one message per problem) for a run's `train` spec."""
    spec, declared = dict(spec or {}), dict(declared or {})
    messages = [
        f"recipes.{name}: {name!r} is a built-in recipe; give your recipe another name"
        for name in sorted(set(declared) & set(BUILTIN))
    ]
    messages += _type_problems(spec, where, complete=False)
    for name, recipe in declared.items():
        messages += _type_problems(recipe, f"recipes.{name}", complete=False)
    if messages:
        return None, messages
    available = {**BUILTIN, **declared}
    layers, chain, name = [spec], [], spec.get("recipe", DEFAULT)
    while name is not None:
        if name not in available:
            origin = f"recipes.{chain[-1]}" if chain else where
            return None, [f"{origin}.recipe: unknown recipe {name!r}; known recipes: {', '.join(sorted(available))}"]
        if name in chain:
            return None, [f"recipes.{name}: recipes build on each other in a cycle ({' -> '.join([*chain, name])})"]
        chain.append(name)
        recipe = available[name]
        layers.append(recipe)
        name = recipe.get("recipe", None if name in BUILTIN else DEFAULT)
    settings = {}
    for layer in reversed(layers):
        settings = merged(settings, {k: v for k, v in layer.items() if k != "recipe"})
    settings = {"recipe": chain[0], **{key: settings[key] for key in SETTINGS if key in settings}}
    messages = _type_problems(settings, where, complete=True)
    if not messages:
        late = [m for m in settings["lr_milestones"] if m > settings["epochs"]]
        if late:
            messages.append(f"{where}.lr_milestones: {late} lie beyond train.epochs = {settings['epochs']}")
        if settings["optimizer"] == "adamw" and settings["nesterov"]:
            messages.append(f"{where}.nesterov: Nesterov momentum is SGD's; optimizer is adamw")
        if settings["schedule"] == "cosine" and settings["lr_milestones"]:
            messages.append(f"{where}.lr_milestones: milestones are schedule multistep's; schedule is cosine")
        if settings["nesterov"] and settings["momentum"] == 0:
            messages.append(f"{where}.nesterov: Nesterov momentum needs momentum > 0")
        if settings["precision"] == "bf16" and settings["device"] == "cpu":
            messages.append(
                f"{where}.precision: bf16 is autocast on CUDA only and device is 'cpu'; "
                "use precision fp32, or device cuda or auto"
            )
    return (None if messages else settings), messages


def resolve(spec: dict | None, declared: dict | None = None, where: str = "train") -> dict:
    """The full settings of a `train` spec (a recipe name plus overrides); RecipeError lists what is wrong."""
    settings, messages = problems(spec, declared, where)
    if messages:
        raise RecipeError("invalid training recipe:\n  " + "\n  ".join(messages))
    return settings


def for_training(recipe: dict) -> dict:
    """The full settings the training loop uses, from a run's `train` as the library gets it.

    A spec naming a built-in recipe (or none) is resolved; the full settings of a validated config
    pass as they are, also when they name a recipe declared in that config (kept as a label).
    """
    name = recipe.get("recipe")
    if name is not None and name not in BUILTIN and set(SETTINGS) <= set(recipe):
        settings = resolve({k: v for k, v in recipe.items() if k != "recipe"})
        return {**settings, "recipe": name}
    return resolve(recipe)


def effective_lr(settings: dict) -> float:
    """The learning rate before any milestone: lr, scaled by batch_size / lr_reference_batch when set."""
    reference = settings.get("lr_reference_batch")
    return settings["lr"] * settings["batch_size"] / reference if reference else settings["lr"]
