"""Config files read strictly: a one-line error naming the file (and the line) instead of a traceback.

Stricter than yaml.safe_load in one way users hit: a key given twice in one mapping (two `probes:`
sections, say) is an error naming both lines, where YAML would silently keep the last.
`python -m layerprobe.validation.settings FILE` reads and validates a config with it, without Snakemake.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from layerprobe.config.schema import ConfigError


class _StrictLoader(yaml.SafeLoader):
    """safe_load's loader, refusing duplicate keys."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise ConfigError(
                    f"line {key_node.start_mark.line + 1}: key {key!r} is given twice (first on line {seen[key]}); "
                    "YAML would keep only the last"
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def load(path: str | Path) -> dict:
    """The config in `path` as a dict; ConfigError (one line) when it is missing, unreadable, not YAML,
    repeats a key, or is not a mapping of config keys."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {path}: unreadable ({err})") from None
    try:
        config = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader)
    except ConfigError as err:
        raise ConfigError(f"config file {path}, {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"config file {path}{where}: not valid YAML ({problem})") from None
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ConfigError(f"config file {path}: expected a mapping of config keys, got a {type(config).__name__}")
    return config
