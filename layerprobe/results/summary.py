"""The summary a person reads first (results/summary.rst, at the top of the report): one table per
configuration, a row per unit, drawn from configurations.csv and units.csv.

Each row gives how many seeds put the unit in each category, its re-initialization test error
(the mean and, with two seeds or more, its 95% interval), its rewind point in each seed and its
criticality μ when units.csv has those columns; each table's title the seeds and the network
criticality. reStructuredText, so it reads as plain text too.
"""

from __future__ import annotations

import math

import pandas as pd

# The order a reader asks in: which units matter, which might, which do not, which the data leave open.
SHOWN_CATEGORIES = ("critical", "intermediate", "robust", "uncertain")
_SPECIAL = str.maketrans({c: "\\" + c for c in "\\_*`|"})


def render(configurations: pd.DataFrame, units: pd.DataFrame) -> str:
    """The summary's text, one list-table per configuration in the table's order."""
    lines = [
        "One table per configuration (runs that differ only in their seed). The category columns count",
        "the seeds that put the unit in each category; the re-initialization error is the test error with",
        "the unit reset to its initialization, its mean over the seeds with a 95% interval (Student's t)",
        "from two seeds on. The numbers are in the table configurations.csv.",
        "",
    ]
    for name in pd.unique(configurations["configuration"]):
        lines += _table(configurations[configurations["configuration"] == name], units)
    return "\n".join(lines)


def _table(rows: pd.DataFrame, units: pd.DataFrame) -> list[str]:
    first = rows.iloc[0]
    runs = str(first["runs"]).split()
    title = f"{first['configuration']}: {_count(int(first['seeds']), 'seed')} ({', '.join(runs)})"
    title += f"; final test error {_with_interval(first, 'final_test_error', '.3f')}"
    if "final_test_perplexity_mean" in first:  # per token for a language model
        title += f", perplexity {_with_interval(first, 'final_test_perplexity', '.4g')}"
    if "network_criticality_mean" in rows:
        title += f"; network criticality {_with_interval(first, 'network_criticality', '.3g')}"
    header = ["unit", *SHOWN_CATEGORIES, "re-init test error"]
    rewinds = "rewind_checkpoint" in units
    header += ["rewind point (per seed)"] * rewinds + ["criticality μ"] * ("criticality_mean" in rows)
    body = []
    for _, row in rows.iterrows():
        cells = [str(row["unit"]), *[str(int(row[f"seeds_{c}"])) for c in SHOWN_CATEGORIES]]
        cells.append(_with_interval(row, "reinit_test_error", ".3f"))
        if rewinds:
            own = units[(units["unit"] == row["unit"]) & units["run"].astype(str).isin(runs)]
            order = own.set_index(own["run"].astype(str)).reindex(runs)["rewind_checkpoint"]
            cells.append(", ".join("none" if pd.isna(v) else f"{v:g}" for v in order))
        if "criticality_mean" in rows:
            cells.append(_with_interval(row, "criticality", ".3g"))
        body.append(cells)
    out = [f".. list-table:: {title.translate(_SPECIAL)}", "   :header-rows: 1", ""]
    for cells in [header, *body]:
        out += [f"   {'*' if k == 0 else ' '} - {cell.translate(_SPECIAL)}" for k, cell in enumerate(cells)]
    return out + [""]


def _with_interval(row: pd.Series, column: str, spec: str) -> str:
    """The mean, with its interval when there is one: 0.123 [0.101, 0.145]; — when missing."""
    if f"{column}_mean" not in row:
        return "—"
    mean, low, high = (float(row[f"{column}_{s}"]) for s in ("mean", "low", "high"))
    text = _number(mean, spec)
    return text if math.isnan(low) else f"{text} [{_number(low, spec)}, {_number(high, spec)}]"


def _number(value: float, spec: str) -> str:
    if math.isnan(value):
        return "—"
    return ("∞" if value > 0 else "−∞") if math.isinf(value) else format(value, spec)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("s" if n != 1 else "")
