"""Fully connected ReLU nets (paper F1, F2, F5): units layer1..layer{depth+1}, the output layer included."""

from __future__ import annotations

from collections.abc import Sequence
from math import prod

from torch import nn

from layerprobe.models.chain import UnitChain, sequential


def fcn(input_shape: Sequence[int], num_classes: int, depth: int = 3, width: int = 256) -> UnitChain:
    """Fully connected ReLU net with `depth` hidden layers of `width`; units layer1..layer{depth+1}."""
    units, fan_in = [], prod(input_shape)
    for i in range(1, depth + 1):
        layers = {"flatten": nn.Flatten()} if i == 1 else {}
        units.append((f"layer{i}", sequential(**layers, linear=nn.Linear(fan_in, width), relu=nn.ReLU())))
        fan_in = width
    head = {"flatten": nn.Flatten()} if depth == 0 else {}
    units.append((f"layer{depth + 1}", sequential(**head, linear=nn.Linear(fan_in, num_classes))))
    return UnitChain(units)
