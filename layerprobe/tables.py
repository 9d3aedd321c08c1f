"""The tidy tables: their columns, CSV input/output, and the per-unit summary with categories.

robustness: one row per run × probe × unit × checkpoint/α/σ/draw × split (empty where n/a).
distances: one row per run × unit × checkpoint or draw.
units: one row per run × unit: its inventory and a summary with a robust/intermediate/critical
category. Figures and summaries are computed from these tables alone.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from layerprobe.atomic import atomic_path
from layerprobe.units import FULLMODEL

RUN_COLUMNS = ["run", "dataset", "model", "seed"]
ROBUSTNESS = RUN_COLUMNS + ["probe", "unit", "members", "checkpoint", "alpha", "sigma", "draw", "draw_seed", "bn_stats",
                            "split", "error", "loss", "agreement", "n"]
DISTANCES = RUN_COLUMNS + ["unit", "source", "checkpoint", "draw", "draw_seed", "n_params",
                           "l2", "linf", "l2_rel_init", "l2_per_sqrt_n", "linf_rel_init"]
INVENTORY = RUN_COLUMNS + ["unit", "index", "n_params", "params", "rule", "num_classes"]
CRITICALITY = RUN_COLUMNS + ["unit", "alpha", "sigma", "split", "n", "samples", "mean_error", "mean_loss",
                             "baseline_error", "baseline_loss", "measure", "threshold", "feasible", "distance_sq",
                             "score", "chosen"]
SUMMARY = ["final_test_error", "chance_error", "reinit_test_error", "reinit_train_error",
           "rerandomize_test_error_mean", "rerandomize_test_error_std", "l2_final", "l2_rel_init_final",
           "linf_final", "category", "category_rerandomize", "criticality", "criticality_alpha",
           "criticality_sigma", "network_criticality"]
UNITS = INVENTORY + SUMMARY
CATEGORIES = ("robust", "intermediate", "critical")
# Integer-valued columns that may be empty: nullable ints keep "3" from becoming "3.0" in CSV.
_INTEGER = ("seed", "checkpoint", "draw", "draw_seed", "n", "index", "n_params", "num_classes", "samples")


def frame(rows: list[dict], columns: list[str], run: dict | None = None) -> pd.DataFrame:
    """A DataFrame with exactly `columns` in order; `run` fills the run-level columns."""
    df = pd.DataFrame([{**(run or {}), **row} for row in rows]).reindex(columns=columns)
    for col in _INTEGER:
        if col in df:
            df[col] = df[col].astype("Int64")
    return df


def write_csv(df: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def read_csv(path: str | Path, columns: list[str]) -> pd.DataFrame:
    df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    missing = [c for c in columns if c not in df]
    if missing:
        raise ValueError(f"{path}: not a layerprobe table (missing columns {missing})")
    return frame(df.to_dict("records"), columns)


def chance_error(num_classes):
    """The error of guessing uniformly among `num_classes` classes (a number or a column)."""
    return 1.0 - 1.0 / num_classes


def categorize(error: float, final_error: float, chance_error: float, robust_max_increase: float,
               critical_fraction: float) -> str:
    """robust: error rises by at most `robust_max_increase`; critical: at least `critical_fraction`
    of the way from the final error to chance; intermediate in between."""
    if np.isnan(error):
        return ""
    if error - final_error <= robust_max_increase:
        return "robust"
    if error >= final_error + critical_fraction * (chance_error - final_error):
        return "critical"
    return "intermediate"


def criticality(robustness: pd.DataFrame, distances: pd.DataFrame, measure: str = "loss",
                tolerance: str = "relative", value: float = 1.01) -> pd.DataFrame:
    """criticality.csv: every run × unit × α × σ grid point with its mean over the noise samples,
    whether it is feasible, its score α²‖θ^T − θ^0‖²/σ², and the chosen (minimal) point per unit.

    Feasible: mean `measure` ≤ value × the unperturbed model's (relative) or ≤ value (absolute).
    """
    rows = robustness[robustness["probe"] == "criticality"]
    keys = ["run", "split"]
    base = rows[rows["unit"] == FULLMODEL].set_index(keys)[["error", "loss"]].add_prefix("baseline_")
    grid = (rows[rows["unit"] != FULLMODEL].groupby(["run", "unit", "alpha", "sigma", "split"], sort=False)
            .agg(n=("n", "first"), samples=("error", "size"), mean_error=("error", "mean"), mean_loss=("loss", "mean"))
            .reset_index())
    if grid.empty:
        return frame([], CRITICALITY)
    moved = distances[distances["source"] == "checkpoint"]
    moved = moved[moved["checkpoint"] == moved.groupby(["run", "unit"])["checkpoint"].transform("max")]
    grid = (grid.join(base, on=keys).join(moved.set_index(["run", "unit"])["l2"].pow(2).rename("distance_sq"),
                                          on=["run", "unit"]).join(robustness.groupby("run")[RUN_COLUMNS[1:]].first(), on="run"))
    grid["measure"] = measure
    grid["threshold"] = value * grid[f"baseline_{measure}"] if tolerance == "relative" else value
    grid["feasible"] = grid[f"mean_{measure}"] <= grid["threshold"]
    grid["score"] = (grid["alpha"] ** 2 * grid["distance_sq"] / grid["sigma"] ** 2).where(grid["feasible"])
    best = grid.dropna(subset=["score"]).groupby(["run", "unit"], sort=False)["score"].idxmin()
    grid["chosen"] = grid.index.isin(best)
    return frame(grid.to_dict("records"), CRITICALITY)


def summarize_units(inventory: pd.DataFrame, robustness: pd.DataFrame, distances: pd.DataFrame,
                    robust_max_increase: float, critical_fraction: float,
                    critical: pd.DataFrame | None = None) -> pd.DataFrame:
    """units.csv: the inventory plus each unit's headline numbers and categories."""
    keys = ["run", "unit"]
    reinit = robustness[robustness["probe"] == "reinit"]
    final_epoch = reinit.groupby("run")["checkpoint"].transform("max")
    final = reinit[(reinit["unit"] == FULLMODEL) & (reinit["split"] == "test") & (reinit["checkpoint"] == final_epoch)]
    at_init = (reinit[reinit["checkpoint"] == 0].pivot_table(index=keys, columns="split", values="error")
               .reindex(columns=["test", "train"]).set_axis(["reinit_test_error", "reinit_train_error"], axis=1))
    redrawn = robustness[(robustness["probe"] == "rerandomize") & (robustness["split"] == "test")]
    redrawn = redrawn.groupby(keys)["error"].agg(rerandomize_test_error_mean="mean", rerandomize_test_error_std="std")
    moved = distances[distances["source"] == "checkpoint"]
    moved = moved[moved["checkpoint"] == moved.groupby(keys)["checkpoint"].transform("max")]
    moved = moved.set_index(keys)[["l2", "l2_rel_init", "linf"]].add_suffix("_final")

    units = (inventory.join(final.set_index("run")["error"].rename("final_test_error"), on="run")
             .join(at_init, on=keys).join(redrawn, on=keys).join(moved, on=keys))
    units["chance_error"] = chance_error(units["num_classes"])
    if critical is not None and not critical.empty:
        # μ per unit: the chosen point's score, ∞ when no grid point is feasible; the network's is their sum.
        chosen = critical[critical["chosen"].astype(bool)].set_index(keys)
        measured = critical.groupby(keys).size().rename("grid_points")
        units = units.join(chosen[["score", "alpha", "sigma"]].add_prefix("criticality_"), on=keys).join(measured, on=keys)
        units["criticality"] = units["criticality_score"].where(units["grid_points"].isna() | units["criticality_score"].notna(),
                                                                np.inf)
        units["network_criticality"] = units.groupby("run")["criticality"].transform(lambda c: c.sum(min_count=1))
    for column, source in (("category", "reinit_test_error"), ("category_rerandomize", "rerandomize_test_error_mean")):
        units[column] = [categorize(e, f, c, robust_max_increase, critical_fraction)
                         for e, f, c in zip(units[source], units["final_test_error"], units["chance_error"])]
    return frame(units.to_dict("records"), UNITS)
