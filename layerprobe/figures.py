"""Paper-style heatmaps (Zhang, Bengio, Singer, Fig. 1) drawn from the result tables.

Two figures:

* ``robustness_heatmap``: classification error after resetting each unit, one row per
  unit (the whole model, "fullmodel", first), one column for a fresh random draw
  ("ReRnd", averaged over draws) and one per checkpoint the unit was reset to.
* ``distance_heatmap``: how far each unit's weights moved from initialisation, laid
  out the same way.

``heatmap_matrix`` does all of the data work (selection, averaging, ordering) so it can
be tested without looking at pixels; the drawing functions only lay that matrix out.
Figures are plain ``matplotlib.figure.Figure`` objects: no pyplot, no global backend.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure

from layerprobe.atomic import atomic_path
from layerprobe.units import FULLMODEL

RERND = "ReRnd"
# Above this many units the paper puts checkpoints on the rows instead (large nets).
MAX_UNITS_AS_ROWS = 12

ERROR_CMAP = "viridis"
DISTANCE_CMAP = "Blues"

# Row kinds: robustness rows say it in "probe", distance rows in "source".
_AT_CHECKPOINT = {"reinit", "checkpoint"}
_REDRAWN = "rerandomize"

_FONT_SIZE = 8
_PNG_DPI = 150


# ---------------------------------------------------------------------------
# Data: table -> matrix
# ---------------------------------------------------------------------------


def heatmap_matrix(
    table: pd.DataFrame, run: str, value: str, split: str | None = None
) -> pd.DataFrame:
    """The (rows x columns) matrix behind both heatmaps, before any transposition.

    Index: "fullmodel" first when the table has it, then the units in order of first
    appearance (the tables are written in model order). Columns: ["ReRnd", tau_0,
    tau_1, ...] with the checkpoint epochs as ints in increasing order. "ReRnd" is
    the mean of ``value`` over the rerandomize draws; a checkpoint cell is the single
    row that reset the unit to that checkpoint. Missing cells are NaN.

    Rows of other probes (interpolate, criticality, ...) are ignored. ``split`` selects
    the robustness split; leave it None for the distances table (no split column).
    """
    rows = _select_run(table, run)
    if split is not None:
        rows = _select_split(rows, run, split)
    _require_column(rows, value)

    kind = _row_kind(rows)
    plotted = rows[kind.isin(_AT_CHECKPOINT) | (kind == _REDRAWN)]
    at_checkpoint = rows[kind.isin(_AT_CHECKPOINT)]
    redrawn = rows[kind == _REDRAWN]
    if plotted.empty:
        raise ValueError(
            f"run {run!r} has no checkpoint or rerandomize rows"
            + (f" for split {split!r}" if split is not None else "")
        )
    # One row per cell: silently averaging e.g. two bn_stats variants would mislead.
    _require_unique(at_checkpoint, ["unit", "checkpoint"], run)
    _require_unique(redrawn, ["unit", "draw"], run)

    order = _row_order(plotted["unit"])
    matrix = _checkpoint_columns(at_checkpoint, value).reindex(index=order)
    # insert() aligns on the unit labels, so units without draws get NaN.
    matrix.insert(0, RERND, _numeric(redrawn, value).groupby(redrawn["unit"].astype(str)).mean())
    matrix = matrix.astype(float)
    matrix.index.name = "unit"
    matrix.columns.name = None
    return matrix


def should_transpose(matrix: pd.DataFrame) -> bool:
    """True when the matrix has too many units to show them as rows (paper: big nets)."""
    return sum(label != FULLMODEL for label in matrix.index) > MAX_UNITS_AS_ROWS


def _select_run(table: pd.DataFrame, run: str) -> pd.DataFrame:
    _require_column(table, "run")
    # Compare as text: read_csv turns a run named "1" into the int 1.
    runs = table["run"].astype(str)
    if str(run) not in set(runs):
        raise ValueError(f"run {run!r} is not in the table; runs present: {sorted(set(runs))}")
    return table[runs == str(run)]


def _select_split(rows: pd.DataFrame, run: str, split: str) -> pd.DataFrame:
    _require_column(rows, "split")
    splits = rows["split"].astype(str)
    if str(split) not in set(splits):
        raise ValueError(
            f"split {split!r} is not in the table for run {run!r}; "
            f"splits present: {sorted(set(splits))}"
        )
    return rows[splits == str(split)]


def _row_kind(rows: pd.DataFrame) -> pd.Series:
    for column in ("probe", "source"):
        if column in rows.columns:
            return rows[column].astype(str)
    raise ValueError("table has neither a 'probe' nor a 'source' column")


def _row_order(units: pd.Series) -> list[str]:
    """fullmodel first (it is not a real unit), then units in order of first appearance."""
    seen = list(pd.unique(units.astype(str)))
    return ([FULLMODEL] if FULLMODEL in seen else []) + [u for u in seen if u != FULLMODEL]


def _checkpoint_columns(rows: pd.DataFrame, value: str) -> pd.DataFrame:
    """unit x epoch values, epochs as ints sorted numerically (0, 1, 5, 10 not 0, 1, 10, 5)."""
    # The checkpoint column is float after read_csv (rerandomize rows leave it empty).
    epochs = pd.to_numeric(rows["checkpoint"], errors="raise")
    if epochs.isna().any():
        raise ValueError("some checkpoint rows have an empty 'checkpoint' cell")
    cells = pd.DataFrame(
        {
            "unit": rows["unit"].astype(str).to_numpy(),
            "epoch": [int(e) for e in epochs],
            "value": _numeric(rows, value).to_numpy(),
        }
    )
    wide = cells.pivot(index="unit", columns="epoch", values="value")
    wide = wide.reindex(columns=sorted(cells["epoch"].unique()))
    wide.columns = [int(c) for c in wide.columns]
    return wide


def _numeric(rows: pd.DataFrame, value: str) -> pd.Series:
    return pd.to_numeric(rows[value], errors="coerce")


def _require_column(table: pd.DataFrame, column: str) -> None:
    if column not in table.columns:
        raise ValueError(f"column {column!r} is not in the table; columns: {list(table.columns)}")


def _require_unique(rows: pd.DataFrame, keys: list[str], run: str) -> None:
    repeated = rows[rows.duplicated(keys, keep=False)]
    if repeated.empty:
        return
    varying = [
        c for c in repeated.columns
        if c not in keys and repeated.groupby(keys)[c].nunique(dropna=False).gt(1).any()
    ]
    raise ValueError(
        f"run {run!r} has several rows for the same ({', '.join(keys)}) cell, "
        f"e.g. {repeated[keys].iloc[0].to_dict()}; columns that differ between them: "
        f"{varying}. Filter the table to one variant before plotting."
    )


# ---------------------------------------------------------------------------
# Drawing: matrix -> figure
# ---------------------------------------------------------------------------


def robustness_heatmap(table: pd.DataFrame, run: str, split: str) -> Figure:
    """Error after resetting each unit (fixed 0..1 colour range so runs compare)."""
    matrix = heatmap_matrix(table, run, "error", split=split)
    return _heatmap(
        matrix,
        cmap=colormaps[ERROR_CMAP],
        norm=Normalize(0.0, 1.0),
        title=f"{run}: {split} error after resetting each unit",
        colorbar_label=f"{split} error",
    )


def distance_heatmap(table: pd.DataFrame, run: str, measure: str) -> Figure:
    """Distance of each unit's weights from initialisation (colour range from the data)."""
    matrix = heatmap_matrix(table, run, measure)
    low, high = np.nanmin(matrix.to_numpy()), np.nanmax(matrix.to_numpy())
    if not np.isfinite(low):
        low, high = 0.0, 1.0  # all cells empty: any range will do
    if high <= low:
        high = low + 1.0  # a constant matrix would give a zero-width colour range
    return _heatmap(
        matrix,
        cmap=colormaps[DISTANCE_CMAP],
        norm=Normalize(low, high),
        title=f"{run}: {measure} from initialisation",
        colorbar_label=measure,
    )


def _heatmap(
    matrix: pd.DataFrame, cmap: Colormap, norm: Normalize, title: str, colorbar_label: str
) -> Figure:
    transposed = should_transpose(matrix)
    shown = matrix.T if transposed else matrix
    values = shown.to_numpy(dtype=float)
    n_rows, n_cols = values.shape

    fig = Figure(figsize=_figure_size(shown), layout="constrained")
    ax = fig.add_subplot()
    cmap = cmap.with_extremes(bad="lightgrey")  # missing cells stand out from real values
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, norm=norm, aspect="auto")
    _write_cell_values(ax, values, cmap, norm)

    ax.set_xticks(range(n_cols), [str(c) for c in shown.columns], fontsize=_FONT_SIZE)
    ax.set_yticks(range(n_rows), [str(r) for r in shown.index], fontsize=_FONT_SIZE)
    if transposed:
        ax.set_xlabel("Unit")
        ax.set_ylabel("Checkpoint index")
        ax.tick_params(axis="x", labelrotation=90)
    else:
        ax.set_xlabel("Checkpoint index")
        ax.set_ylabel("Unit")
    _separate_special_cells(ax, shown, transposed, colour=_separator_colour(cmap))
    ax.tick_params(length=0)
    ax.set_title(title, fontsize=_FONT_SIZE + 2)
    fig.colorbar(image, ax=ax, label=colorbar_label, fraction=0.05, pad=0.02)
    return fig


def _write_cell_values(ax, values: np.ndarray, cmap: Colormap, norm: Normalize) -> None:
    for (i, j), v in np.ndenumerate(values):
        if np.isnan(v):
            continue
        ax.text(j, i, f"{v:.2f}", ha="center", va="center",
                fontsize=_FONT_SIZE, color=_text_colour(cmap(norm(v))))


def _text_colour(rgba) -> str:
    """Black on light cells, white on dark ones (perceived luminance, Rec. 709 weights)."""
    r, g, b = rgba[:3]
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.5 else "white"


def _separator_colour(cmap: Colormap) -> str:
    # White vanishes on maps that start near white (Blues): use a dark line there.
    return "0.25" if _text_colour(cmap(0.0)) == "black" else "white"


def _separate_special_cells(ax, shown: pd.DataFrame, transposed: bool, colour: str) -> None:
    """Lines after the ReRnd column and the fullmodel row: they are not checkpoints/units."""
    rernd_line, full_line = (ax.axhline, ax.axvline) if transposed else (ax.axvline, ax.axhline)
    rernd_axis, full_axis = (shown.index, shown.columns) if transposed else (shown.columns, shown.index)
    if len(rernd_axis) > 1 and rernd_axis[0] == RERND:
        rernd_line(0.5, color=colour, linewidth=2)
    if len(full_axis) > 1 and full_axis[0] == FULLMODEL:
        full_line(0.5, color=colour, linewidth=2)


def _figure_size(shown: pd.DataFrame) -> tuple[float, float]:
    """Size the figure from its cells so the numbers never overlap, however big the net."""
    widest_value = max((len(f"{v:.2f}") for v in shown.to_numpy().ravel() if np.isfinite(v)), default=4)
    cell_width = max(0.5, 0.075 * widest_value + 0.15)
    cell_height = 0.32
    longest_row_label = max((len(str(r)) for r in shown.index), default=4)
    longest_col_label = max((len(str(c)) for c in shown.columns), default=4)
    width = shown.shape[1] * cell_width + 0.07 * longest_row_label + 2.2  # labels + colour bar
    height = shown.shape[0] * cell_height + 0.07 * longest_col_label + 1.3  # title + x labels
    return max(width, 5.0), max(height, 3.0)


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------


def save_figure(fig: Figure, png_path: str | os.PathLike, pdf_path: str | os.PathLike) -> None:
    """Write the figure as PNG and PDF, each atomically, then close it."""
    try:
        _save_atomically(fig, png_path, "png")
        _save_atomically(fig, pdf_path, "pdf")
    finally:
        _close(fig)


def _save_atomically(fig: Figure, path: str | os.PathLike, fmt: str) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=_PNG_DPI)


def _close(fig: Figure) -> None:
    # Figures made here have no pyplot manager; one made with pyplot must leave its registry.
    if getattr(fig.canvas, "manager", None) is not None:
        import matplotlib.pyplot as plt

        plt.close(fig)
    else:
        fig.clear()
