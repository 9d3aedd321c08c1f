"""The config's JSON Schema (schema.yaml): validation that fills defaults, errors that name the key.

`schemas/config.schema.yaml` in the checkout links to schema.yaml here, so the library validates
settings also when it is installed without the checkout.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path

import jsonschema
import yaml

SCHEMA = Path(__file__).with_name("schema.yaml")


class ConfigError(ValueError):
    """The configuration is not one layerprobe can run."""


@cache
def _read(path: str) -> dict:
    return yaml.safe_load(Path(path).read_text())


def load_schema(path: str | Path = SCHEMA) -> dict:
    """The schema as a dict (a copy: callers may edit it)."""
    return copy.deepcopy(_read(str(path)))


def probe_kinds(schema: dict) -> tuple[str, ...]:
    """The probe kinds the schema declares: the sections of `probes` that can be enabled, in order."""
    sections = schema["properties"]["probes"]["properties"]
    return tuple(name for name, sub in sections.items() if "enabled" in sub.get("properties", {}))


def key_path(path, prefix: str = "") -> str:
    """A schema error's location as config keys, e.g. runs[0].train.lr (after `prefix`)."""
    text = prefix + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
    return text.lstrip(".") or "(top level)"


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


def problems(schema: dict, instance: dict) -> list[str]:
    """Fill `instance`'s defaults in place; one message per schema violation, naming its key."""
    validator = _filling_defaults(jsonschema.Draft7Validator)(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{key_path(e.absolute_path)}: {e.message}" for e in errors]


def coerce_strings(schema: dict, instance: dict, given: dict) -> None:
    """Read, in place, the strings of `instance` at the keys `given` sets by the types the schema wants there.

    Snakemake hands nested `--config` values over as strings ("6", "true", "[0.1, 0.2]"): each such
    string whose key the schema types otherwise (an integer, a boolean, a list, one of an enum) is
    replaced by its YAML reading when that reading has the type. Keys a config file set are left
    alone, so a quoted number in a YAML file is still an error.
    """
    validator = jsonschema.Draft7Validator(schema)
    for _ in range(100):  # each pass fixes what the schema could see; nested strings show up in later ones
        changed = False
        for error in _with_context(validator.iter_errors(instance)):
            path = list(error.absolute_path)
            if (
                error.validator not in ("type", "enum")
                or not isinstance(error.instance, str)
                or not _within(given, path)
            ):
                continue
            try:
                value = yaml.safe_load(error.instance)
            except yaml.YAMLError:
                continue
            if isinstance(value, str):
                continue  # read as a string again: nothing to gain
            wanted = error.validator_value
            ok = (
                value in wanted
                if error.validator == "enum"
                else any(validator.is_type(value, t) for t in ([wanted] if isinstance(wanted, str) else wanted))
            )
            if ok and value != error.instance:
                _set(instance, path, value)
                changed = True
        if not changed:
            return


def _with_context(errors):
    """The errors and, recursively, those of the branches of a oneOf / anyOf they stand for."""
    for error in errors:
        yield error
        yield from _with_context(error.context or ())


def _within(given, path: list) -> bool:
    """Whether `path` is a key the (nested) mapping `given` sets, or lies under one it sets."""
    node = given
    for part in path:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            return isinstance(node, str)  # a string given for a whole subtree
    return True


def _set(instance, path: list, value) -> None:
    node = instance
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


def section(name: str, values: dict | None = None, schema_path: str | Path = SCHEMA) -> dict:
    """One top-level section (e.g. `probes`) validated with its defaults filled, for the library face."""
    schema = load_schema(schema_path)
    wrapper = {
        "type": "object",
        "properties": {name: schema["properties"][name]},
        "additionalProperties": False,
        "definitions": schema.get("definitions", {}),
    }
    instance = {name: copy.deepcopy(values or {})}
    messages = problems(wrapper, instance)
    if messages:
        raise ConfigError(f"invalid {name} settings:\n  " + "\n  ".join(messages))
    return instance[name]
