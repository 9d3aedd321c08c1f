"""One way to lay settings over settings."""

from __future__ import annotations

import copy


def merged(base: dict, override: dict) -> dict:
    """`base` with `override` laid over it, key by key and recursively into mappings (inputs untouched)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
