"""The tidy tables: their columns, and CSV output and input that round-trips them exactly.

robustness: one row per run × probe × unit × checkpoint/α/σ/draw × split (empty where n/a), with
its discordant counts against the unmodified model and 95% intervals (results.intervals).
distances: one row per run × unit × checkpoint or draw.
inventory: one row per run × unit: what the unit holds.
Aggregation adds tables of its own (layerprobe.aggregate: units.csv, and the probe kinds' tables such
as criticality.csv); figures and summaries are computed from these tables alone.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from layerprobe.base.atomic import atomic_path
from layerprobe.results.columns import DISTANCES, INVENTORY, ROBUSTNESS, RUN_COLUMNS

__all__ = ["DISTANCES", "INVENTORY", "ROBUSTNESS", "RUN_COLUMNS", "frame", "read_csv", "write_csv"]
# Integer-valued columns that may be empty: nullable ints keep "3" from becoming "3.0" in CSV.
_INTEGER = ("seed", "checkpoint", "draw", "draw_seed", "n", "worse", "better", "index", "n_params", "num_classes",
            "samples", "rewind_checkpoint", "rewind_checkpoint_point")


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
