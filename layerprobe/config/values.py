"""Settings read as values: α and σ grids, byte sizes, checkpoint epochs, the operators' mode."""

from __future__ import annotations

import re

from layerprobe.config.schema import ConfigError

OPS_MODES = ("auto", "on", "off")


def alpha_grid(spec: int | list[float]) -> list[float]:
    """An α grid: n evenly spaced points on [0, 1] (both ends exact), or the list as given."""
    return [i / (spec - 1) for i in range(spec)] if isinstance(spec, int) else [float(a) for a in spec]


def sigma_grid(spec: int | list[float]) -> list[float]:
    """A σ grid: the n points k/n, k = 1..n (σ = 0 excluded), or the list as given."""
    return [k / spec for k in range(1, spec + 1)] if isinstance(spec, int) else [float(s) for s in spec]


def sigma_search_problems(settings: dict, where: str = "probes.criticality") -> list[str]:
    """What is wrong with a criticality section's σ search bounds (`where` is the section's key path)."""
    search = settings["search"]
    floor, ceiling = search["floor"], search["ceiling"]
    if not floor < ceiling:
        return [f"{where}.search.floor: {floor} must lie below {where}.search.ceiling ({ceiling})"]
    outside = [s for s in sigma_grid(settings["sigmas"]) if not floor <= s <= ceiling]
    if outside:
        return [f"{where}.sigmas: {outside} lie outside the σ search's [floor, ceiling] = [{floor}, {ceiling}]"]
    return []


_UNITS = {"B": 1, "KB": 2**10, "MB": 2**20, "GB": 2**30, "TB": 2**40}


def parse_bytes(text: str) -> int:
    """'512MB' → 536870912 (binary multiples)."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(B|KB|MB|GB|TB)\s*", str(text))
    if not match:
        raise ConfigError(f"engine.memory_budget: {text!r} is not a size such as 512MB or 4GB")
    return int(float(match[1]) * _UNITS[match[2]])


def checkpoint_epochs(requested: list[int], epochs: int) -> list[int]:
    """The epochs to save: the requested ones plus 0 (initialization) and the final epoch."""
    bad = [e for e in requested if not 0 <= e <= epochs]
    if bad:
        raise ValueError(f"checkpoint epochs {bad} lie outside 0..{epochs} (the training length)")
    return sorted({0, epochs, *requested})


def ops_mode(value: str | bool) -> str:
    """engine.ops as one of OPS_MODES ("auto" | "on" | "off"): YAML's bare on / off arrive as True /
    False and mean "on" / "off"; anything else is a ValueError naming the choices."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if not isinstance(value, str) or value not in OPS_MODES:
        raise ValueError(f"engine.ops must be one of {OPS_MODES}, got {value!r}")
    return value
