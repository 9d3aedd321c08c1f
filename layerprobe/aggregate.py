"""All runs' tables together: the probe kinds' own tables (criticality.csv) and units.csv, the per-unit summary.

units.csv is the inventory, the unmodified model's test error and chance, then every kind's
measurements (in the kinds' order), the distance each unit moved by the final checkpoint, and every
kind's verdicts (categories, criticality) — the layout of `units_columns()`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from layerprobe import kinds
from layerprobe.base.names import FULLMODEL
from layerprobe.config import section
from layerprobe.results.categories import chance_error
from layerprobe.results.tables import DISTANCES, INVENTORY, ROBUSTNESS, frame

KEYS = ["run", "unit"]
# The unmodified model on the test split; perplexity is exp(mean cross-entropy): per token for a sequence model.
REFERENCE = ["final_test_error", "final_test_loss", "final_test_perplexity", "chance_error"]
DISTANCE = ["l2_final", "l2_rel_init_final", "linf_final"]


def units_columns() -> list[str]:
    """The columns of units.csv."""
    summaries = [k.summary for k in kinds.kinds() if k.summary]
    return (
        INVENTORY
        + REFERENCE
        + [c for s in summaries for c in s.measures]
        + DISTANCE
        + [c for s in summaries for c in s.verdicts]
    )


def columns_of(table: str) -> list[str]:
    """The columns of an aggregated table, by its name (results/tables/{name}.csv)."""
    known = {
        "robustness": ROBUSTNESS,
        "distances": DISTANCES,
        "inventory": INVENTORY,
        "units": units_columns(),
        **{t.name: t.columns for t in kinds.tables()},
    }
    if table not in known:
        raise ValueError(f"unknown table {table!r}; known: {', '.join(known)}")
    return known[table]


def kind_tables(
    robustness: pd.DataFrame, distances: pd.DataFrame, settings: dict | None = None
) -> dict[str, pd.DataFrame]:
    """Every kind's own tables, by name; `settings` is kinds.aggregate_settings of the probes section
    (None: of the schema's defaults)."""
    settings = _settings(settings)
    return {t.name: t.make(robustness, distances, settings[k.name]) for k in kinds.kinds() for t in k.tables}


def summarize_units(
    inventory: pd.DataFrame,
    robustness: pd.DataFrame,
    distances: pd.DataFrame,
    categories: dict,
    settings: dict | None = None,
    own: dict[str, pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """units.csv: the inventory plus each unit's headline numbers and categories.

    `categories` is the config's section; `settings` kinds.aggregate_settings of the probes section
    (None: of the schema's defaults); `own` the kinds' tables (kind_tables), made here when not given.
    """
    settings = _settings(settings)
    own = kind_tables(robustness, distances, settings) if own is None else own
    # The unmodified model's test error: re-initialization's fullmodel row at the final checkpoint (the one
    # row that is the final model on the whole test split).
    reinit = robustness[robustness["probe"] == "reinit"]
    final_epoch = reinit.groupby("run")["checkpoint"].transform("max")
    final = reinit[(reinit["unit"] == FULLMODEL) & (reinit["split"] == "test") & (reinit["checkpoint"] == final_epoch)]
    moved = distances[distances["source"] == "checkpoint"]
    moved = moved[moved["checkpoint"] == moved.groupby(KEYS)["checkpoint"].transform("max")]
    moved = moved.set_index(KEYS)[["l2", "l2_rel_init", "linf"]].add_suffix("_final")

    final = final.set_index("run")
    units = inventory.join(final["error"].rename("final_test_error"), on="run")
    units = units.join(final["loss"].rename("final_test_loss"), on="run")
    units["final_test_perplexity"] = np.exp(units["final_test_loss"])
    units["chance_error"] = chance_error(units["num_classes"])
    base = units.copy()
    for kind in kinds.kinds():
        if kind.summary:
            columns = kind.summary.compute(base, robustness, distances, own, settings[kind.name], categories)
            units = units.join(columns, on=KEYS)
    units = units.join(moved, on=KEYS)
    return frame(units.to_dict("records"), units_columns())


def _settings(settings: dict | None) -> dict:
    return kinds.aggregate_settings(section("probes")) if settings is None else settings
