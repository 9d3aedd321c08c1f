"""The unit inventory: which state-dict entries make up each unit a probe resets.

For a `UnitChain` a unit's entries are those under its module path. Any other model is grouped per
top-level child module that holds parameters (the "per module" rule); children without parameters
are skipped. Parameters are what distances are measured on; buffers (batch-norm running statistics)
travel with their unit when it is reset.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from layerprobe.models import UnitChain

FULLMODEL = "fullmodel"  # reserved row label: the whole model at once


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


def inventory(model: nn.Module) -> list[Unit]:
    """The model's units in forward order; every parameter belongs to exactly one unit."""
    if isinstance(model, UnitChain):
        names, rule = list(model.unit_names), "unit chain"
    else:
        names = [n for n, child in model.named_children() if any(True for _ in child.parameters())]
        rule = "per top-level module"
    if FULLMODEL in names:
        raise ValueError(f"{FULLMODEL!r} is reserved for whole-model rows and cannot name a unit")
    params = dict(model.named_parameters())
    buffers = [k for k, _ in model.named_buffers()]
    units = []
    for index, name in enumerate(names):
        prefix = name + "."
        own = tuple(k for k in params if k.startswith(prefix))
        units.append(Unit(name, index, own, tuple(k for k in buffers if k.startswith(prefix)),
                          sum(params[k].numel() for k in own), rule))
    orphans = set(params) - {k for u in units for k in u.params}
    if orphans:
        raise ValueError(f"parameters outside every unit: {', '.join(sorted(orphans))}")
    return units


def flat_params(state: dict[str, torch.Tensor], unit: Unit) -> torch.Tensor:
    """The unit's parameters as one float64 vector (weights and biases together)."""
    return torch.cat([state[k].detach().reshape(-1).double() for k in unit.params])
