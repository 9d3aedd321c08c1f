"""Probes describe variants of the final model; they evaluate nothing (that is the evaluator's job).

A variant replaces the entries of some units of the final state θ^T by those of a source state: a
training checkpoint θ^τ ("reinit") or a fresh draw from the model's own initializers
("rerandomize"). The reserved unit label "fullmodel" takes the whole model from the source.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch

from layerprobe.units import FULLMODEL, Unit

BN_STATS = ("same_source", "trained")


@dataclass(frozen=True)
class Variant:
    probe: str                  # "reinit" | "rerandomize"
    label: str                  # the table's `unit` column: a unit name or "fullmodel"
    units: tuple[str, ...]      # units whose entries come from the source
    source: tuple[str, int]     # ("checkpoint", τ) or ("draw", k)
    draw_seed: int | None = None

    @property
    def whole(self) -> bool:
        return self.label == FULLMODEL

    @property
    def checkpoint(self) -> int | None:
        return self.source[1] if self.source[0] == "checkpoint" else None

    @property
    def draw(self) -> int | None:
        return self.source[1] if self.source[0] == "draw" else None


def reinit(units: list[Unit], epochs: list[int]) -> list[Variant]:
    """Each unit, then the whole model, reset to every checkpoint τ."""
    return [Variant("reinit", label, members, ("checkpoint", tau))
            for label, members in _targets(units) for tau in epochs]


def rerandomize(units: list[Unit], draw_seeds: list[int]) -> list[Variant]:
    """Each unit, then the whole model, replaced by draw k of the initializers (seed draw_seeds[k])."""
    return [Variant("rerandomize", label, members, ("draw", k), seed)
            for label, members in _targets(units) for k, seed in enumerate(draw_seeds)]


def _targets(units: list[Unit]) -> list[tuple[str, tuple[str, ...]]]:
    return [(u.name, (u.name,)) for u in units] + [(FULLMODEL, tuple(u.name for u in units))]


def compose(variant: Variant, units: list[Unit], final: Mapping[str, torch.Tensor],
            source: Mapping[str, torch.Tensor], bn_stats: str) -> dict[str, torch.Tensor]:
    """The variant's full state dict; `final` and `source` are read, never written.

    bn_stats "same_source" takes a reset unit's buffers (running statistics) from the source like
    its parameters; "trained" keeps the final model's. A fullmodel variant is the source, whole.
    """
    if bn_stats not in BN_STATS:
        raise ValueError(f"bn_stats must be one of {BN_STATS}, got {bn_stats!r}")
    if variant.whole:
        return dict(source)
    state = dict(final)
    for unit in units:
        if unit.name in variant.units:
            for key in unit.params + (unit.buffers if bn_stats == "same_source" else ()):
                state[key] = source[key]
    return state
