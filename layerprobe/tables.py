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
ROBUSTNESS = RUN_COLUMNS + ["probe", "unit", "checkpoint", "alpha", "sigma", "draw", "draw_seed", "bn_stats",
                            "split", "error", "loss", "agreement", "n"]
DISTANCES = RUN_COLUMNS + ["unit", "source", "checkpoint", "draw", "draw_seed", "n_params",
                           "l2", "linf", "l2_rel_init", "l2_per_sqrt_n", "linf_rel_init"]
INVENTORY = RUN_COLUMNS + ["unit", "index", "n_params", "params", "rule", "num_classes"]
SUMMARY = ["final_test_error", "chance_error", "reinit_test_error", "reinit_train_error",
           "rerandomize_test_error_mean", "rerandomize_test_error_std", "l2_final", "l2_rel_init_final",
           "linf_final", "category", "category_rerandomize"]
UNITS = INVENTORY + SUMMARY
CATEGORIES = ("robust", "intermediate", "critical")
# Integer-valued columns that may be empty: nullable ints keep "3" from becoming "3.0" in CSV.
_INTEGER = ("seed", "checkpoint", "draw", "draw_seed", "n", "index", "n_params", "num_classes")


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


def summarize_units(inventory: pd.DataFrame, robustness: pd.DataFrame, distances: pd.DataFrame,
                    robust_max_increase: float, critical_fraction: float) -> pd.DataFrame:
    """units.csv: the inventory plus each unit's headline numbers and categories."""
    rows = []
    for record in inventory.to_dict("records"):
        run, unit = record["run"], record["unit"]
        rob = robustness[robustness["run"] == run]
        dist = distances[(distances["run"] == run) & (distances["unit"] == unit)]
        final_epoch = rob.loc[rob["probe"] == "reinit", "checkpoint"].max()

        def errors(probe: str, split: str, name: str = unit, epoch=None) -> pd.Series:
            sel = rob[(rob["probe"] == probe) & (rob["unit"] == name) & (rob["split"] == split)]
            return sel.loc[sel["checkpoint"] == epoch, "error"] if epoch is not None else sel["error"]

        def one(series: pd.Series) -> float:
            return float(series.iloc[0]) if len(series) else np.nan

        final = one(errors("reinit", "test", FULLMODEL, final_epoch))
        chance = 1.0 - 1.0 / record["num_classes"]
        rerandomized = errors("rerandomize", "test")
        at_final = dist[(dist["source"] == "checkpoint") & (dist["checkpoint"] == dist["checkpoint"].max())]
        summary = {
            "final_test_error": final, "chance_error": chance,
            "reinit_test_error": one(errors("reinit", "test", epoch=0)),
            "reinit_train_error": one(errors("reinit", "train", epoch=0)),
            "rerandomize_test_error_mean": rerandomized.mean() if len(rerandomized) else np.nan,
            "rerandomize_test_error_std": rerandomized.std() if len(rerandomized) > 1 else np.nan,
            "l2_final": one(at_final["l2"]), "l2_rel_init_final": one(at_final["l2_rel_init"]),
            "linf_final": one(at_final["linf"]),
        }
        for column, source in (("category", "reinit_test_error"), ("category_rerandomize", "rerandomize_test_error_mean")):
            summary[column] = categorize(summary[source], final, chance, robust_max_increase, critical_fraction)
        rows.append({**record, **summary})
    return frame(rows, UNITS)
