"""Tests for layerprobe.figures: the data layout is checked on the matrix, the pictures
only for being written as valid files."""

import io

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from layerprobe import figures

UNITS = ["layer1", "layer2", "final_linear"]
CHECKPOINTS = [0, 1, 5, 10]
DRAWS = 2

ROBUSTNESS_COLUMNS = [
    "run", "dataset", "model", "seed", "probe", "unit", "checkpoint", "alpha", "sigma",
    "draw", "draw_seed", "bn_stats", "split", "error", "loss", "agreement", "n",
]
DISTANCE_COLUMNS = [
    "run", "dataset", "model", "seed", "unit", "source", "checkpoint", "draw", "draw_seed",
    "n_params", "l2", "linf", "l2_rel_init", "l2_per_sqrt_n", "linf_rel_init",
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
                rows.append(dict(run=run, probe="reinit", unit=unit, checkpoint=epoch,
                                 draw=np.nan, split=split, error=reinit_error(i, epoch, split)))
            for k in range(DRAWS):
                rows.append(dict(run=run, probe="rerandomize", unit=unit, checkpoint=np.nan,
                                 draw=k, split=split, error=draw_error(i, k, split)))
        # A row of another probe that must be ignored (its unit must not become a row).
        rows.append(dict(run=run, probe="interpolate", unit="layer1+layer2", checkpoint=1,
                         alpha=0.5, draw=np.nan, split=split, error=0.99))
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
            rows.append(dict(run="mlp_s0", unit=unit, source="checkpoint", checkpoint=epoch,
                             l2=float(10 * i + epoch), linf=0.1 * epoch,
                             l2_rel_init=0.02 * epoch + 0.01 * i))
        for k in range(DRAWS):
            rows.append(dict(run="mlp_s0", unit=unit, source="rerandomize", draw=k,
                             l2=100.0 + 10 * i + k, linf=1.0, l2_rel_init=1.4))
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


def test_unknown_run_names_asked_and_present(robustness):
    with pytest.raises(ValueError, match=r"nope.*mlp_s0.*other_run"):
        figures.robustness_heatmap(robustness, "nope", "test")


def test_unknown_split_names_asked_and_present(robustness):
    with pytest.raises(ValueError, match=r"'valid'.*\['test', 'train'\]"):
        figures.robustness_heatmap(robustness, "mlp_s0", "valid")


def test_unknown_measure(distances):
    with pytest.raises(ValueError, match="l3"):
        figures.distance_heatmap(distances, "mlp_s0", "l3")


# --- layout ------------------------------------------------------------------


def test_twelve_units_stay_as_rows():
    table = as_csv_table(robustness_rows(units=[f"u{i}" for i in range(12)], checkpoints=[0, 1]),
                         ROBUSTNESS_COLUMNS)
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
