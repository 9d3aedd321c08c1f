"""Paper-style heatmaps (Zhang, Bengio, Singer, Fig. 1) drawn from the result tables.

Figures:

* ``robustness_heatmap``: classification error after resetting each unit, one row per
  unit (the whole model, "fullmodel", first), one column for a fresh random draw
  ("ReRnd", averaged over draws) and one per checkpoint the unit was reset to; given the
  categories' thresholds, each unit's rewind point framed and the cells whose interval
  straddles the robust threshold hatched (``rewind_marks``).
* ``distance_heatmap``: how far each unit's weights moved from initialisation, laid
  out the same way.
* ``joint_heatmap``: the same heatmap for sets of units reset together (probe "joint").
* ``interpolation_curves``: error along the line from a unit's initial to its trained
  weights (probe "interpolate").
* ``criticality_grid``: per unit, the alpha x sigma grid of module criticality
  (Chatterji et al. 2020), read from the criticality table, with the refined search's
  σ*(α) curve over it (the refined table).
* ``configuration_heatmap``: the robustness heatmap averaged over a configuration's seeds.
* ``sweep_categories``: the fraction of robust and of critical units against each axis of a sweep
  (paper F5-F7), with 95% intervals across seeds; ``sweep_heatmaps``: one small seed-mean
  heatmap per configuration of the sweep, laid out by its axes.

The data helpers (``heatmap_matrix``, ``joint_matrix``, ``interpolation_matrix``,
``criticality_panels``, ``refined_curves``, ``network_criticality``) do all of the data work (selection,
averaging, ordering) so it can be tested without looking at pixels; the drawing
functions only lay their results out. Figures are plain ``matplotlib.figure.Figure``
objects: no pyplot, no global backend.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from layerprobe.base.atomic import atomic_path
from layerprobe.base.names import FULLMODEL
from layerprobe.results import across_seeds
from layerprobe.results.categories import rewind_point

RERND = "ReRnd"
# Above this many units the paper puts checkpoints on the rows instead (large nets).
MAX_UNITS_AS_ROWS = 12

ERROR_CMAP = "viridis"
DISTANCE_CMAP = "Blues"

# Row kinds: robustness rows say it in "probe", distance rows in "source". A heatmap row
# is at a checkpoint when its "draw" cell is empty and a re-randomization when it is set,
# so one probe kind ("joint") can supply both.
HEATMAP_KINDS = ("reinit", "checkpoint", "rerandomize")
JOINT = "joint"
INTERPOLATE = "interpolate"

_FONT_SIZE = 8
_PNG_DPI = 150


# ---------------------------------------------------------------------------
# Data: table -> matrix
# ---------------------------------------------------------------------------


def heatmap_matrix(
    table: pd.DataFrame,
    run: str,
    value: str,
    split: str | None = None,
    kinds: Sequence[str] = HEATMAP_KINDS,
) -> pd.DataFrame:
    """The (rows x columns) matrix behind the heatmaps, before any transposition.

    Index: "fullmodel" first when the table has it, then the units in order of first
    appearance (the tables are written in model order). Columns: ["ReRnd", tau_0,
    tau_1, ...] with the checkpoint epochs as ints in increasing order. "ReRnd" is
    the mean of ``value`` over the draws; a checkpoint cell is the single row that
    reset the unit to that checkpoint. Missing cells are NaN.

    Only rows whose probe (or source) is one of ``kinds`` are used; the default is the
    single-unit reinit/rerandomize rows (and the distance table's sources), so rows of
    other probes (interpolate, joint, criticality, ...) are ignored. ``split`` selects
    the robustness split; leave it None for the distances table (no split column).
    """
    rows = _select_run(table, run)
    if split is not None:
        rows = _select_split(rows, run, split)
    _require_column(rows, value)
    _require_column(rows, "draw")

    plotted = _select_kinds(rows, run, kinds, split)
    redrawn_mask = plotted["draw"].notna()
    at_checkpoint = plotted[~redrawn_mask]
    redrawn = plotted[redrawn_mask]
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


def joint_matrix(table: pd.DataFrame, run: str, split: str, value: str = "error") -> pd.DataFrame:
    """``heatmap_matrix`` of the "joint" probe: one row per set of units, by its label.

    The whole model is not a set of the probe, so a "fullmodel" row is never shown.
    """
    matrix = heatmap_matrix(table, run, value, split=split, kinds=(JOINT,))
    matrix = matrix.drop(index=FULLMODEL, errors="ignore")
    matrix.index.name = "units"
    return matrix


def interpolation_matrix(
    table: pd.DataFrame, run: str, split: str, value: str = "error"
) -> pd.DataFrame:
    """``value`` of the "interpolate" probe as an (alpha x unit) matrix.

    Index: the alphas as floats in increasing order (0 = the unit at its initial value,
    1 = the trained model). Columns: "fullmodel" first when present, then the units in
    order of first appearance. Missing cells are NaN.
    """
    rows = _select_split(_select_run(table, run), run, split)
    rows = _select_kinds(rows, run, (INTERPOLATE,), split)
    _require_column(rows, value)
    _require_column(rows, "alpha")
    alpha = pd.to_numeric(rows["alpha"], errors="coerce")
    if alpha.isna().any():
        raise ValueError(f"run {run!r}: some interpolate rows have an empty 'alpha' cell")
    _require_unique(rows, ["unit", "alpha"], run)

    cells = pd.DataFrame(
        {
            "alpha": alpha.to_numpy(dtype=float),
            "unit": rows["unit"].astype(str).to_numpy(),
            "value": _numeric(rows, value).to_numpy(dtype=float),
        }
    )
    matrix = cells.pivot(index="alpha", columns="unit", values="value").sort_index()
    matrix = matrix.reindex(columns=_row_order(rows["unit"])).astype(float)
    matrix.index.name = "alpha"
    matrix.columns.name = "unit"
    return matrix


@dataclass(frozen=True)
class CriticalityPanel:
    """One unit's criticality search: the grid and the point it chose."""

    unit: str
    mean_error: pd.DataFrame  # sigma (rows, increasing) x alpha (columns, increasing); NaN = not evaluated
    feasible: pd.DataFrame  # same shape, bool; False where the grid point is missing
    chosen: tuple[float, float] | None  # (alpha, sigma) of the chosen point; None when none is feasible
    criticality: float  # mu: the chosen point's score; inf when no point is feasible


_CRITICALITY_COLUMNS = ("unit", "alpha", "sigma", "mean_error", "feasible", "score", "chosen")


def criticality_panels(table: pd.DataFrame, run: str) -> list[CriticalityPanel]:
    """The criticality table of one run as one panel per unit, in order of first appearance.

    Every panel has the same axes: all alphas and sigmas the run has, so panels line up.
    """
    rows = _select_run(table, run)
    for column in _CRITICALITY_COLUMNS:
        _require_column(rows, column)
    # The whole model is not a unit: a row for it would be counted in the network's sum.
    rows = rows[rows["unit"].astype(str) != FULLMODEL]
    if rows.empty:
        raise ValueError(f"run {run!r} has no unit rows in the criticality table")
    alpha = pd.to_numeric(rows["alpha"], errors="coerce")
    sigma = pd.to_numeric(rows["sigma"], errors="coerce")
    if alpha.isna().any() or sigma.isna().any():
        raise ValueError(f"run {run!r}: some criticality rows have an empty 'alpha' or 'sigma' cell")
    _require_unique(rows, ["unit", "alpha", "sigma"], run)

    cells = pd.DataFrame(
        {
            "unit": rows["unit"].astype(str).to_numpy(),
            "alpha": alpha.to_numpy(dtype=float),
            "sigma": sigma.to_numpy(dtype=float),
            "mean_error": _numeric(rows, "mean_error").to_numpy(dtype=float),
            "feasible": _as_bool(rows["feasible"], "feasible").to_numpy(),
            "chosen": _as_bool(rows["chosen"], "chosen").to_numpy(),
            "score": _numeric(rows, "score").to_numpy(dtype=float),
        }
    )
    alphas, sigmas = sorted(cells["alpha"].unique()), sorted(cells["sigma"].unique())
    panels = []
    for unit in pd.unique(cells["unit"]):
        own = cells[cells["unit"] == unit]
        grid = dict(index="sigma", columns="alpha")
        mean_error = own.pivot(**grid, values="mean_error").reindex(index=sigmas, columns=alphas)
        feasible = own.pivot(**grid, values="feasible").reindex(
            index=sigmas, columns=alphas, fill_value=False)
        chosen = own[own["chosen"]]
        if len(chosen) > 1:
            raise ValueError(
                f"run {run!r}, unit {unit!r}: {len(chosen)} grid points are chosen, expected at most one")
        if chosen.empty:
            if own["feasible"].any():
                raise ValueError(f"run {run!r}, unit {unit!r}: feasible grid points but none is chosen")
            point, mu = None, math.inf
        else:
            point = (float(chosen["alpha"].iloc[0]), float(chosen["sigma"].iloc[0]))
            mu = float(chosen["score"].iloc[0])
            if np.isnan(mu):
                raise ValueError(f"run {run!r}, unit {unit!r}: the chosen grid point has no score")
        panels.append(CriticalityPanel(str(unit), mean_error.astype(float), feasible.astype(bool), point, mu))
    return panels


@dataclass(frozen=True)
class RefinedCurve:
    """One unit's refined search: σ*(α), the largest feasible σ per α, and the minimum it gives."""

    unit: str
    sigma: pd.Series  # σ*(α) indexed by α (increasing); NaN where no σ is feasible
    chosen: tuple[float, float] | None  # (α, σ*) of the minimal score; None when no α is feasible
    criticality: float  # μ refined; inf when no α is feasible


def refined_curves(table: pd.DataFrame, run: str) -> dict[str, RefinedCurve]:
    """The refined criticality table (criticality_refined.csv) of one run, by unit."""
    rows = _select_run(table, run)
    for column in ("unit", "alpha", "sigma", "feasible", "score", "chosen"):
        _require_column(rows, column)
    _require_unique(rows, ["unit", "alpha"], run)
    out = {}
    for unit, own in rows.groupby(rows["unit"].astype(str), sort=False):
        own = own.assign(alpha=_numeric(own, "alpha"), sigma=_numeric(own, "sigma")).sort_values("alpha")
        chosen = own[_as_bool(own["chosen"], "chosen").to_numpy()]
        if len(chosen) > 1:
            raise ValueError(f"run {run!r}, unit {unit!r}: {len(chosen)} refined points are chosen, expected one")
        point = None if chosen.empty else (float(chosen["alpha"].iloc[0]), float(chosen["sigma"].iloc[0]))
        mu = math.inf if chosen.empty else float(_numeric(chosen, "score").iloc[0])
        out[unit] = RefinedCurve(unit, own.set_index("alpha")["sigma"].astype(float), point, mu)
    return out


def sigma_position(sigma: np.ndarray, grid: Sequence[float]) -> np.ndarray:
    """Where σ values lie on a panel's σ axis (grid point k at k), linear in log σ between grid points and
    beyond them by the nearest step (a single-point grid: one decade per step)."""
    logs = np.log(np.asarray(grid, dtype=float))
    values = np.log(np.asarray(sigma, dtype=float))
    if len(logs) == 1:
        return (values - logs[0]) / math.log(10.0)
    position = np.interp(values, logs, np.arange(len(logs), dtype=float))
    below, above = values < logs[0], values > logs[-1]
    position[below] = (values[below] - logs[0]) / (logs[1] - logs[0])
    position[above] = len(logs) - 1 + (values[above] - logs[-1]) / (logs[-1] - logs[-2])
    return position


def network_criticality(panels: Sequence[CriticalityPanel]) -> float:
    """Sum of the units' criticalities; inf as soon as one unit has no feasible point."""
    return math.fsum(p.criticality for p in panels)


_TRUE = {"true", "1", "1.0"}
_FALSE = {"false", "0", "0.0", ""}


def _as_bool(values: pd.Series, column: str) -> pd.Series:
    """Booleans however the CSV gave them back (bool, "True"/"False", 1.0/0.0); empty = False."""
    # Empty cells first: astype(str) keeps NaN as NaN in pandas >= 3 but writes "nan" before.
    text = values.astype(object).where(values.notna(), "").astype(str).str.strip().str.lower()
    unknown = set(text) - _TRUE - _FALSE
    if unknown:
        raise ValueError(f"column {column!r} holds values that are not booleans: {sorted(unknown)}")
    return text.isin(_TRUE)


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


def _select_kinds(
    rows: pd.DataFrame, run: str, kinds: Sequence[str], split: str | None = None
) -> pd.DataFrame:
    kind = _row_kind(rows)
    selected = rows[kind.isin(list(kinds))]
    if selected.empty:
        raise ValueError(
            f"run {run!r} has no {' or '.join(repr(k) for k in kinds)} rows"
            + (f" for split {split!r}" if split is not None else "")
            + f"; {kind.name}s present: {sorted(set(kind))}"
        )
    return selected


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


@dataclass(frozen=True)
class RewindMarks:
    """Where the robustness heatmap marks doubt and rewind points (cells as (unit, checkpoint))."""

    rewind: dict[str, int]  # unit -> its rewind point (units without one are absent)
    straddling: list[tuple[str, int]]  # cells whose increase interval straddles the robust threshold


def rewind_marks(table: pd.DataFrame, run: str, split: str, robust_max_increase: float) -> RewindMarks:
    """Each unit's rewind point on `split` (the earliest checkpoint before the final one whose
    increase interval lies within `robust_max_increase`, as units.csv's `rewind_checkpoint` on the
    test split) and the checkpoint cells whose interval straddles that threshold."""
    low = heatmap_matrix(table, run, "increase_low", split=split, kinds=("reinit",)).drop(columns=RERND)
    high = heatmap_matrix(table, run, "increase_high", split=split, kinds=("reinit",)).drop(columns=RERND)
    units = [u for u in high.index if u != FULLMODEL]
    earlier = [c for c in high.columns if c < max(high.columns)] if len(high.columns) else []
    rewind = {u: rewind_point(((c, high.at[u, c]) for c in earlier), robust_max_increase) for u in units}
    straddling = [
        (u, c) for u in units for c in high.columns if low.at[u, c] <= robust_max_increase < high.at[u, c]
    ]
    return RewindMarks({u: tau for u, tau in rewind.items() if tau is not None}, straddling)


def robustness_heatmap(table: pd.DataFrame, run: str, split: str, categories: dict | None = None) -> Figure:
    """Error after resetting each unit (fixed 0..1 colour range so runs compare). With `categories`
    (the config's section), each unit's rewind point is framed and the checkpoint cells whose
    increase interval straddles `robust_max_increase` are hatched (`rewind_marks`)."""
    matrix = heatmap_matrix(table, run, "error", split=split)
    fig = _error_heatmap(matrix, run, split, "each unit")
    if categories is not None:
        marks = rewind_marks(table, run, split, categories["robust_max_increase"])
        _mark_cells(fig.axes[0], matrix, marks)
    return fig


def _mark_cells(ax, matrix: pd.DataFrame, marks: RewindMarks) -> None:
    """A frame around each rewind point, hatching over each straddling cell (in the drawn layout)."""
    transposed = should_transpose(matrix)
    rows, columns = list(matrix.index), list(matrix.columns)

    def corner(unit: str, tau: int) -> tuple[float, float]:
        i, j = rows.index(unit), columns.index(tau)
        x, y = (i, j) if transposed else (j, i)
        return x - 0.5, y - 0.5

    for unit, tau in marks.straddling:
        ax.add_patch(Rectangle(corner(unit, tau), 1, 1, fill=False, hatch="///", edgecolor="0.6", linewidth=0))
    for unit, tau in marks.rewind.items():  # inset a little, so frames of neighbouring cells stay apart
        x, y = corner(unit, tau)
        ax.add_patch(Rectangle((x + 0.05, y + 0.05), 0.9, 0.9, fill=False, edgecolor="red", linewidth=2))


def joint_heatmap(table: pd.DataFrame, run: str, split: str) -> Figure:
    """Error after resetting each set of units together; read like the robustness heatmap."""
    return _error_heatmap(joint_matrix(table, run, split), run, split, "each set of units", unit_label="Set of units")


def _error_heatmap(matrix: pd.DataFrame, run: str, split: str, reset: str, **labels) -> Figure:
    return _heatmap(matrix, cmap=colormaps[ERROR_CMAP], norm=Normalize(0.0, 1.0),
                    title=f"{run}: {split} error after resetting {reset}", colorbar_label=f"{split} error", **labels)


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
    matrix: pd.DataFrame,
    cmap: Colormap,
    norm: Normalize,
    title: str,
    colorbar_label: str,
    unit_label: str = "Unit",
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
        ax.set_xlabel(unit_label)
        ax.set_ylabel("Checkpoint index")
        ax.tick_params(axis="x", labelrotation=90)
    else:
        ax.set_xlabel("Checkpoint index")
        ax.set_ylabel(unit_label)
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


def interpolation_curves(table: pd.DataFrame, run: str, split: str) -> Figure:
    """Error along alpha from each unit's initial (0) to its trained (1) weights, one line per unit."""
    matrix = interpolation_matrix(table, run, split)
    units = [u for u in matrix.columns if u != FULLMODEL]
    colours = dict(zip(units, _line_colours(len(units))))

    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.add_subplot()
    for unit in matrix.columns:
        # The whole model is the reference, not a unit: set it apart.
        style = dict(color="black", linestyle="--") if unit == FULLMODEL else dict(color=colours[unit])
        ax.plot(matrix.index, matrix[unit], marker="o", markersize=2.5, linewidth=1.2, label=unit, **style)
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.0)  # fixed, like the heatmaps' colour range, so runs compare
    ax.set_xlabel("α  (0 = unit at its initialisation, 1 = trained)")
    ax.set_ylabel(f"{split} error")
    ax.set_title(f"{run}: {split} error along the interpolation of each unit", fontsize=_FONT_SIZE + 2)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=_FONT_SIZE, loc="center left", bbox_to_anchor=(1.01, 0.5),
              ncols=1 + (len(matrix.columns) - 1) // 20, frameon=False)
    return fig


def _line_colours(n: int) -> list:
    # Distinct colours for a few units; beyond ten, a gradient in model order stays readable.
    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    return [colormaps["viridis"](x) for x in np.linspace(0.0, 0.9, n)]


_PANEL_COLUMNS = 4


def criticality_grid(table: pd.DataFrame, run: str, refined: pd.DataFrame | None = None) -> Figure:
    """One panel per unit: mean error over the alpha x sigma grid, infeasible points
    crossed out, the grid's chosen point outlined, the unit's criticality in the title;
    with the refined table, the searched σ*(α) drawn over the grid and its μ in the title."""
    panels = criticality_panels(table, run)
    curves = refined_curves(refined, run) if refined is not None else {}
    n_cols = min(len(panels), _PANEL_COLUMNS)
    n_rows = math.ceil(len(panels) / n_cols)
    fig = Figure(figsize=(2.9 * n_cols + 1.0, 2.3 * n_rows + 1.0), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    cmap = colormaps[ERROR_CMAP].with_extremes(bad="lightgrey")  # not evaluated: grey
    norm = Normalize(0.0, 1.0)
    for ax, panel in zip(axes.flat, panels):
        image = _criticality_panel(ax, panel, cmap, norm, curves.get(panel.unit))
    for ax in axes.flat[len(panels):]:
        ax.remove()  # an empty slot in the last row

    grid_total = _format_criticality(network_criticality(panels), "a unit has no feasible point")
    if curves:
        total = _format_criticality(math.fsum(c.criticality for c in curves.values()), "a unit has no feasible α")
        title = f"{run}: network criticality = {total} (grid: {grid_total})"
    else:
        title = f"{run}: network criticality = {grid_total}"
    condition = _criticality_condition(_select_run(table, run))
    fig.suptitle(title + (f"\n{condition}" if condition else ""), fontsize=_FONT_SIZE + 2)
    fig.supxlabel("α  (0 = unit at its initialisation, 1 = trained)", fontsize=_FONT_SIZE + 1)
    fig.supylabel("σ  (noise standard deviation)", fontsize=_FONT_SIZE + 1)
    fig.colorbar(image, ax=list(axes.flat[: len(panels)]), label="mean error under noise",
                 fraction=0.05, pad=0.02)
    return fig


def _criticality_panel(ax, panel: CriticalityPanel, cmap: Colormap, norm: Normalize,
                       curve: RefinedCurve | None = None):
    values = panel.mean_error.to_numpy(dtype=float)
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, norm=norm, aspect="auto",
                      origin="lower", interpolation="nearest")
    infeasible = ~panel.feasible.to_numpy(dtype=bool) & np.isfinite(values)
    for i, j in zip(*np.nonzero(infeasible)):
        ax.text(j, i, "×", ha="center", va="center", fontsize=_FONT_SIZE - 1,
                color=_text_colour(cmap(norm(values[i, j]))))
    if panel.chosen is not None:
        alpha, sigma = panel.chosen
        j, i = panel.mean_error.columns.get_loc(alpha), panel.mean_error.index.get_loc(sigma)
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.5))

    alphas, sigmas = panel.mean_error.columns, panel.mean_error.index
    title = f"{panel.unit}  μ = {_format_criticality(panel.criticality, 'no feasible point')}"
    if curve is not None:
        _refined_curve(ax, curve, list(alphas), list(sigmas))
        title = (f"{panel.unit}  μ = {_format_criticality(curve.criticality, 'no feasible α')}\n"
                 f"(grid: {_format_criticality(panel.criticality, 'no feasible point')})")
    x_ticks, y_ticks = _sparse_ticks(len(alphas)), _sparse_ticks(len(sigmas))
    ax.set_xticks(x_ticks, [f"{alphas[k]:g}" for k in x_ticks], fontsize=_FONT_SIZE - 1)
    ax.set_yticks(y_ticks, [f"{sigmas[k]:.2g}" for k in y_ticks], fontsize=_FONT_SIZE - 1)
    ax.tick_params(length=2)
    ax.set_title(title, fontsize=_FONT_SIZE)
    return image


def _refined_curve(ax, curve: RefinedCurve, alphas: list[float], sigmas: list[float]) -> None:
    """σ*(α) over the grid: white dots joined where feasible (clipped to the panel's edge, as a triangle,
    where it lies beyond the grid's σ), the refined minimum as a red star."""
    bottom, top = -0.5, len(sigmas) - 0.5
    feasible = curve.sigma.dropna()
    x = np.array([alphas.index(a) for a in feasible.index], dtype=float)
    y = sigma_position(feasible.to_numpy(), sigmas)
    ax.plot(x, np.clip(y, bottom, top), color="white", linewidth=1.0, marker="o", markersize=2.5)
    for marker, outside in (("v", y < bottom), ("^", y > top)):
        ax.plot(x[outside], np.full(outside.sum(), bottom if marker == "v" else top), linestyle="none",
                marker=marker, color="white", markersize=4)
    if curve.chosen is not None:
        alpha, sigma = curve.chosen
        ax.plot([alphas.index(alpha)], np.clip(sigma_position(np.array([sigma]), sigmas), bottom, top),
                marker="*", color="red", markersize=8, markeredgecolor="white", markeredgewidth=0.5)
    ax.set_ylim(bottom, top)


def _format_criticality(value: float, why_infinite: str) -> str:
    return f"{value:.2e}" if math.isfinite(value) else f"∞ ({why_infinite})"


def _sparse_ticks(n: int, most: int = 6) -> list[int]:
    """At most `most` evenly spread positions, first and last included: 21 alphas do not fit."""
    return sorted({int(round(k)) for k in np.linspace(0, n - 1, min(n, most))})


def _criticality_condition(rows: pd.DataFrame) -> str:
    """The feasibility condition, when the run has a single one (e.g. "mean train loss <= 0.12")."""
    def single(column):
        values = rows[column].dropna().unique() if column in rows.columns else []
        return values[0] if len(values) == 1 else None

    measure, threshold, split = single("measure"), single("threshold"), single("split")
    if measure is None or threshold is None:
        return ""
    split = f"{split} " if split is not None else ""
    return f"feasible: mean {split}{measure} over noise samples ≤ {float(threshold):.3g}"


# ---------------------------------------------------------------------------
# Across seeds: configurations and sweeps
# ---------------------------------------------------------------------------
# A configuration is {"name", "runs"}; a sweep {"name", "axes", "points": [{"configuration", "runs",
# "values": {axis: value}}]} (layerprobe.config.configurations, layerprobe.config.sweeps).

SWEEP_CATEGORIES = ("robust", "critical")


def configuration_matrix(table: pd.DataFrame, runs: Sequence[str], split: str) -> pd.DataFrame:
    """The robustness heatmap's matrix averaged over the runs (seeds) of a configuration."""
    return across_seeds.mean_heatmap([heatmap_matrix(table, run, "error", split=split) for run in runs])


def configuration_heatmap(table: pd.DataFrame, configuration: dict, split: str) -> Figure:
    """The robustness heatmap of a configuration: each cell the mean over its seeds."""
    runs = configuration["runs"]
    return _heatmap(configuration_matrix(table, runs, split), cmap=colormaps[ERROR_CMAP], norm=Normalize(0.0, 1.0),
                    title=f"{configuration['name']}: {split} error after resetting each unit, mean over {_seeds(runs)}",
                    colorbar_label=f"mean {split} error")


def _seeds(runs: Sequence[str]) -> str:
    return f"{len(runs)} seed" + ("s" if len(runs) != 1 else "")


def sweep_fractions(units: pd.DataFrame, sweep: dict) -> pd.DataFrame:
    """One row per point of the sweep: its axis values, then across_seeds.category_fractions of the
    robust and critical units."""
    points = sweep["points"]
    fractions = across_seeds.category_fractions(units, {p["configuration"]: p["runs"] for p in points},
                                                SWEEP_CATEGORIES)
    axes = pd.DataFrame([p["values"] for p in points], columns=sweep["axes"])
    return pd.concat([axes, fractions], axis=1)


def sweep_categories(units: pd.DataFrame, sweep: dict) -> Figure:
    """The fraction of robust (top) and critical (bottom) units against each axis (columns), one line
    per value of the other axes; bars are 95% intervals across seeds (none where a point has one seed)."""
    data = sweep_fractions(units, sweep)
    axes = sweep["axes"]
    fig = Figure(figsize=(max(3.8 * len(axes) + 1.6, 6.0), 5.6), layout="constrained")
    panels = fig.subplots(len(SWEEP_CATEGORIES), len(axes), squeeze=False)
    for col, axis in enumerate(axes):
        others = [a for a in axes if a != axis]
        ticks = sorted(data[axis].unique())
        lines = list(data.groupby(others, sort=True)) if others else [((), data)]
        for k, (key, points) in enumerate(lines):
            points = points.sort_values(axis)
            # Lines side by side around each tick, so their interval bars do not hide one another.
            dodge = 0.08 * (k - (len(lines) - 1) / 2)
            x = np.array([ticks.index(v) for v in points[axis]], dtype=float) + dodge
            label = ", ".join(f"{a} = {v:g}" for a, v in zip(others, key if isinstance(key, tuple) else (key,)))
            for row, category in enumerate(SWEEP_CATEGORIES):
                ax = panels[row, col]
                mean = points[f"{category}_mean"].to_numpy(dtype=float)
                low, high = (points[f"{category}_{s}"].to_numpy(dtype=float) for s in ("low", "high"))
                (line,) = ax.plot(x, mean, marker="o", markersize=4, linewidth=1.2, label=label or None, gid="mean")
                bars = ~np.isnan(low)
                if bars.any():
                    ax.errorbar(x[bars], mean[bars], yerr=[mean[bars] - low[bars], high[bars] - mean[bars]],
                                fmt="none", ecolor=line.get_color(), capsize=3, linewidth=1)
        for row, category in enumerate(SWEEP_CATEGORIES):
            ax = panels[row, col]
            ax.set_xticks(range(len(ticks)), [f"{v:g}" for v in ticks], fontsize=_FONT_SIZE)
            ax.set_xlim(-0.4, len(ticks) - 0.6)
            ax.set_ylim(-0.03, 1.03)  # fractions: fixed, so sweeps compare
            ax.set_xlabel(axis)
            ax.set_ylabel(f"fraction of units {category}")
            ax.grid(alpha=0.3)
            if others:
                ax.legend(fontsize=_FONT_SIZE - 1, frameon=False)
    fig.suptitle(f"sweep {sweep['name']}: units robust and critical to re-initialization\n"
                 "mean over seeds; bars: 95% interval across seeds", fontsize=_FONT_SIZE + 2)
    return fig


def sweep_heatmaps(table: pd.DataFrame, sweep: dict, split: str) -> Figure:
    """One small seed-mean robustness heatmap per configuration of the sweep: rows by the first axis,
    columns by the others (one row for a sweep of one axis); a shared 0-1 colour scale."""
    axes, points = sweep["axes"], sweep["points"]
    row_axis, column_axes = (None, axes) if len(axes) == 1 else (axes[0], axes[1:])
    row_values = sorted({p["values"][row_axis] for p in points}) if row_axis else [None]
    column_values = sorted({tuple(p["values"][a] for a in column_axes) for p in points})
    fig = Figure(figsize=(2.7 * len(column_values) + 1.2, 2.6 * len(row_values) + 0.8), layout="constrained")
    grid = fig.subplots(len(row_values), len(column_values), squeeze=False)
    cmap, norm = colormaps[ERROR_CMAP].with_extremes(bad="lightgrey"), Normalize(0.0, 1.0)
    placed = {(row_values.index(p["values"][row_axis]) if row_axis else 0,
               column_values.index(tuple(p["values"][a] for a in column_axes))): p for p in points}
    image = None
    for (i, j), ax in np.ndenumerate(grid):
        if (i, j) not in placed:
            ax.remove()  # no configuration at this point of the grid
            continue
        point = placed[i, j]
        matrix = configuration_matrix(table, point["runs"], split)
        shown = matrix.T if should_transpose(matrix) else matrix
        image = ax.imshow(np.ma.masked_invalid(shown.to_numpy(dtype=float)), cmap=cmap, norm=norm, aspect="auto")
        ax.set_xticks(range(shown.shape[1]), [str(c) for c in shown.columns], fontsize=_FONT_SIZE - 3,
                      rotation=90 if shown is not matrix else 0)
        ax.set_yticks(range(shown.shape[0]), [str(r) for r in shown.index], fontsize=_FONT_SIZE - 3)
        ax.tick_params(length=0)
        _separate_special_cells(ax, shown, shown is not matrix, colour="white")
        values = ", ".join(f"{a} = {point['values'][a]:g}" for a in axes)
        ax.set_title(f"{point['configuration']} ({values}; {_seeds(point['runs'])})", fontsize=_FONT_SIZE - 1)
    fig.suptitle(f"sweep {sweep['name']}: {split} error after resetting each unit, mean over seeds",
                 fontsize=_FONT_SIZE + 2)
    if image is not None:
        fig.colorbar(image, ax=[ax for ax in grid.flat if ax in fig.axes],
                     label=f"mean {split} error", fraction=0.04, pad=0.02)
    return fig


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
