"""Re-initialization (paper §1): each unit, then the whole model, reset to every checkpoint τ.

τ = 0 is re-initialization proper; τ > 0 rewinds the unit to a checkpoint. Its rows give units.csv
each unit's error and error increase (with its 95% interval) at τ = 0, the unit's category, decided
on that interval, and its rewind point; the robustness heatmap shows them, per run and averaged over
each configuration's seeds, and the sweeps' figures draw the categories along the axes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from layerprobe.kinds.base import Context, Figure, ProbeKind, Summary
from layerprobe.probing.variants import Variant, targets
from layerprobe.results.categories import categorize, categorize_interval, rewind_point

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


MEASURES = (
    "reinit_test_error",
    "reinit_train_error",
    "reinit_test_increase",
    "reinit_test_increase_low",
    "reinit_test_increase_high",
)
VERDICTS = ("category", "category_between", "category_point", "rewind_checkpoint", "rewind_checkpoint_point")
INCREASE = ("increase", "increase_low", "increase_high")


def summary(units, robustness, distances, tables, section, categories):
    """Each unit reset to τ = 0: its error on each split, and its test error increase with the 95%
    interval; its category from that interval (`uncertain` where it straddles a threshold, with the
    categories it lies between) and from the point error alone (`category_point`: the rule the
    joint probe's robust set uses); its rewind point, the earliest checkpoint before the final one
    whose test increase is within `robust_max_increase`, judged on the interval's upper end
    (`rewind_checkpoint`) or on the point (`rewind_checkpoint_point`), empty when none is."""
    limits = categories["robust_max_increase"], categories["critical_fraction"]
    reinit = robustness[robustness["probe"] == "reinit"]
    errors = (
        reinit[reinit["checkpoint"] == 0]
        .pivot_table(index=KEYS, columns="split", values="error")
        .reindex(columns=["test", "train"])
        .set_axis(["reinit_test_error", "reinit_train_error"], axis=1)
    )
    test = reinit[reinit["split"] == "test"]
    increases = test[test["checkpoint"] == 0].set_index(KEYS)[list(INCREASE)].add_prefix("reinit_test_")
    out = units.join(errors, on=KEYS).join(increases, on=KEYS)
    reference = list(zip(out["final_test_error"], out["chance_error"]))
    out["category_point"] = [categorize(e, *ref, *limits) for e, ref in zip(out["reinit_test_error"], reference)]
    verdicts = [
        categorize_interval(low, high, *ref, *limits)
        for low, high, ref in zip(out["reinit_test_increase_low"], out["reinit_test_increase_high"], reference)
    ]
    out["category"] = [category for category, _ in verdicts]
    out["category_between"] = [between for _, between in verdicts]
    rewinds = test[test["checkpoint"] < test.groupby("run")["checkpoint"].transform("max")]
    by_unit = dict(list(rewinds.groupby(KEYS)))
    for column, value in (("rewind_checkpoint", "increase_high"), ("rewind_checkpoint_point", "increase")):
        out[column] = [
            rewind_point(zip(rows["checkpoint"], rows[value]), limits[0]) if rows is not None else None
            for rows in (by_unit.get(key) for key in zip(out["run"], out["unit"]))
        ]
    return out.set_index(KEYS)[list(MEASURES + VERDICTS)]


def draw_heatmap(table, run, split, categories):
    from layerprobe.results import figures  # here: the Snakefile imports this module without matplotlib

    return figures.robustness_heatmap(table, run, split, categories)


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
    categories=True,  # the rewind points and the cells in doubt are marked against its thresholds
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
    summary=Summary(measures=MEASURES, verdicts=VERDICTS, compute=summary),
    figures=(ROBUSTNESS_FIGURE, CONFIGURATION_FIGURE, SWEEP_CATEGORIES_FIGURE, SWEEP_HEATMAPS_FIGURE),
)
