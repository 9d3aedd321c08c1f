"""The workflow's configuration: validated against the JSON Schema, defaults filled, cross-checked.

Errors name the key (e.g. `runs[0].train.lr`) and what is allowed, and are raised before any work.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Callable

import jsonschema
import torch
import yaml
from torch import nn

from layerprobe import datasets, models, recipes
from layerprobe.datasets import SPLITS, Splits
from layerprobe.train import checkpoint_epochs


SCHEMA = Path(__file__).with_name("config.schema.yaml")  # schemas/config.schema.yaml links here
PROBES = ("reinit", "rerandomize", "interpolate", "criticality", "joint")


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


def _where(path, prefix: str = "") -> str:
    """A schema error's location as config keys, e.g. runs[0].train.lr (after `prefix`)."""
    text = prefix + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
    return text.lstrip(".") or "(top level)"


def validate(config: dict, schema_path: str | Path) -> dict:
    """A validated copy of `config` with every default filled in; ConfigError lists what is wrong."""
    config = copy.deepcopy(config)
    if isinstance(config.get("datasets") or {}, dict):  # anything else is left for the schema to name
        config["datasets"] = datasets.declarations(config.get("datasets"))
    messages = _problems(yaml.safe_load(Path(schema_path).read_text()), config)
    if not messages:
        messages = _cross_checks(config)
    if messages:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(messages))
    return config


def _problems(schema: dict, instance: dict) -> list[str]:
    """Fill `instance`'s defaults in place; one message per schema violation, naming its key."""
    validator = _filling_defaults(jsonschema.Draft7Validator)(schema)
    problems = sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{_where(e.absolute_path)}: {e.message}" for e in problems]


def _cross_checks(config: dict) -> list[str]:
    """What a schema cannot say: unique run names, recipes that resolve, epochs within each run's training length.

    Resolves every run's `train` to its recipe's full settings (layerprobe.recipes) in place.
    """
    messages, seen = _dataset_checks(config), set()
    probes = config["probes"]
    if not any(probes[kind]["enabled"] for kind in PROBES):
        messages.append(f"probes: every probe is disabled; enable one of {', '.join(f'probes.{k}' for k in PROBES)}")
    unknown = [s for s in [*probes["splits"], probes["criticality"]["split"]] if s not in SPLITS]
    if unknown:
        messages.append(f"probes: unknown split(s) {unknown}; the datasets have {list(SPLITS)}")
    joint = probes["joint"]
    if joint["enabled"] and joint["robust"] and not (probes["reinit"]["enabled"] and "test" in probes["splits"]):
        messages.append("probes.joint.robust: the robust set comes from re-initialization on the test split; "
                        "enable probes.reinit and list 'test' in probes.splits, or set probes.joint.robust: false")
    for name in config["recipes"]:  # every declared recipe resolves, used or not
        messages += recipes.problems({"recipe": name}, config["recipes"], f"recipes.{name}")[1]
    for i, run in enumerate(config["runs"]):
        if run["name"] in seen:
            messages.append(f"runs[{i}].name: run name {run['name']!r} is used twice")
        seen.add(run["name"])
        # A run's train becomes its recipe's full settings with the run's overrides (and the recipe's name).
        settings, problems = recipes.problems(run["train"], config["recipes"], f"runs[{i}].train")
        messages += [p for p in problems if p not in messages]
        if settings is None:
            continue
        run["train"] = settings
        epochs = settings["epochs"]
        try:
            checkpoint_epochs(run["checkpoints"], epochs)
        except ValueError as err:
            messages.append(f"runs[{i}].checkpoints: {err}")
        if joint["enabled"] and joint["checkpoints"] is not None:
            missing = sorted(set(joint["checkpoints"]) - set(checkpoint_epochs(run["checkpoints"], epochs)))
            if missing:
                messages.append(f"probes.joint.checkpoints: run {run['name']!r} has no checkpoint at epoch(s) {missing}")
    return messages


def _dataset_checks(config: dict) -> list[str]:
    """Every run's dataset is declared; normalizations match; a used folder dataset has its folder."""
    messages, declared = [], config["datasets"]
    for name, decl in declared.items():
        norm = decl.get("normalization")
        if norm and len(norm["mean"]) != len(norm["std"]):
            messages.append(f"datasets.{name}.normalization: {len(norm['mean'])} means but {len(norm['std'])} stds")
    for i, run in enumerate(config["runs"]):
        name = run["dataset"]
        if name not in declared:
            messages.append(f"runs[{i}].dataset: {name!r} is not a declared dataset; declared: {', '.join(sorted(declared))}")
            continue
        decl = declared[name]
        if decl["format"] == "imagefolder":
            # Checked here, before any job: the data rule would otherwise fail only after the others ran.
            if decl["root"] is None:
                messages.append(f"datasets.{name}.root: run {run['name']!r} uses {name}, which is read from a local "
                                f"folder; set datasets.{name}.root to the folder holding "
                                f"{decl['train_dir']}/ and {decl['test_dir']}/")
            elif not Path(decl["root"]).expanduser().is_dir():
                messages.append(f"datasets.{name}.root: {decl['root']} is not a folder")
    return messages


def job_gpus(setting: int | str, device: str) -> int:
    """GPUs a job asks a scheduler for: `resources.<rule>.gpu`, where auto is 1 for a job whose device is
    cuda, or auto on a machine that sees a GPU (where the workflow is planned), else 0."""
    if setting != "auto":
        return int(setting)
    if device.startswith("cuda"):
        return 1
    return int(device == "auto" and torch.cuda.is_available())


def probe_job_settings(probes: dict) -> dict:
    """The probe settings a probe job uses: all but the criticality feasibility (aggregate applies it)."""
    settings = copy.deepcopy(probes)
    settings["criticality"].pop("feasibility", None)
    return settings


def section(name: str, values: dict | None = None, schema_path: str | Path = SCHEMA) -> dict:
    """One top-level section (e.g. `probes`) validated with its defaults filled, for the library face."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    wrapper = {"type": "object", "properties": {name: schema["properties"][name]}, "additionalProperties": False}
    instance = {name: copy.deepcopy(values or {})}
    messages = _problems(wrapper, instance)
    if messages:
        raise ConfigError(f"invalid {name} settings:\n  " + "\n  ".join(messages))
    return instance[name]


def alpha_grid(spec: int | list[float]) -> list[float]:
    """An α grid: n evenly spaced points on [0, 1] (both ends exact), or the list as given."""
    return [i / (spec - 1) for i in range(spec)] if isinstance(spec, int) else [float(a) for a in spec]


def sigma_grid(spec: int | list[float]) -> list[float]:
    """A σ grid: the n points k/n, k = 1..n (σ = 0 excluded), or the list as given."""
    return [k / spec for k in range(1, spec + 1)] if isinstance(spec, int) else [float(s) for s in spec]


_UNITS = {"B": 1, "KB": 2**10, "MB": 2**20, "GB": 2**30, "TB": 2**40}


def parse_bytes(text: str) -> int:
    """'512MB' → 536870912 (binary multiples)."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(B|KB|MB|GB|TB)\s*", str(text))
    if not match:
        raise ConfigError(f"engine.memory_budget: {text!r} is not a size such as 512MB or 4GB")
    return int(float(match[1]) * _UNITS[match[2]])


def load(path: str | Path, schema_path: str | Path) -> dict:
    return validate(yaml.safe_load(Path(path).read_text()) or {}, schema_path)


def model_factory(run: dict, data: Splits) -> Callable[[], nn.Module]:
    return lambda: models.build(run["model"], data.input_shape, data.num_classes)


def run_columns(run: dict) -> dict:
    """The run-level columns every table row carries."""
    return {"run": run["name"], "dataset": run["dataset"], "model": models.describe(run["model"]),
            "seed": run["seed"]}
