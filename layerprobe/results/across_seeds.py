"""Across seeds: each configuration's units summarized over its runs (configurations.csv), and the mean
of its runs' robustness heatmaps.

configurations.csv has one row per configuration × unit: the unit's description, the seeds counted,
for every numeric summary column X of units.csv its `X_mean`, `X_std` (sample standard deviation) and
a 95% interval `X_low`, `X_high` on the mean (Student's t with seeds − 1 degrees of freedom), and how
many seeds put the unit in each category (`seeds_robust`, ...). The columns are found in units.csv
itself, so a column a probe kind adds is summarized too. A column's statistics use every seed: one
seed without a value (a rewind point that does not exist) leaves them empty, and one seed leaves
the spread and the interval empty.
"""

from __future__ import annotations

import math

import pandas as pd

from layerprobe.results import student_t
from layerprobe.results.categories import CATEGORIES as CATEGORY_NAMES
from layerprobe.results.columns import INVENTORY

CONFIDENCE = 0.95
# What identifies a unit of a configuration: the same in each of its runs.
DESCRIPTION = ["dataset", "model", "unit", "index", "n_params", "params", "rule", "num_classes"]
STATISTICS = ("mean", "std", "low", "high")


def summary_columns(units: pd.DataFrame) -> list[str]:
    """The numeric columns of units.csv beyond the inventory, in its order: what is summarized.

    The categories (category, category_rerandomize, ...) are text even when a CSV leaves them all
    empty, which reads back as numbers: they are told by their name, so the layout never depends on
    the values.
    """
    return [
        c for c in units.columns
        if c not in INVENTORY and not c.startswith("category")
        and pd.api.types.is_numeric_dtype(units[c]) and not pd.api.types.is_bool_dtype(units[c])
    ]


def columns(summarized: list[str]) -> list[str]:
    """The columns of configurations.csv for these summarized columns of units.csv."""
    return (
        ["configuration", "runs", "seeds", *DESCRIPTION]
        + [f"{c}_{s}" for c in summarized for s in STATISTICS]
        + [f"seeds_{name}" for name in CATEGORY_NAMES]
    )


def interval(values: list[float], confidence: float = CONFIDENCE) -> tuple[float, float, float, float]:
    """(mean, sample std, low, high) of `values`, the interval on the mean from Student's t; NaN where
    a value is missing, std and interval NaN for a single value."""
    n = len(values)
    if n == 0 or any(math.isnan(v) for v in values):
        return (math.nan,) * 4
    mean = math.fsum(values) / n
    if n == 1:
        return mean, math.nan, math.nan, math.nan
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = student_t.quantile(confidence, n - 1) * std / math.sqrt(n)
    return mean, std, mean - half, mean + half


def configurations_table(units: pd.DataFrame, configurations: dict[str, list[str]]) -> pd.DataFrame:
    """configurations.csv from units.csv and {configuration: its runs} (config.configurations.group):
    configurations in that order, units in model order."""
    summarized = summary_columns(units)
    rows = []
    for name, runs in configurations.items():
        own = units[units["run"].astype(str).isin(runs)]
        for unit in pd.unique(own["unit"]):
            seeds = own[own["unit"] == unit]
            row = {"configuration": name, "runs": " ".join(map(str, seeds["run"])), "seeds": len(seeds)}
            row.update(seeds.iloc[0][DESCRIPTION].to_dict())
            for column in summarized:
                values = pd.to_numeric(seeds[column], errors="coerce").astype(float).tolist()  # a missing value: NaN
                row.update(zip([f"{column}_{s}" for s in STATISTICS], interval(values)))
            counted = seeds["category"].value_counts() if "category" in seeds else {}
            row.update({f"seeds_{c}": int(counted.get(c, 0)) for c in CATEGORY_NAMES})
            rows.append(row)
    table = pd.DataFrame(rows).reindex(columns=columns(summarized))
    for column in ["seeds", "index", "n_params", "num_classes", *[f"seeds_{c}" for c in CATEGORY_NAMES]]:
        table[column] = table[column].astype("Int64")
    return table


def mean_heatmap(matrices: list[pd.DataFrame]) -> pd.DataFrame:
    """The cell-wise mean of the runs' heatmap matrices (figures.heatmap_matrix), in the first one's
    order; a cell missing in one run is missing in the mean."""
    total = matrices[0]
    for matrix in matrices[1:]:
        total = total.add(matrix.reindex(index=total.index, columns=total.columns))
    return total / len(matrices)


def category_fractions(units: pd.DataFrame, configurations: dict[str, list[str]],
                       categories: tuple[str, ...] = ("robust", "critical")) -> pd.DataFrame:
    """Per configuration: the fraction of a run's units in each category, over its runs — `{c}_mean`,
    `{c}_std`, `{c}_low`, `{c}_high` for each category c — and the seeds counted."""
    rows = []
    for name, runs in configurations.items():
        own = [units[units["run"].astype(str) == str(run)] for run in runs]
        row = {"configuration": name, "seeds": len(runs)}
        for category in categories:
            fractions = [float((run_units["category"] == category).mean()) if len(run_units) else math.nan
                         for run_units in own]
            row.update(zip([f"{category}_{s}" for s in STATISTICS], interval(fractions)))
        rows.append(row)
    return pd.DataFrame(rows, columns=["configuration", "seeds",
                                       *[f"{c}_{s}" for c in categories for s in STATISTICS]])
