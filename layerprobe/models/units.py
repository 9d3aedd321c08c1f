"""The unit inventory: which state-dict entries make up each unit a probe resets.

For a `UnitChain` a unit's entries are those under its module path. Any other model is grouped by
a rule: "per block" (each top-level child holding parameters, the default), "per module" (each
module holding parameters itself) or a user mapping {unit: [module paths]}; `skipped` says what no
unit covers and why. Parameters are what distances are measured on; buffers (batch-norm running
statistics) travel with their unit when it is reset.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from layerprobe.base.names import FULLMODEL
from layerprobe.models.chain import UnitChain

State = Mapping[str, torch.Tensor]  # a state dict: entry name → tensor


@dataclass(frozen=True)
class Unit:
    name: str
    index: int
    params: tuple[str, ...]
    buffers: tuple[str, ...]
    n_params: int
    rule: str

    @property
    def keys(self) -> tuple[str, ...]:
        return self.params + self.buffers


RULES = ("unit chain", "per block", "per module", "mapping")
# A model may name its own rule (models.pretrained's parallel-residual sublayers: a mapping), used when
# no rule is given, so layerprobe.probe and the study find its units without being told.
OWN_RULE = "layerprobe_unit_rule"


def inventory(model: nn.Module, rule: str | dict | None = None) -> list[Unit]:
    """The model's units in forward order (a UnitChain's own order, else module order).

    `rule`: None (the model's own `layerprobe_unit_rule` if it has one, else a UnitChain's units,
    else "per block"), "per block" (each top-level child holding parameters), "per module" (each
    module holding parameters itself) or a mapping {unit name: [module paths or parameter names]}.
    Parameters no unit owns are listed by `skipped`; a whole-model reset still resets them.
    """
    rule_name, groups = _groups(model, rule)
    if FULLMODEL in groups:
        raise ValueError(f"{FULLMODEL!r} is reserved for whole-model rows and cannot name a unit")
    params = dict(model.named_parameters())
    buffers = [k for k, _ in model.named_buffers()]
    units, owner = [], {}
    for index, (name, prefixes) in enumerate(groups.items()):

        def owns(key: str, prefixes=prefixes) -> bool:
            return any(key == p or key.startswith(p + ".") for p in prefixes)

        own = tuple(k for k in params if owns(k))
        if not own:
            raise ValueError(
                f"unit {name!r} owns no parameters (it names {list(prefixes)}); parameters are: {', '.join(params)}"
            )
        for key in own:
            if key in owner:
                raise ValueError(f"parameter {key!r} is claimed by units {owner[key]!r} and {name!r}")
            owner[key] = name
        mine = tuple(k for k in buffers if owns(k))
        units.append(Unit(name, index, own, mine, sum(params[k].numel() for k in own), rule_name))
    return units


def _groups(model: nn.Module, rule) -> tuple[str, dict[str, tuple[str, ...]]]:
    """The rule's name and, per unit, the module paths or parameter names it owns."""
    if rule is None:
        rule = getattr(model, OWN_RULE, None) or ("unit chain" if isinstance(model, UnitChain) else "per block")
    if isinstance(rule, dict):
        return "mapping", {name: (paths,) if isinstance(paths, str) else tuple(paths) for name, paths in rule.items()}
    if rule == "unit chain":
        if not isinstance(model, UnitChain):
            raise ValueError(f"rule 'unit chain' needs a layerprobe UnitChain, got {type(model).__name__}")
        return rule, {name: (name,) for name in model.unit_names}
    if rule == "per block":
        return rule, {n: (n,) for n, child in model.named_children() if _has_params(child)}
    if rule == "per module":
        # A module's own entries, named exactly: a parent's prefix would swallow its children's.
        return rule, {
            n: tuple(f"{n}.{k}" for k, _ in [*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)])
            for n, m in model.named_modules()
            if n and _has_params(m, recurse=False)
        }
    raise ValueError(f"unknown unit rule {rule!r}; use one of {RULES[:3]} or a mapping {{unit: [module paths]}}")


def _has_params(module: nn.Module, recurse: bool = True) -> bool:
    return any(True for _ in module.parameters(recurse=recurse))


def skipped(model: nn.Module, units: list[Unit]) -> list[tuple[str, str]]:
    """(name, reason) for what no unit covers: modules without parameters, parameters left out."""
    owned = {k for u in units for k in u.params}
    rule = units[0].rule if units else "per block"
    left = [
        (k, "no unit owns it (a whole-model reset still resets it)")
        for k, _ in model.named_parameters()
        if k not in owned
    ]
    if rule == "per block":
        empty = [n for n, child in model.named_children() if not _has_params(child)]
    elif rule == "per module":
        empty = [
            n for n, m in model.named_modules() if n and not _has_params(m) and not any(True for _ in m.children())
        ]
    else:
        empty = []
    return [(n, "no parameters") for n in empty] + left


def flat_params(state: State, unit: Unit) -> torch.Tensor:
    """The unit's parameters as one float64 vector (weights and biases together)."""
    return torch.cat([state[k].detach().reshape(-1).double() for k in unit.params])
