"""Variants of the final model, described: what a probe resets and to what. Nothing is evaluated here.

A variant resets some units of the final state θ^T. Each reset entry starts from a source state —
a training checkpoint θ^τ or a fresh draw from the model's own initializers — and may then be
interpolated towards the final value and perturbed by Gaussian noise:

    θ_d = source_d                              (α is None: reinit, rerandomize, joint)
    θ_d = (1 − α)·source_d + α·θ_d^T  [+ σ·E]   (interpolate; criticality adds noise E ~ N(0, I))

The reserved unit label "fullmodel" resets every unit, and takes the buffers from the source too.
This module needs no torch: the probe kinds (layerprobe.kinds) build variants from it, and the
Snakefile imports those. What a variant's state is, is layerprobe.probing.compose.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from layerprobe.base.names import FULLMODEL

if TYPE_CHECKING:  # for annotations only: kinds describe variants at workflow parse time, without torch
    from layerprobe.models.units import Unit

BN_STATS = ("same_source", "trained")
# What an evaluator measures of a variant on a split: `worse` and `better` are the discordant counts
# against the unmodified final model on the same examples (it right and the variant wrong; the reverse).
MEASURES = ("error", "loss", "agreement", "worse", "better", "n")


@dataclass(frozen=True)
class Variant:
    probe: str  # "reinit" | "rerandomize" | "interpolate" | "criticality" | "joint"
    label: str  # the table's `unit` column: a unit name, "fullmodel" or a set's label
    units: tuple[str, ...]  # units whose entries are reset
    source: tuple[str, int]  # ("checkpoint", τ) or ("draw", k): where reset entries start
    seed: int | None = None  # the draw's or the noise's seed (`draw_seed` column)
    alpha: float | None = None  # None: the source itself; else (1 − α)·source + α·final
    sigma: float | None = None  # std of the Gaussian noise added to the reset parameters
    sample: int | None = None  # noise sample index (`draw` column of criticality rows)
    members: str | None = None  # joint sets: the unit names, space-separated

    @property
    def whole(self) -> bool:
        return self.label == FULLMODEL

    @property
    def noisy(self) -> bool:
        return bool(self.sigma)

    def columns(self) -> dict:
        """The table columns that identify this variant."""
        kind, index = self.source
        return {
            "probe": self.probe,
            "unit": self.label,
            "members": self.members,
            "checkpoint": index if kind == "checkpoint" else None,
            "alpha": self.alpha,
            "sigma": self.sigma,
            "draw": index if kind == "draw" else self.sample,
            "draw_seed": self.seed,
        }


def batch_key(variant: Variant) -> tuple:
    """What the engine evaluates together: variants resetting the same units, alike in being whole, in the
    start of their α grid (two layer evaluations serve a whole grid) and in carrying noise or not."""
    return (variant.units, variant.whole, variant.source if variant.alpha is not None else None, variant.noisy)


def row(variant: Variant, bn_stats: str, split: str, result: Mapping) -> dict:
    """A robustness-table row: the variant's columns, then its measurements on one split."""
    return {
        **variant.columns(),
        "bn_stats": bn_stats,
        "split": split,
        **{k: result[k] for k in MEASURES},
    }


def targets(units: list[Unit]) -> list[tuple[str, tuple[str, ...]]]:
    """(label, units reset) for each unit, then for the whole model."""
    return [(u.name, (u.name,)) for u in units] + [(FULLMODEL, tuple(u.name for u in units))]


def check_alphas(alphas: Sequence[float]) -> None:
    outside = [a for a in alphas if not 0.0 <= a <= 1.0]
    if outside or not alphas:
        raise ValueError(f"α must lie in [0, 1] (a non-empty grid), got {list(alphas)}")
