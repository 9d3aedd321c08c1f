"""A network that is an ordered chain of named units, each a module applied in turn.

A unit's name is its module path ("stage2.block1" lives at model.stage2.block1), so its parameters
are exactly the state-dict entries under that prefix; the engine walks the chain to share prefixes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn


class UnitChain(nn.Module):
    """A network that is the composition of its units, applied in order."""

    def __init__(self, units: Sequence[tuple[str, nn.Module]]):
        super().__init__()
        names = [name for name, _ in units]
        if len(set(names)) != len(names):
            raise ValueError(f"unit names must be unique, got {names}")
        self.unit_names: tuple[str, ...] = tuple(names)
        for name, module in units:
            self._place(name, module)

    def _place(self, path: str, module: nn.Module) -> None:
        # "stage2.block1" lives at self.stage2.block1, so state-dict keys start with the unit name.
        parent: nn.Module = self
        *containers, leaf = path.split(".")
        for part in containers:
            if part not in parent._modules:
                parent.add_module(part, nn.Module())
            parent = parent._modules[part]
        parent.add_module(leaf, module)

    def unit(self, name: str) -> nn.Module:
        if name not in self.unit_names:
            raise KeyError(f"unknown unit {name!r}; units: {', '.join(self.unit_names)}")
        return self.get_submodule(name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.unit_names:
            x = self.get_submodule(name)(x)
        return x


def sequential(**layers: nn.Module) -> nn.Sequential:
    """An nn.Sequential of named layers (the names become state-dict keys: unit.linear.weight)."""
    return nn.Sequential(OrderedDict(layers))
