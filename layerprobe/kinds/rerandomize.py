"""Re-randomization (paper §1): each unit, then the whole model, replaced by a fresh draw of its own
initializers (the model's factory, under a recorded seed per draw).

Its rows give units.csv the mean and spread of each unit's test error over the draws, and a
category from the mean; the robustness heatmap shows the mean as its "ReRnd" column.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from layerprobe.base.seeds import derive_seed
from layerprobe.kinds.base import Context, ProbeKind, Summary
from layerprobe.kinds.reinit import KEYS, ROBUSTNESS_FIGURE
from layerprobe.probing.variants import Variant, targets
from layerprobe.results.categories import categorize

if TYPE_CHECKING:
    from layerprobe.models.units import Unit


def draw_seeds(base_seed: int, run_seed: int, draws: int) -> list[int]:
    """Seeds of the re-randomization draws; they depend on the run's seed so seeds differ per run."""
    return [derive_seed("rerandomize", base_seed, run_seed, k) for k in range(draws)]


def describe(units: list[Unit], draw_seeds: list[int]) -> list[Variant]:
    """Each unit, then the whole model, replaced by draw k of the initializers (seed draw_seeds[k])."""
    return [
        Variant("rerandomize", label, members, ("draw", k), seed)
        for label, members in targets(units)
        for k, seed in enumerate(draw_seeds)
    ]


def variants(ctx: Context) -> list[Variant]:
    return describe(ctx.units, ctx.draw_seeds)


def summary(units, robustness, distances, tables, section, categories):
    redrawn = robustness[(robustness["probe"] == "rerandomize") & (robustness["split"] == "test")]
    redrawn = redrawn.groupby(KEYS)["error"].agg(rerandomize_test_error_mean="mean", rerandomize_test_error_std="std")
    out = units.join(redrawn, on=KEYS)
    out["category_rerandomize"] = [
        categorize(e, f, c, categories["robust_max_increase"], categories["critical_fraction"])
        for e, f, c in zip(out["rerandomize_test_error_mean"], out["final_test_error"], out["chance_error"])
    ]
    return out.set_index(KEYS)[["rerandomize_test_error_mean", "rerandomize_test_error_std", "category_rerandomize"]]


KIND = ProbeKind(
    name="rerandomize",
    variants=variants,
    summary=Summary(
        measures=("rerandomize_test_error_mean", "rerandomize_test_error_std"),
        verdicts=("category_rerandomize",),
        compute=summary,
    ),
    figures=(ROBUSTNESS_FIGURE,),
)
