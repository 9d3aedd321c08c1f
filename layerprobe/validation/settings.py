"""A whole config validated before any job: schema and cross-checks, then the probe kinds' checks.

Plain Python (yaml and jsonschema): the Snakefile validates with it at parse time. From a shell,

    python -m layerprobe.validation.settings FILE ...

checks config files as the Snakefile would, each error on one line naming the file (and the line).
"""

from __future__ import annotations

import sys
from pathlib import Path

from layerprobe import kinds
from layerprobe.config import SCHEMA, ConfigError, files, validate
from layerprobe.config.checks import across_runs_problems
from layerprobe.kinds import Context


def validated(config: dict, schema_path: str | Path = SCHEMA, *, given: dict | None = None) -> dict:
    """`config` validated (layerprobe.config.validate), then every enabled kind's check run on every run
    whose units the model settings tell (config.shapes): unit names, checkpoints asked for; then the
    runs against each other (configurations, sweeps), so that a run's own mistake is named first. One
    ConfigError lists every problem, each under its key path."""
    config = validate(config, schema_path, given=given, across_runs=False)
    messages = []
    for i, run in enumerate(config["runs"]):
        context = kinds.planning_context(run, config)
        if context is not None:
            messages += [m for m in run_problems(context, f"runs[{i}]", run["name"]) if m not in messages]
    messages = messages or across_runs_problems(config)
    if messages:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(messages))
    return config


def run_problems(context: Context, where: str, name: str) -> list[str]:
    """Each enabled kind's check of one run. A kind names the key it objects to: a run's own key
    (joint_groups.…) is placed under the run's path, a probes key gets the run's name."""
    messages = []
    for kind in kinds.enabled(context.settings):
        if kind.check is None:
            continue
        try:
            kind.check(context)
        except ValueError as err:
            text = str(err)
            messages.append(f"{text} (run {name!r})" if text.startswith("probes.") else f"{where}.{text}")
    return messages


def main(argv: list[str] | None = None) -> int:
    paths = sys.argv[1:] if argv is None else argv
    failed = 0
    for path in paths or ["config.yaml"]:
        try:
            config = validated(files.load(path))
        except ConfigError as err:
            text = str(err)
            print(text if text.startswith("config file") else f"config file {path}: {text}", file=sys.stderr)
            failed += 1
        else:
            print(f"config file {path}: valid ({len(config['runs'])} runs)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
