"""Re-initialization (paper §1): each unit, then the whole model, reset to every checkpoint τ.

τ = 0 is re-initialization proper; τ > 0 rewinds the unit to a checkpoint. Its rows give units.csv
each unit's error at τ = 0 and the unit's category; the robustness heatmap shows them, per run and
averaged over each configuration's seeds, and the sweeps' figures draw the categories along the axes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from layerprobe.kinds.base import Context, Figure, ProbeKind, Summary
from layerprobe.probing.variants import Variant, targets
from layerprobe.results.categories import categorize

if TYPE_CHECKING:
    from layerprobe.models.units import Unit

KEYS = ["run", "unit"]


def describe(units: list[Unit], epochs: list[int]) -> list[Variant]:
    """Each unit, then the whole model, reset to every checkpoint τ."""
    return [
        Variant("reinit", label, members, ("checkpoint", tau)) for label, members in targets(units) for tau in epochs
    ]


def variants(ctx: Context) -> list[Variant]:
    return describe(ctx.units, ctx.epochs)


def summary(units, robustness, distances, tables, section, categories):
    """The error of each unit reset to τ = 0 on each split, and its category from the test error."""
    reinit = robustness[robustness["probe"] == "reinit"]
    at_init = (
        reinit[reinit["checkpoint"] == 0]
        .pivot_table(index=KEYS, columns="split", values="error")
        .reindex(columns=["test", "train"])
        .set_axis(["reinit_test_error", "reinit_train_error"], axis=1)
    )
    out = units.join(at_init, on=KEYS)
    out["category"] = [
        categorize(e, f, c, categories["robust_max_increase"], categories["critical_fraction"])
        for e, f, c in zip(out["reinit_test_error"], out["final_test_error"], out["chance_error"])
    ]
    return out.set_index(KEYS)[["reinit_test_error", "reinit_train_error", "category"]]


def draw_heatmap(table, run, split):
    from layerprobe.results import figures  # here: the Snakefile imports this module without matplotlib

    return figures.robustness_heatmap(table, run, split)


# Shared with re-randomization, whose draws are the heatmap's first column.
ROBUSTNESS_FIGURE = Figure(
    rule="robustness",
    pattern="robustness_{split}",
    table="robustness",
    draw=draw_heatmap,
    caption="robustness.rst",
    category="Robustness",
    label="{split} error",
    values=lambda probes: {"split": probes["splits"]},
)


def draw_configuration(table, configuration, split):
    from layerprobe.results import figures

    return figures.configuration_heatmap(table, configuration, split)


def draw_sweep_categories(table, sweep):
    from layerprobe.results import figures

    return figures.sweep_categories(table, sweep)


def draw_sweep_heatmaps(table, sweep, split):
    from layerprobe.results import figures

    return figures.sweep_heatmaps(table, sweep, split)


# Across seeds: the heatmap of each configuration, averaged over its seeds; and for each sweep (the
# paper's F5-F7) the fractions of robust and critical units along its axes and its grid of heatmaps.
CONFIGURATION_FIGURE = Figure(
    rule="configuration_robustness",
    pattern="robustness_{split}",
    table="robustness",
    draw=draw_configuration,
    caption="configuration_robustness.rst",
    category="Configurations",
    label="{split} error, mean over seeds",
    values=lambda probes: {"split": probes["splits"]},
    over="configuration",
)
SWEEP_CATEGORIES_FIGURE = Figure(
    rule="sweep_categories",
    pattern="categories",
    table="units",
    draw=draw_sweep_categories,
    caption="sweep_categories.rst",
    category="Sweeps",
    label="robust and critical units",
    over="sweep",
)
SWEEP_HEATMAPS_FIGURE = Figure(
    rule="sweep_robustness",
    pattern="robustness_{split}",
    table="robustness",
    draw=draw_sweep_heatmaps,
    caption="sweep_robustness.rst",
    category="Sweeps",
    label="{split} error per model",
    values=lambda probes: {"split": probes["splits"]},
    over="sweep",
)

KIND = ProbeKind(
    name="reinit",
    variants=variants,
    summary=Summary(measures=("reinit_test_error", "reinit_train_error"), verdicts=("category",), compute=summary),
    figures=(ROBUSTNESS_FIGURE, CONFIGURATION_FIGURE, SWEEP_CATEGORIES_FIGURE, SWEEP_HEATMAPS_FIGURE),
)
