"""Sweeps: configurations laid out along axes of model capacity (the paper's F5-F7), from `sweeps`.

A sweep names runs (names or shell-style patterns); its points are their configurations, every seed
of them, each at the values its settings give the axes: a dotted key of a run's settings, read as a
number or as the number a name ends in (model.name vgg16 → 16; released.repo EleutherAI/pythia-160m →
160 M, a model-size suffix k, m or b read as such). Plain Python over a validated config
(no torch): the Snakefile plans the sweep figures from it.
"""

from __future__ import annotations

import fnmatch
import re

from layerprobe.config import configurations

# A number a name ends in, with a model-size suffix: vgg16 → 16, pythia-160m → 1.6e8, pythia-1.4b → 1.4e9.
TRAILING_NUMBER = re.compile(r"([0-9]+(?:\.[0-9]+)?)([kmb]?)$", re.IGNORECASE)
SIZE_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9}


def patterns(sweep: dict) -> list[str]:
    return [sweep["runs"]] if isinstance(sweep["runs"], str) else list(sweep["runs"])


def setting(run: dict, path: str):
    """The run's setting at a dotted key path (model.depth), or KeyError."""
    value = run
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            raise KeyError(path)
        value = value[key]
    return value


def axis_value(value) -> int | float | None:
    """A setting as an axis value: a number, or the number a name ends in; None when neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    found = TRAILING_NUMBER.search(value) if isinstance(value, str) else None
    if not found:
        return None
    number, scale = found.group(1), SIZE_SUFFIX[found.group(2).lower()]
    return int(number) * scale if "." not in number else float(number) * scale


def problems(config: dict) -> list[str]:
    """What keeps each sweep from being drawn, by key: unknown runs, fewer than two configurations,
    axes that are not numbers of every run, two configurations at the same point, names used twice."""
    messages, seen = [], set()
    runs = config["runs"]
    for i, sweep in enumerate(config["sweeps"]):
        where, before = f"sweeps[{i}]", len(messages)
        if sweep["name"] in seen:
            messages.append(f"{where}.name: sweep name {sweep['name']!r} is used twice")
        seen.add(sweep["name"])
        for j, pattern in enumerate(patterns(sweep)):
            if not any(fnmatch.fnmatchcase(run["name"], pattern) for run in runs):
                key = f"{where}.runs" + (f"[{j}]" if isinstance(sweep["runs"], list) else "")
                messages.append(f"{key}: {pattern!r} matches no run; runs: {', '.join(r['name'] for r in runs)}")
        members = _member_runs(sweep, runs)
        for axis, path in sweep["axes"].items():
            if path.split(".")[0] in configurations.OWN_KEYS:
                messages.append(
                    f"{where}.axes.{axis}: {path!r} tells the runs of a configuration apart; an axis is a "
                    "setting its configurations differ in (model.depth, model.width, ...)"
                )
                continue
            for run in members.values():
                try:
                    value = setting(run, path)
                except KeyError:
                    messages.append(f"{where}.axes.{axis}: run {run['name']!r} has no setting {path}")
                    break
                if axis_value(value) is None:
                    messages.append(
                        f"{where}.axes.{axis}: run {run['name']!r} has {path} = {value!r}, "
                        "neither a number nor a name ending in one"
                    )
                    break
        if len(members) == 1:
            (name,) = members
            messages.append(
                f"{where}.runs: the runs matched form one configuration ({name!r}); a sweep needs two or more"
            )
        if len(messages) > before:
            continue
        at: dict[tuple, str] = {}
        for name, run in members.items():
            point = tuple(axis_value(setting(run, path)) for path in sweep["axes"].values())
            if point in at:
                values = ", ".join(f"{axis}={v}" for axis, v in zip(sweep["axes"], point))
                messages.append(
                    f"{where}.axes: configurations {at[point]!r} and {name!r} are both at {values}; "
                    "add an axis they differ in, or leave one out of `runs`"
                )
            at.setdefault(point, name)
    return messages


def resolve(config: dict) -> dict[str, dict]:
    """{sweep: {"name", "axes": [axis names], "points": [{"configuration", "runs", "values": {axis: value}}]}},
    the points in order of their configurations' first runs (for a config that passed `problems`)."""
    groups = configurations.group(config["runs"])
    out = {}
    for sweep in config["sweeps"]:
        points = [
            {
                "configuration": name,
                "runs": groups[name],
                "values": {axis: axis_value(setting(run, path)) for axis, path in sweep["axes"].items()},
            }
            for name, run in _member_runs(sweep, config["runs"]).items()
        ]
        out[sweep["name"]] = {"name": sweep["name"], "axes": list(sweep["axes"]), "points": points}
    return out


def _member_runs(sweep: dict, runs: list[dict]) -> dict[str, dict]:
    """{configuration: its first run} of every configuration with a run the sweep matches."""
    chosen = {
        configurations.name_of(run)
        for run in runs
        if any(fnmatch.fnmatchcase(run["name"], pattern) for pattern in patterns(sweep))
    }
    out: dict[str, dict] = {}
    for run in runs:
        name = configurations.name_of(run)
        if name in chosen:
            out.setdefault(name, run)
    return out
