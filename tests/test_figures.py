"""Tests for layerprobe.figures: the data layout is checked on the matrix, the pictures
only for being written as valid files."""

import io

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from layerprobe.results import figures

UNITS = ["layer1", "layer2", "final_linear"]
CHECKPOINTS = [0, 1, 5, 10]
DRAWS = 2

ROBUSTNESS_COLUMNS = [
    "run",
    "dataset",
    "model",
    "seed",
    "probe",
    "unit",
    "checkpoint",
    "alpha",
    "sigma",
    "draw",
    "draw_seed",
    "bn_stats",
    "split",
    "error",
    "loss",
    "agreement",
    "n",
]
DISTANCE_COLUMNS = [
    "run",
    "dataset",
    "model",
    "seed",
    "unit",
    "source",
    "checkpoint",
    "draw",
    "draw_seed",
    "n_params",
    "l2",
    "linf",
    "l2_rel_init",
    "l2_per_sqrt_n",
    "linf_rel_init",
]


def reinit_error(unit_index: int, epoch: int, split: str) -> float:
    """A distinct value per cell: unit in the tenths, checkpoint position in the hundredths."""
    split_offset = 0.005 if split == "train" else 0.0
    return round(0.1 * (unit_index + 1) + 0.01 * CHECKPOINTS.index(epoch) + split_offset, 4)


def draw_error(unit_index: int, draw: int, split: str) -> float:
    return round(0.5 + 0.1 * draw + 0.01 * unit_index + (0.005 if split == "train" else 0), 4)


def robustness_rows(run="mlp_s0", units=UNITS, checkpoints=CHECKPOINTS):
    rows = []
    named = [figures.FULLMODEL] + list(units)  # written in model order, fullmodel first
    # Checkpoints written out of numeric order on purpose: 10 before 5.
    written_order = sorted(checkpoints, key=str)
    for split in ("test", "train"):
        for i, unit in enumerate(named):
            for epoch in written_order:
                rows.append(
                    dict(
                        run=run,
                        probe="reinit",
                        unit=unit,
                        checkpoint=epoch,
                        draw=np.nan,
                        split=split,
                        error=reinit_error(i, epoch, split),
                    )
                )
            for k in range(DRAWS):
                rows.append(
                    dict(
                        run=run,
                        probe="rerandomize",
                        unit=unit,
                        checkpoint=np.nan,
                        draw=k,
                        split=split,
                        error=draw_error(i, k, split),
                    )
                )
        # A row of another probe that must be ignored (its unit must not become a row).
        rows.append(
            dict(
                run=run,
                probe="interpolate",
                unit="layer1+layer2",
                checkpoint=1,
                alpha=0.5,
                draw=np.nan,
                split=split,
                error=0.99,
            )
        )
    return rows


def as_csv_table(rows, columns):
    """Round-trip through CSV so the dtypes are those the pipeline sees (NaN checkpoints -> float)."""
    frame = pd.DataFrame(rows).reindex(columns=columns)
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    buffer.seek(0)
    return pd.read_csv(buffer)


@pytest.fixture
def robustness():
    return as_csv_table(robustness_rows() + robustness_rows(run="other_run"), ROBUSTNESS_COLUMNS)


@pytest.fixture
def distances():
    rows = []
    for i, unit in enumerate(UNITS):
        for epoch in CHECKPOINTS:
            rows.append(
                dict(
                    run="mlp_s0",
                    unit=unit,
                    source="checkpoint",
                    checkpoint=epoch,
                    l2=float(10 * i + epoch),
                    linf=0.1 * epoch,
                    l2_rel_init=0.02 * epoch + 0.01 * i,
                )
            )
        for k in range(DRAWS):
            rows.append(
                dict(
                    run="mlp_s0",
                    unit=unit,
                    source="rerandomize",
                    draw=k,
                    l2=100.0 + 10 * i + k,
                    linf=1.0,
                    l2_rel_init=1.4,
                )
            )
    return as_csv_table(rows, DISTANCE_COLUMNS)


# --- matrix ------------------------------------------------------------------


def test_matrix_rows_are_fullmodel_then_units_in_model_order(robustness):
    matrix = figures.heatmap_matrix(robustness, "mlp_s0", "error", split="test")
    assert matrix.index.tolist() == [figures.FULLMODEL] + UNITS


def test_matrix_columns_are_rernd_then_checkpoints_sorted_numerically(robustness):
    matrix = figures.heatmap_matrix(robustness, "mlp_s0", "error", split="test")
    assert matrix.columns.tolist() == [figures.RERND, 0, 1, 5, 10]
    assert all(type(c) is int for c in matrix.columns[1:])


def test_matrix_rernd_is_the_mean_of_the_draws(robustness):
    matrix = figures.heatmap_matrix(robustness, "mlp_s0", "error", split="test")
    for i, unit in enumerate([figures.FULLMODEL] + UNITS):
        expected = np.mean([draw_error(i, k, "test") for k in range(DRAWS)])
        assert matrix.loc[unit, figures.RERND] == pytest.approx(expected)


def test_matrix_places_each_value_in_its_cell(robustness):
    for split in ("test", "train"):
        matrix = figures.heatmap_matrix(robustness, "mlp_s0", "error", split=split)
        for i, unit in enumerate([figures.FULLMODEL] + UNITS):
            for epoch in CHECKPOINTS:
                assert matrix.loc[unit, epoch] == pytest.approx(reinit_error(i, epoch, split))


def test_matrix_missing_cell_is_nan(robustness):
    gap = (robustness["unit"] == "layer2") & (robustness["checkpoint"] == 5)
    matrix = figures.heatmap_matrix(robustness[~gap], "mlp_s0", "error", split="test")
    assert np.isnan(matrix.loc["layer2", 5])
    assert not np.isnan(matrix.loc["layer1", 5])


def test_distance_matrix_has_no_fullmodel_and_averages_draws(distances):
    matrix = figures.heatmap_matrix(distances, "mlp_s0", "l2")
    assert matrix.index.tolist() == UNITS
    assert matrix.columns.tolist() == [figures.RERND, 0, 1, 5, 10]
    assert matrix.loc["layer2", figures.RERND] == pytest.approx(110.5)
    assert matrix.loc["final_linear", 5] == pytest.approx(25.0)


def test_duplicate_cells_are_refused_not_averaged(robustness):
    variant = robustness[robustness["probe"] == "reinit"].assign(bn_stats="recomputed")
    with pytest.raises(ValueError, match="bn_stats"):
        figures.heatmap_matrix(pd.concat([robustness, variant]), "mlp_s0", "error", split="test")


# --- errors ------------------------------------------------------------------


HEATMAPS = [(figures.robustness_heatmap, "robustness"), (figures.joint_heatmap, "probes")]  # (figure, its table)


@pytest.mark.parametrize("heatmap, table", HEATMAPS)
def test_unknown_run_names_asked_and_present(heatmap, table, request):
    with pytest.raises(ValueError, match=r"nope.*mlp_s0.*other_run"):
        heatmap(request.getfixturevalue(table), "nope", "test")


@pytest.mark.parametrize("heatmap, table", HEATMAPS)
def test_unknown_split_names_asked_and_present(heatmap, table, request):
    with pytest.raises(ValueError, match=r"'valid'.*\['test', 'train'\]"):
        heatmap(request.getfixturevalue(table), "mlp_s0", "valid")


def test_unknown_measure(distances):
    with pytest.raises(ValueError, match="l3"):
        figures.distance_heatmap(distances, "mlp_s0", "l3")


# --- layout ------------------------------------------------------------------


def test_twelve_units_stay_as_rows():
    table = as_csv_table(robustness_rows(units=[f"u{i}" for i in range(12)], checkpoints=[0, 1]), ROBUSTNESS_COLUMNS)
    fig = figures.robustness_heatmap(table, "mlp_s0", "test")
    ax = fig.axes[0]
    assert ax.get_ylabel() == "Unit"
    assert [t.get_text() for t in ax.get_yticklabels()][:2] == [figures.FULLMODEL, "u0"]


def test_more_than_twelve_units_are_transposed():
    units = [f"u{i}" for i in range(13)]
    table = as_csv_table(robustness_rows(units=units, checkpoints=[0, 1]), ROBUSTNESS_COLUMNS)
    matrix = figures.heatmap_matrix(table, "mlp_s0", "error", split="test")
    assert figures.should_transpose(matrix)
    fig = figures.robustness_heatmap(table, "mlp_s0", "test")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "Unit"
    assert ax.get_ylabel() == "Checkpoint index"
    assert [t.get_text() for t in ax.get_xticklabels()] == [figures.FULLMODEL] + units
    assert [t.get_text() for t in ax.get_yticklabels()] == [figures.RERND, "0", "1"]


def test_cells_carry_their_values_with_two_decimals(robustness):
    fig = figures.robustness_heatmap(robustness, "mlp_s0", "test")
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert f"{reinit_error(2, 5, 'test'):.2f}" in texts
    assert len(fig.axes[0].texts) == (1 + len(UNITS)) * (1 + len(CHECKPOINTS))


def test_title_names_run_and_split(robustness):
    fig = figures.robustness_heatmap(robustness, "mlp_s0", "train")
    title = fig.axes[0].get_title()
    assert "mlp_s0" in title and "train" in title


# --- files -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["robustness", "distances"])
def test_save_figure_writes_png_and_pdf(tmp_path, robustness, distances, kind):
    if kind == "robustness":
        fig = figures.robustness_heatmap(robustness, "mlp_s0", "test")
    else:
        fig = figures.distance_heatmap(distances, "mlp_s0", "l2_rel_init")
    assert isinstance(fig, Figure)
    png, pdf = tmp_path / "out" / "fig.png", tmp_path / "out" / "fig.pdf"
    figures.save_figure(fig, png, pdf)
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert pdf.read_bytes().startswith(b"%PDF")
    # Nothing temporary left behind.
    assert sorted(p.name for p in png.parent.iterdir()) == ["fig.pdf", "fig.png"]


# === new probe kinds: interpolate, joint, criticality ===========================

NEW_ROBUSTNESS_COLUMNS = [
    "run",
    "dataset",
    "model",
    "seed",
    "probe",
    "unit",
    "members",
    "checkpoint",
    "alpha",
    "sigma",
    "draw",
    "draw_seed",
    "bn_stats",
    "split",
    "error",
    "loss",
    "agreement",
    "n",
    # the discordant counts and intervals (empty here: these figures do not read them)
    "worse",
    "better",
    "increase",
    "error_low",
    "error_high",
    "increase_low",
    "increase_high",
]
CRITICALITY_COLUMNS = [
    "run",
    "dataset",
    "model",
    "seed",
    "unit",
    "alpha",
    "sigma",
    "split",
    "n",
    "samples",
    "mean_error",
    "mean_loss",
    "baseline_error",
    "baseline_loss",
    "measure",
    "threshold",
    "feasible",
    "distance_sq",
    "score",
    "chosen",
]
ALPHAS = [0.0, 0.25, 0.5, 0.75, 1.0]
SETS = {"robust": "layer2 final_linear", "up to layer2": "layer1 layer2", "from layer2": "layer2 final_linear"}


def interpolation_error(unit_index: int, alpha: float, split: str) -> float:
    return round(0.9 - 0.8 * alpha + 0.01 * unit_index + (0.005 if split == "train" else 0.0), 4)


def joint_error(set_index: int, epoch: int, split: str) -> float:
    return round(0.3 + 0.1 * set_index + 0.01 * CHECKPOINTS.index(epoch) + (0.005 if split == "train" else 0), 4)


def joint_draw_error(set_index: int, draw: int) -> float:
    return round(0.7 + 0.1 * draw + 0.01 * set_index, 4)


def probe_rows(run="mlp_s0"):
    """reinit/rerandomize rows (without the odd interpolate row) plus interpolate and joint rows."""
    rows = [r for r in robustness_rows(run) if r["probe"] != "interpolate"]
    for split in ("test", "train"):
        for i, unit in enumerate([figures.FULLMODEL] + UNITS):
            for alpha in reversed(ALPHAS):  # written from 1 to 0: the matrix must sort them
                rows.append(
                    dict(
                        run=run,
                        probe="interpolate",
                        unit=unit,
                        checkpoint=0,
                        alpha=alpha,
                        split=split,
                        error=interpolation_error(i, alpha, split),
                    )
                )
        for s, (label, members) in enumerate(SETS.items()):
            for epoch in sorted(CHECKPOINTS, key=str):
                rows.append(
                    dict(
                        run=run,
                        probe="joint",
                        unit=label,
                        members=members,
                        checkpoint=epoch,
                        split=split,
                        error=joint_error(s, epoch, split),
                    )
                )
            for k in range(DRAWS):
                rows.append(
                    dict(
                        run=run,
                        probe="joint",
                        unit=label,
                        members=members,
                        draw=k,
                        draw_seed=100 + k,
                        split=split,
                        error=joint_draw_error(s, k),
                    )
                )
    return rows


@pytest.fixture
def probes():
    return as_csv_table(probe_rows() + probe_rows(run="other_run"), NEW_ROBUSTNESS_COLUMNS)


# Criticality grid: alpha in {0, .5, 1}, sigma in {.01, .1, 1}, written out of order.
GRID_ALPHAS = [0.0, 0.5, 1.0]
GRID_SIGMAS = [0.01, 0.1, 1.0]
DISTANCE_SQ = {"layer1": 4.0, "layer2": 9.0, "final_linear": 16.0}


def is_feasible(unit: str, alpha: float, sigma: float) -> bool:
    if unit == "layer1":  # critical: only close to the trained weights with little noise
        return alpha >= 0.5 and sigma <= 0.1
    return unit == "layer2"  # layer2 feasible everywhere (mu = 0), final_linear nowhere (mu = inf)


def criticality_rows(run="mlp_s0"):
    rows = []
    for i, unit in enumerate(UNITS):
        grid = []
        for a in reversed(GRID_ALPHAS):
            for s in reversed(GRID_SIGMAS):
                feasible = is_feasible(unit, a, s)
                grid.append(
                    dict(
                        run=run,
                        unit=unit,
                        alpha=a,
                        sigma=s,
                        split="train",
                        n=100,
                        samples=4,
                        mean_error=round(0.05 + 0.3 * i + 0.1 * GRID_ALPHAS.index(a) + 0.01 * GRID_SIGMAS.index(s), 4),
                        measure="loss",
                        threshold=0.12,
                        feasible=feasible,
                        distance_sq=DISTANCE_SQ[unit],
                        score=a * a * DISTANCE_SQ[unit] / s**2 if feasible else np.nan,
                        chosen=False,
                    )
                )
        scores = [r["score"] for r in grid]
        if not all(np.isnan(scores)):
            grid[int(np.nanargmin(scores))]["chosen"] = True
        rows += grid
    return rows


@pytest.fixture
def criticality():
    return as_csv_table(criticality_rows() + criticality_rows(run="other_run"), CRITICALITY_COLUMNS)


# The refined search on the same units: layer1's σ*(α) lies between the grid's 0.1 and 1 for α ≥ 0.5,
# layer2 is feasible up to the search's ceiling, final_linear nowhere.
REFINED_SIGMA = {("layer1", 0.5): 0.2, ("layer1", 1.0): 0.25, **{("layer2", a): 1.0 for a in GRID_ALPHAS}}


def refined_rows(run="mlp_s0"):
    rows = []
    for unit in UNITS:
        own = []
        for a in GRID_ALPHAS:
            sigma = REFINED_SIGMA.get((unit, a), np.nan)
            score = a * a * DISTANCE_SQ[unit] / sigma**2
            own.append(
                dict(
                    run=run,
                    unit=unit,
                    alpha=a,
                    split="train",
                    n=100,
                    samples=4,
                    measure="loss",
                    threshold=0.12,
                    evaluated=6,
                    sigma=sigma,
                    feasible=not np.isnan(sigma),
                    distance_sq=DISTANCE_SQ[unit],
                    score=score,
                    chosen=False,
                )
            )
        scores = [r["score"] for r in own]
        if not all(np.isnan(scores)):
            own[int(np.nanargmin(scores))]["chosen"] = True
        rows += own
    return rows


@pytest.fixture
def refined():
    from layerprobe.kinds.criticality import REFINED_COLUMNS

    return as_csv_table(refined_rows() + refined_rows(run="other_run"), REFINED_COLUMNS)


def panel_of(panels, unit):
    return next(p for p in panels if p.unit == unit)


# --- generalized heatmap -----------------------------------------------------


def test_default_heatmap_ignores_joint_and_interpolate_rows(probes):
    matrix = figures.heatmap_matrix(probes, "mlp_s0", "error", split="test")
    assert matrix.index.tolist() == [figures.FULLMODEL] + UNITS
    assert matrix.loc["layer1", 5] == pytest.approx(reinit_error(1, 5, "test"))


def test_joint_matrix_rows_are_set_labels_columns_rernd_then_checkpoints(probes):
    for split in ("test", "train"):
        matrix = figures.joint_matrix(probes, "mlp_s0", split)
        assert matrix.index.tolist() == list(SETS)
        assert matrix.columns.tolist() == [figures.RERND, 0, 1, 5, 10]
        for s, label in enumerate(SETS):
            assert matrix.loc[label, figures.RERND] == pytest.approx(
                np.mean([joint_draw_error(s, k) for k in range(DRAWS)])
            )
            for epoch in CHECKPOINTS:
                assert matrix.loc[label, epoch] == pytest.approx(joint_error(s, epoch, split))


def test_joint_matrix_never_has_a_fullmodel_row(probes):
    extra = probes[(probes["probe"] == "reinit") & (probes["unit"] == figures.FULLMODEL)].assign(probe="joint")
    matrix = figures.joint_matrix(pd.concat([probes, extra]), "mlp_s0", "test")
    assert figures.FULLMODEL not in matrix.index


def test_heatmap_kinds_select_the_rows(probes):
    matrix = figures.heatmap_matrix(probes, "mlp_s0", "error", split="test", kinds=("joint",))
    assert matrix.index.tolist() == list(SETS)


def test_joint_heatmap_figure(probes):
    fig = figures.joint_heatmap(probes, "mlp_s0", "test")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == list(SETS)
    assert ax.get_ylabel() == "Set of units"
    assert len(ax.texts) == len(SETS) * (1 + len(CHECKPOINTS))
    assert "mlp_s0" in ax.get_title() and "test" in ax.get_title()


def test_joint_without_joint_rows_names_the_probe_and_those_present(robustness):
    with pytest.raises(ValueError, match=r"'joint'.*'test'.*probes present.*'reinit'"):
        figures.joint_heatmap(robustness, "mlp_s0", "test")


def test_joint_same_label_with_different_members_is_refused(probes):
    clash = probes[(probes["probe"] == "joint") & (probes["unit"] == "robust")].assign(members="layer1")
    with pytest.raises(ValueError, match="members"):
        figures.joint_matrix(pd.concat([probes, clash]), "mlp_s0", "test")


# --- interpolation -----------------------------------------------------------


def test_interpolation_matrix_is_alpha_by_unit(probes):
    for split in ("test", "train"):
        matrix = figures.interpolation_matrix(probes, "mlp_s0", split)
        assert matrix.index.tolist() == ALPHAS
        assert matrix.columns.tolist() == [figures.FULLMODEL] + UNITS
        for i, unit in enumerate([figures.FULLMODEL] + UNITS):
            for alpha in ALPHAS:
                assert matrix.loc[alpha, unit] == pytest.approx(interpolation_error(i, alpha, split))


def test_interpolation_missing_point_is_nan(probes):
    gap = (probes["probe"] == "interpolate") & (probes["unit"] == "layer2") & (probes["alpha"] == 0.5)
    matrix = figures.interpolation_matrix(probes[~gap], "mlp_s0", "test")
    assert np.isnan(matrix.loc[0.5, "layer2"])
    assert matrix.loc[0.5, "layer1"] == pytest.approx(interpolation_error(1, 0.5, "test"))


def test_interpolation_curves_one_line_per_unit_fullmodel_dashed_black(probes):
    fig = figures.interpolation_curves(probes, "mlp_s0", "train")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == [figures.FULLMODEL] + UNITS
    assert lines[0].get_linestyle() == "--" and lines[0].get_color() == "black"
    assert all(line.get_linestyle() == "-" for line in lines[1:])
    assert ax.get_ylim() == (0.0, 1.0)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [figures.FULLMODEL] + UNITS
    assert list(lines[1].get_xdata()) == ALPHAS


def test_interpolation_errors_name_what_is_missing(probes, robustness):
    with pytest.raises(ValueError, match=r"nope.*mlp_s0.*other_run"):
        figures.interpolation_curves(probes, "nope", "test")
    with pytest.raises(ValueError, match=r"'valid'.*\['test', 'train'\]"):
        figures.interpolation_curves(probes, "mlp_s0", "valid")
    only_reinit = probes[probes["probe"] != "interpolate"]
    with pytest.raises(ValueError, match=r"'interpolate'.*probes present.*'joint'.*'reinit'"):
        figures.interpolation_curves(only_reinit, "mlp_s0", "test")


def test_interpolation_duplicate_points_are_refused(probes):
    again = probes[probes["probe"] == "interpolate"].assign(checkpoint=5)
    with pytest.raises(ValueError, match="checkpoint"):
        figures.interpolation_matrix(pd.concat([probes, again]), "mlp_s0", "test")


# --- criticality -------------------------------------------------------------


def test_criticality_panels_grids_and_scores(criticality):
    panels = figures.criticality_panels(criticality, "mlp_s0")
    assert [p.unit for p in panels] == UNITS
    for i, panel in enumerate(panels):
        assert panel.mean_error.index.tolist() == GRID_SIGMAS
        assert panel.mean_error.columns.tolist() == GRID_ALPHAS
        assert panel.mean_error.loc[0.1, 0.5] == pytest.approx(0.05 + 0.3 * i + 0.1 + 0.01)
        for a in GRID_ALPHAS:
            for s in GRID_SIGMAS:
                assert panel.feasible.loc[s, a] == is_feasible(panel.unit, a, s)
    layer1, layer2, last = panels
    # layer1: min of a^2 * 4 / s^2 over a >= .5, s <= .1 is at a = .5, s = .1: .25 * 4 / .01
    assert layer1.chosen == (0.5, 0.1) and layer1.criticality == pytest.approx(100.0)
    assert layer2.chosen[0] == 0.0 and layer2.criticality == 0.0
    assert last.chosen is None and last.criticality == np.inf


def test_network_criticality_is_the_sum_inf_when_a_unit_is_infeasible(criticality):
    panels = figures.criticality_panels(criticality, "mlp_s0")
    assert figures.network_criticality(panels) == np.inf
    feasible_units = criticality[criticality["unit"] != "final_linear"]
    assert figures.network_criticality(figures.criticality_panels(feasible_units, "mlp_s0")) == pytest.approx(100.0)


def test_criticality_grid_panels_crosses_and_outline(criticality):
    fig = figures.criticality_grid(criticality, "mlp_s0")
    assert isinstance(fig, Figure)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert len(panels) == len(UNITS)
    assert len(fig.axes) == len(UNITS) + 1  # plus the colour bar; no empty slots left
    titles = [ax.get_title() for ax in panels]
    assert titles[0] == "layer1  μ = 1.00e+02"
    assert titles[1] == "layer2  μ = 0.00e+00"
    assert titles[2] == "final_linear  μ = ∞ (no feasible point)"
    for ax, unit in zip(panels, UNITS):
        crosses = [t for t in ax.texts if t.get_text() == "×"]
        n_infeasible = sum(not is_feasible(unit, a, s) for a in GRID_ALPHAS for s in GRID_SIGMAS)
        assert len(crosses) == n_infeasible
        assert len(ax.patches) == (0 if unit == "final_linear" else 1)
    # layer1's outline sits on the chosen cell: alpha .5 is column 1, sigma .1 row 1.
    assert panels[0].patches[0].get_xy() == (0.5, 0.5)
    suptitle = fig._suptitle.get_text()
    assert "mlp_s0" in suptitle and "network criticality = ∞" in suptitle and "loss" in suptitle


def test_criticality_finite_network_value_in_title(criticality):
    fig = figures.criticality_grid(criticality[criticality["unit"] != "final_linear"], "mlp_s0")
    assert "network criticality = 1.00e+02" in fig._suptitle.get_text()


def test_refined_curves_give_sigma_star_and_the_refined_minimum(refined):
    curves = figures.refined_curves(refined, "mlp_s0")
    assert list(curves) == ["layer1", "layer2", "final_linear"]
    layer1 = curves["layer1"]
    assert layer1.sigma.index.tolist() == GRID_ALPHAS and np.isnan(layer1.sigma[0.0]) and layer1.sigma[0.5] == 0.2
    assert layer1.chosen == (0.5, 0.2) and layer1.criticality == pytest.approx(0.25 * 4 / 0.04)
    assert curves["layer2"].criticality == 0.0 and curves["final_linear"].chosen is None
    assert curves["final_linear"].criticality == np.inf


def test_sigma_positions_are_log_linear_between_and_beyond_grid_points():
    grid = [0.01, 0.1, 1.0]
    assert figures.sigma_position(np.array([0.01, 0.1, 1.0]), grid) == pytest.approx([0, 1, 2])
    assert figures.sigma_position(np.array([10**-1.5, 0.001, 10.0]), grid) == pytest.approx([0.5, -1, 3])
    assert figures.sigma_position(np.array([0.2, 2.0]), [0.2]) == pytest.approx([0, 1])  # one point: a decade a step


def test_criticality_grid_draws_the_refined_curve_and_both_minima(criticality, refined):
    fig = figures.criticality_grid(criticality, "mlp_s0", refined)
    layer1 = fig.axes[0]
    assert "μ = 2.50e+01" in layer1.get_title() and "grid: 1.00e+02" in layer1.get_title()
    curve = layer1.lines[0]
    assert curve.get_xdata().tolist() == [1.0, 2.0]  # α = 0.5, 1 (α = 0 has no feasible σ)
    assert curve.get_ydata() == pytest.approx(figures.sigma_position(np.array([0.2, 0.25]), GRID_SIGMAS))
    stars = [line for line in layer1.lines if line.get_marker() == "*"]
    assert len(stars) == 1 and stars[0].get_xdata().tolist() == [1]
    ups = [line for line in fig.axes[1].lines if line.get_marker() == "^"]
    assert sum(len(line.get_xdata()) for line in ups) == 0  # layer2's σ* = 1 is the grid's top, not beyond it
    assert "network criticality = ∞" in fig._suptitle.get_text() and "(grid: ∞" in fig._suptitle.get_text()


def test_criticality_many_units_wrap_into_rows(criticality):
    renamed = pd.concat([criticality.assign(unit=criticality["unit"] + f"_{k}") for k in range(2)])
    fig = figures.criticality_grid(renamed, "mlp_s0")
    assert len([ax for ax in fig.axes if ax.get_title()]) == 2 * len(UNITS)


def test_criticality_unknown_run_and_inconsistent_choices(criticality):
    with pytest.raises(ValueError, match=r"nope.*mlp_s0.*other_run"):
        figures.criticality_grid(criticality, "nope")
    two = criticality.copy()
    two.loc[(two["unit"] == "layer1") & two["feasible"].astype(bool), "chosen"] = True
    with pytest.raises(ValueError, match="layer1.*chosen"):
        figures.criticality_panels(two, "mlp_s0")
    none = criticality.assign(chosen=False)
    with pytest.raises(ValueError, match="layer1.*none is chosen"):
        figures.criticality_panels(none, "mlp_s0")


def test_criticality_reads_booleans_written_as_text_or_empty(tmp_path, criticality):
    text = criticality.assign(
        feasible=criticality["feasible"].map({True: "True", False: "False"}),
        chosen=criticality["chosen"].map({True: "True", False: ""}),
    )
    path = tmp_path / "criticality.csv"
    text.to_csv(path, index=False)
    back = pd.read_csv(path, keep_default_na=False, na_values=[""])
    assert back["chosen"].isna().any()  # empty cells really came back empty
    panels = figures.criticality_panels(back, "mlp_s0")
    assert [p.criticality for p in panels] == [pytest.approx(100.0), 0.0, np.inf]


def test_criticality_refuses_non_boolean_flags(criticality):
    with pytest.raises(ValueError, match="feasible.*maybe"):
        figures.criticality_panels(criticality.assign(feasible="maybe"), "mlp_s0")


# --- CSV round trip through the pipeline's reader, and files -------------------


def test_figures_from_tables_read_csv(tmp_path, probes):
    from layerprobe.results import tables

    path = tmp_path / "robustness.csv"
    probes.to_csv(path, index=False)
    table = tables.read_csv(path, tables.ROBUSTNESS)  # nullable Int64 checkpoints and draws
    assert figures.joint_matrix(table, "mlp_s0", "test").equals(figures.joint_matrix(probes, "mlp_s0", "test"))
    assert figures.interpolation_matrix(table, "mlp_s0", "test").equals(
        figures.interpolation_matrix(probes, "mlp_s0", "test")
    )


@pytest.mark.parametrize("kind", ["interpolation", "criticality", "joint"])
def test_save_new_figures_writes_png_and_pdf(tmp_path, probes, criticality, kind):
    fig = {
        "interpolation": lambda: figures.interpolation_curves(probes, "mlp_s0", "test"),
        "criticality": lambda: figures.criticality_grid(criticality, "mlp_s0"),
        "joint": lambda: figures.joint_heatmap(probes, "mlp_s0", "test"),
    }[kind]()
    png, pdf = tmp_path / "out" / "fig.png", tmp_path / "out" / "fig.pdf"
    figures.save_figure(fig, png, pdf)
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert pdf.read_bytes().startswith(b"%PDF")
    assert sorted(p.name for p in png.parent.iterdir()) == ["fig.pdf", "fig.png"]


@pytest.mark.parametrize(
    "figure, table_name",
    [
        ("interpolation", "robustness"),
        ("joint", "robustness"),
        ("criticality", "criticality"),
    ],
)
def test_pyscripts_write_the_rule_outputs(tmp_path, monkeypatch, probes, criticality, refined, figure, table_name):
    """The rules' glue, run with a stand-in for Snakemake's `snakemake` object."""
    import runpy
    import sys
    from types import SimpleNamespace

    from layerprobe.aggregate import columns_of

    class Wildcards(dict):
        __getattr__ = dict.__getitem__

    ours = criticality if table_name == "criticality" else probes
    path = tmp_path / "table.csv"
    ours.reindex(columns=list(dict.fromkeys([*ours.columns, *columns_of(table_name)]))).to_csv(path, index=False)
    paths = [str(path)]
    if figure == "criticality":  # the figure reads the refined table too
        paths.append(str(tmp_path / "refined.csv"))
        refined.reindex(columns=columns_of("criticality_refined")).to_csv(paths[-1], index=False)
    stand_in = SimpleNamespace(
        input=paths,
        log=[str(tmp_path / "job.log")],
        params=SimpleNamespace(figure=figure, subject="mlp_s0", categories=None),
        output=SimpleNamespace(png=str(tmp_path / "fig.png"), pdf=str(tmp_path / "fig.pdf")),
        wildcards=Wildcards(run="mlp_s0", **({} if figure == "criticality" else {"split": "test"})),
    )
    # The script sends stdout/stderr to its log; give them back afterwards.
    monkeypatch.setattr(sys, "stdout", sys.stdout)
    monkeypatch.setattr(sys, "stderr", sys.stderr)
    try:
        runpy.run_path(str(figures_repo() / "pyscripts" / "figure.py"), init_globals={"snakemake": stand_in})
    finally:
        if sys.stdout is not sys.__stdout__ and getattr(sys.stdout, "name", "") == stand_in.log[0]:
            sys.stdout.close()
    assert (tmp_path / "fig.png").read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "fig.pdf").read_bytes().startswith(b"%PDF")


def figures_repo():
    from pathlib import Path

    return Path(__file__).resolve().parents[1]


# --- rewind points and cells in doubt -------------------------------------------


def doubt_table(transposed=False):
    """Reinit rows with their intervals (n = 1000, final error 0.1), checkpoints 0, 1, 3, 10: unit a
    rewinds to 3 (its τ = 1 interval, +0.015, reaches above 0.02: the one cell that straddles it),
    b to 0 (+0.003, narrow), c never (+0.5). With `transposed`, 12 unchanged units more."""
    from layerprobe.results import tables
    from layerprobe.results.intervals import with_intervals

    plan = {"a": [(300, 0), (20, 5), (5, 0)], "b": [(3, 0), (0, 0), (0, 0)], "c": [(500, 0)] * 3}
    if transposed:
        plan.update({f"u{i}": [(0, 0)] * 3 for i in range(12)})
    rows = []
    for unit, counts in {"fullmodel": [(0, 0)] * 3, **plan}.items():
        for tau, (worse, better) in zip((0, 1, 3, 10), [*counts, (0, 0)]):
            row = {"probe": "reinit", "unit": unit, "checkpoint": tau, "split": "test", "n": 1000}
            measured = {"error": (100 + worse - better) / 1000, "worse": worse, "better": better}
            rows.append(with_intervals({**row, **measured}))
    run = {"run": "r", "dataset": "d", "model": "m", "seed": 0}
    return as_csv_table(tables.frame(rows, tables.ROBUSTNESS, run).to_dict("records"), tables.ROBUSTNESS)


def test_rewind_marks_find_each_units_rewind_point_and_the_straddling_cells():
    marks = figures.rewind_marks(doubt_table(), "r", "test", 0.02)
    assert marks.rewind == {"a": 3, "b": 0}
    assert marks.straddling == [("a", 1)]
    looser = figures.rewind_marks(doubt_table(), "r", "test", 0.3)
    assert looser.rewind["a"] == 1 and ("a", 0) in looser.straddling  # +0.3 straddles a threshold of 0.3


@pytest.mark.parametrize("transposed", [False, True])
def test_heatmap_frames_rewind_points_and_hatches_doubt(transposed):
    table = doubt_table(transposed)
    plain = figures.robustness_heatmap(table, "r", "test")
    marked = figures.robustness_heatmap(table, "r", "test", {"robust_max_increase": 0.02, "critical_fraction": 0.5})
    added = marked.axes[0].patches[len(plain.axes[0].patches) :]
    frames = [p for p in added if p.get_hatch() is None]
    hatched = [p for p in added if p.get_hatch()]
    assert len(hatched) == 1 and len(frames) == 2 + (12 if transposed else 0)  # the u_i rewind to 0 too
    # a's τ = 1 cell: row 1 (a, after fullmodel), column 2 (ReRnd, 0, 1); swapped when transposed
    x, y = hatched[0].get_xy()
    assert (x, y) == ((0.5, 1.5) if transposed else (1.5, 0.5))
