"""Configurations: the runs that differ only in their seed, summarized across seeds.

A run's configuration is everything it is trained and probed with but its `name`, `seed` and
`configuration` keys: dataset, model, the resolved train settings, checkpoints, joint groups (the
probe settings are the config's and the same for every run). Its name is the runs' `configuration`
key, or else a run's name with a trailing seed part dropped (fcn-3x256-s0 → fcn-3x256). Plain Python
over a validated config (no torch): the Snakefile plans the per-configuration figures from it.
"""

from __future__ import annotations

import json
import re

# What tells the runs of a configuration apart: not a setting of the configuration.
OWN_KEYS = ("name", "seed", "configuration")
# A trailing seed part of a run name: -s0, _s12, .seed3.
SEED_SUFFIX = re.compile(r"[-_.]s(?:eed)?[0-9]+$")


def settings_key(run: dict) -> str:
    """The run's settings but its own keys, as canonical text: equal for the runs of a configuration."""
    return json.dumps({k: v for k, v in run.items() if k not in OWN_KEYS}, sort_keys=True)


def name_of(run: dict) -> str:
    """The run's configuration name: its `configuration` key, else its name less a trailing seed part."""
    return run.get("configuration") or SEED_SUFFIX.sub("", run["name"])


def problems(runs: list[dict]) -> list[str]:
    """What keeps the runs from forming configurations: one name per configuration, one configuration
    per name, no seed twice in a configuration. Messages name the run's key."""
    messages, first_of_key, first_of_name, seeds = [], {}, {}, {}
    for i, run in enumerate(runs):
        key, name = settings_key(run), name_of(run)
        if key in first_of_key:
            j = first_of_key[key]
            if name_of(runs[j]) != name:
                messages.append(
                    f"runs[{i}].configuration: run {run['name']!r} differs from run {runs[j]['name']!r} only in "
                    f"its seed, so they form one configuration, but it is named {name!r} and that one "
                    f"{name_of(runs[j])!r}; give both the same `configuration`"
                )
                continue
        else:
            first_of_key[key] = i
            if name in first_of_name:
                j = first_of_name[name]
                differ = sorted(k for k in {*run, *runs[j]} - set(OWN_KEYS) if run.get(k) != runs[j].get(k))
                messages.append(
                    f"runs[{i}].configuration: run {run['name']!r} would be configuration {name!r}, the name of "
                    f"run {runs[j]['name']!r}'s, whose settings differ ({', '.join(differ)}); "
                    f"set `configuration` to another name"
                )
                continue
            first_of_name[name] = i
        if (name, run["seed"]) in seeds:
            messages.append(
                f"runs[{i}].seed: run {run['name']!r} repeats seed {run['seed']} of run "
                f"{seeds[name, run['seed']]!r} in configuration {name!r}: the same training twice; give it another seed"
            )
        seeds.setdefault((name, run["seed"]), run["name"])
    return messages


def group(runs: list[dict]) -> dict[str, list[str]]:
    """{configuration: its run names in config order}, configurations in order of their first run
    (for runs that passed `problems`)."""
    out: dict[str, list[str]] = {}
    for run in runs:
        out.setdefault(name_of(run), []).append(run["name"])
    return out
