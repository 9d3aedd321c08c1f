"""Interpolation (paper-notes §2): each unit, then the whole model, at (1 − α)·θ^0 + α·θ^T over an α grid.

The plain interpolation curve (criticality without noise); drawn as error against α, one line per unit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from layerprobe.config.values import alpha_grid
from layerprobe.kinds.base import Context, Figure, ProbeKind
from layerprobe.probing.variants import Variant, check_alphas, targets

if TYPE_CHECKING:
    from layerprobe.models.units import Unit


def describe(units: list[Unit], alphas: Sequence[float], start: int = 0) -> list[Variant]:
    """Each unit, then the whole model, at (1 − α)·θ^start + α·θ^T for every α of the grid."""
    check_alphas(alphas)
    return [
        Variant("interpolate", label, members, ("checkpoint", start), alpha=float(a))
        for label, members in targets(units)
        for a in alphas
    ]


def variants(ctx: Context) -> list[Variant]:
    return describe(ctx.units, alpha_grid(ctx.section("interpolate")["alphas"]))


def draw_curves(table, run, split):
    from layerprobe.results import figures  # here: the Snakefile imports this module without matplotlib

    return figures.interpolation_curves(table, run, split)


KIND = ProbeKind(
    name="interpolate",
    variants=variants,
    figures=(
        Figure(
            rule="interpolation",
            pattern="interpolation_{split}",
            table="robustness",
            draw=draw_curves,
            caption="interpolation.rst",
            category="Interpolation",
            label="{split} error",
            values=lambda probes: {"split": probes["splits"]},
        ),
    ),
)
