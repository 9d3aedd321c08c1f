"""The workflow's configuration: validated against the JSON Schema, defaults filled, cross-checked.

Errors name the key (e.g. `runs[0].train.lr`) and what is allowed, and are raised before any work.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable

import jsonschema
import yaml
from torch import nn

from layerprobe import models
from layerprobe.datasets import Splits
from layerprobe.train import checkpoint_epochs


class ConfigError(ValueError):
    """The configuration is not one layerprobe can run."""


def _filling_defaults(validator_class):
    """A validator class that also inserts each missing property's `default` (before checking it)."""
    check_properties = validator_class.VALIDATORS["properties"]

    def properties(validator, props, instance, schema):
        if isinstance(instance, dict):
            for name, sub in props.items():
                if name not in instance and "default" in sub:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from check_properties(validator, props, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": properties})


def _where(path) -> str:
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
    return text.lstrip(".") or "(top level)"


def validate(config: dict, schema_path: str | Path) -> dict:
    """A validated copy of `config` with every default filled in; ConfigError lists what is wrong."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    config = copy.deepcopy(config)
    validator = _filling_defaults(jsonschema.Draft7Validator)(schema)
    problems = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    messages = [f"{_where(e.absolute_path)}: {e.message}" for e in problems]
    if not messages:
        messages = _cross_checks(config)
    if messages:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(messages))
    return config


def _cross_checks(config: dict) -> list[str]:
    """What a schema cannot say: unique run names, epochs within each run's training length."""
    messages, seen = [], set()
    if not any(config["probes"][kind]["enabled"] for kind in ("reinit", "rerandomize")):
        messages.append("probes: every probe is disabled; enable probes.reinit or probes.rerandomize")
    for i, run in enumerate(config["runs"]):
        if run["name"] in seen:
            messages.append(f"runs[{i}].name: run name {run['name']!r} is used twice")
        seen.add(run["name"])
        epochs = run["train"]["epochs"]
        try:
            checkpoint_epochs(run["checkpoints"], epochs)
        except ValueError as err:
            messages.append(f"runs[{i}].checkpoints: {err}")
        late = [m for m in run["train"]["lr_milestones"] if m > epochs]
        if late:
            messages.append(f"runs[{i}].train.lr_milestones: {late} lie beyond train.epochs = {epochs}")
    return messages


def load(path: str | Path, schema_path: str | Path) -> dict:
    return validate(yaml.safe_load(Path(path).read_text()) or {}, schema_path)


def model_factory(run: dict, data: Splits) -> Callable[[], nn.Module]:
    return lambda: models.build(run["model"], data.input_shape, data.num_classes)


def run_columns(run: dict) -> dict:
    """The run-level columns every table row carries."""
    return {"run": run["name"], "dataset": run["dataset"], "model": models.describe(run["model"]),
            "seed": run["seed"]}
