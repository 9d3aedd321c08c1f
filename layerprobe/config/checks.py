"""A whole config validated: schema and defaults, then what a schema cannot say (the cross-checks).

Errors name the key (e.g. `runs[0].train.lr`) and what is allowed, and are raised before any work.
"""

from __future__ import annotations

import copy
from pathlib import Path

from layerprobe.config import configurations, datasets, recipes, released, shapes, sweeps
from layerprobe.config.schema import SCHEMA, ConfigError, coerce_strings, load_schema, probe_kinds, problems
from layerprobe.config.values import checkpoint_epochs

SPLITS = ("test", "train")  # the splits of every dataset the workflow prepares


def validate(
    config: dict, schema_path: str | Path = SCHEMA, *, given: dict | None = None, across_runs: bool = True
) -> dict:
    """A validated copy of `config` with every default filled in; ConfigError lists what is wrong.

    `given`: the values set on the command line (Snakemake's --config), whose strings are read by
    the types the schema wants (schema.coerce_strings). `across_runs` False leaves out the checks of
    runs against each other (`across_runs_problems`), for a caller that first checks each run further.
    """
    config = copy.deepcopy(config)
    schema = load_schema(schema_path)
    if given:
        coerce_strings(schema, config, given)
    if isinstance(config.get("datasets") or {}, dict):  # anything else is left for the schema to name
        config["datasets"] = datasets.declarations(config.get("datasets"))
    messages = problems(schema, config)
    if not messages:
        messages = _cross_checks(config, probe_kinds(schema))
    if not messages and across_runs:  # configurations compare the resolved settings
        messages = across_runs_problems(config)
    if messages:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(messages))
    return config


def across_runs_problems(config: dict) -> list[str]:
    """What a validated config's runs must satisfy together: runs that form configurations (differing
    only in seed), sweeps that can be drawn."""
    return configurations.problems(config["runs"]) + sweeps.problems(config)


def _cross_checks(config: dict, kinds: tuple[str, ...]) -> list[str]:
    """Unique run names, recipes that resolve, epochs within each run's training length, probe settings
    that fit together. Resolves every run's `train` to its recipe's full settings (recipes) in place."""
    messages, seen = _dataset_checks(config), set()
    probes = config["probes"]
    if not any(probes[kind]["enabled"] for kind in kinds):
        messages.append(f"probes: every probe is disabled; enable one of {', '.join(f'probes.{k}' for k in kinds)}")
    unknown = [s for s in [*probes["splits"], probes["criticality"]["split"]] if s not in SPLITS]
    if unknown:
        messages.append(f"probes: unknown split(s) {unknown}; the datasets have {list(SPLITS)}")
    unknown = [s for s in probes["subset"] if s not in SPLITS]
    if unknown:
        messages.append(f"probes.subset: unknown split(s) {unknown}; the datasets have {list(SPLITS)}")
    joint = probes["joint"]
    if joint["enabled"] and joint["robust"] and not (probes["reinit"]["enabled"] and "test" in probes["splits"]):
        messages.append(
            "probes.joint.robust: the robust set comes from re-initialization on the test split; "
            "enable probes.reinit and list 'test' in probes.splits, or set probes.joint.robust: false"
        )
    for name in config["recipes"]:  # every declared recipe resolves, used or not
        messages += recipes.problems({"recipe": name}, config["recipes"], f"recipes.{name}")[1]
    for i, run in enumerate(config["runs"]):
        if run["name"] in seen:
            messages.append(f"runs[{i}].name: run name {run['name']!r} is used twice")
        seen.add(run["name"])
        if run.get("released"):  # probed on published checkpoints: nothing to train
            extra = [key for key in ("model", "train", "checkpoints") if run.get(key)]  # train: {} is the default
            if extra:
                messages.append(
                    f"runs[{i}]: run {run['name']!r} is probed on released checkpoints, which fix its architecture "
                    f"and steps; remove {', '.join(extra)}"
                )
            messages += released.problems(run["released"], f"runs[{i}].released")
            continue
        # A run's train becomes its recipe's full settings with the run's overrides (and the recipe's name).
        settings, problems_ = recipes.problems(run["train"], config["recipes"], f"runs[{i}].train")
        messages += [p for p in problems_ if p not in messages]
        if settings is None:
            continue
        run["train"] = settings
        try:
            checkpoint_epochs(run["checkpoints"], settings["epochs"])
        except ValueError as err:
            messages.append(f"runs[{i}].checkpoints: {err}")
        if run["dataset"] in config["datasets"]:
            shape = datasets.input_shape(config["datasets"][run["dataset"]])
            messages += shapes.problems(run["model"], shape, f"runs[{i}].model", run["dataset"])
    # What the probe kinds ask of each run (unit names, the joint checkpoints) is checked with the
    # kinds' own checks, by layerprobe.validation.settings, once these pass.
    return messages


def _dataset_checks(config: dict) -> list[str]:
    """Every run's dataset is declared; normalizations match; a used folder dataset has its folder."""
    messages, declared = [], config["datasets"]
    for name, decl in declared.items():
        if decl.get("tokenizer") == "bytes" and decl.get("num_classes") != datasets.BYTE_VOCABULARY:
            messages.append(
                f"datasets.{name}.num_classes: {decl.get('num_classes')}, but the byte tokenizer's vocabulary is "
                f"{datasets.BYTE_VOCABULARY}; leave num_classes out"
            )
        norm = decl.get("normalization")
        if norm and len(norm["mean"]) != len(norm["std"]):
            messages.append(f"datasets.{name}.normalization: {len(norm['mean'])} means but {len(norm['std'])} stds")
    for i, run in enumerate(config["runs"]):
        name = run["dataset"]
        if name not in declared:
            messages.append(
                f"runs[{i}].dataset: {name!r} is not a declared dataset; declared: {', '.join(sorted(declared))}"
            )
            continue
        decl = declared[name]
        if datasets.model_tokenizer(decl) and decl["num_classes"] is None and not run.get("released"):
            messages.append(
                f"datasets.{name}.num_classes: run {run['name']!r} trains a model on {name}, tokenized with a "
                "model's tokenizer; give its vocabulary (the model's classes)"
            )
        if decl["format"] == "imagefolder":
            # Checked here, before any job: the data rule would otherwise fail only after the others ran.
            if decl["root"] is None:
                messages.append(
                    f"datasets.{name}.root: run {run['name']!r} uses {name}, which is read from a local "
                    f"folder; set datasets.{name}.root to the folder holding "
                    f"{decl['train_dir']}/ and {decl['test_dir']}/"
                )
            elif not Path(decl["root"]).expanduser().is_dir():
                messages.append(f"datasets.{name}.root: {decl['root']} is not a folder")
    return messages
