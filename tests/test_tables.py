"""Tidy tables: fixed columns, CSV round trips, and the per-unit summary and categories."""

import math

import pandas as pd
import pytest

from layerprobe import aggregate
from layerprobe.kinds import criticality
from layerprobe.results import tables
from layerprobe.results.categories import categorize
from layerprobe.results.intervals import with_intervals

CATEGORY_LIMITS = {"robust_max_increase": 0.02, "critical_fraction": 0.5}


def test_categorize_thresholds():
    def cat(e):
        return categorize(e, final_error=0.1, chance_error=0.9, robust_max_increase=0.02, critical_fraction=0.5)

    assert cat(0.11) == "robust" and cat(0.12) == "robust"
    assert cat(0.13) == "intermediate" and cat(0.49) == "intermediate"
    assert cat(0.5) == "critical" and cat(0.9) == "critical"
    assert cat(math.nan) == ""


def counted(row, final_error):
    """A row with the discordant counts and intervals of a variant whose wrong examples include all
    the final model's (better = 0), as the engine would give them."""
    n = row["n"]
    return with_intervals({**row, "worse": round((row["error"] - final_error) * n), "better": 0})


def robustness_rows(n=10_000):
    rows = []
    for unit, errors in {"fullmodel": (0.9, 0.1), "a": (0.6, 0.1), "b": (0.11, 0.1)}.items():
        for epoch, error in zip((0, 10), errors):
            for split in ("test", "train"):
                row = {
                    "probe": "reinit",
                    "unit": unit,
                    "checkpoint": epoch,
                    "split": split,
                    "error": error if split == "test" else error / 2,
                    "n": n,
                }
                rows.append(counted(row, 0.1 if split == "test" else 0.05))
        for draw, error in enumerate((0.8, 0.9)):
            row = {
                "probe": "rerandomize",
                "unit": unit,
                "draw": draw,
                "draw_seed": 10 + draw,
                "split": "test",
                "error": error,
                "n": n,
            }
            rows.append(counted(row, 0.1))
    return rows


def test_summarize_units(tmp_path):
    run = {"run": "r", "dataset": "digits", "model": "m", "seed": 0}
    robustness = tables.frame(robustness_rows(), tables.ROBUSTNESS, run)
    dist = tables.frame(
        [
            {
                "unit": u,
                "source": "checkpoint",
                "checkpoint": e,
                "n_params": 4,
                "l2": l2,
                "l2_rel_init": l2 / 2,
                "linf": l2 / 3,
            }
            for u in ("a", "b")
            for e, l2 in ((0, 0.0), (10, 3.0 if u == "a" else 6.0))
        ],
        tables.DISTANCES,
        run,
    )
    inventory = tables.frame(
        [
            {"unit": u, "index": i, "n_params": 4, "params": f"{u}.w", "rule": "unit chain", "num_classes": 10}
            for i, u in enumerate("ab")
        ],
        tables.INVENTORY,
        run,
    )
    # Round-trip through CSV first: the summary must work on what the workflow reads back.
    for name, df in (("r", robustness), ("d", dist), ("i", inventory)):
        tables.write_csv(df, tmp_path / f"{name}.csv")
    units = aggregate.summarize_units(
        tables.read_csv(tmp_path / "i.csv", tables.INVENTORY),
        tables.read_csv(tmp_path / "r.csv", tables.ROBUSTNESS),
        tables.read_csv(tmp_path / "d.csv", tables.DISTANCES),
        CATEGORY_LIMITS,
    )
    assert list(units.columns) == aggregate.units_columns()
    a, b = units.iloc[0], units.iloc[1]
    assert a["final_test_error"] == 0.1 and a["chance_error"] == pytest.approx(0.9)
    assert a["reinit_test_error"] == 0.6 and a["reinit_train_error"] == 0.3
    assert a["category"] == "critical" and b["category"] == "robust"  # n = 10,000: both intervals are narrow
    assert a["category_between"] == b["category_between"] == ""
    assert a["category_point"] == "critical" and b["category_point"] == "robust"
    assert b["reinit_test_increase"] == pytest.approx(0.01)
    assert b["reinit_test_increase_low"] < 0.01 < b["reinit_test_increase_high"] < 0.02
    assert pd.isna(a["rewind_checkpoint"]) and b["rewind_checkpoint"] == 0  # a: no checkpoint before the final one
    assert a["rerandomize_test_error_mean"] == pytest.approx(0.85)
    assert a["rerandomize_test_error_std"] == pytest.approx(pd.Series([0.8, 0.9]).std())
    assert a["category_rerandomize"] == "critical"
    assert a["l2_final"] == 3.0 and b["l2_rel_init_final"] == 3.0


def test_frame_keeps_integer_columns_integer(tmp_path):
    df = tables.frame([{"probe": "reinit", "checkpoint": 3}, {"probe": "rerandomize", "draw": 1}], tables.ROBUSTNESS)
    tables.write_csv(df, tmp_path / "t.csv")
    lines = (tmp_path / "t.csv").read_text().splitlines()
    assert lines[0].split(",") == tables.ROBUSTNESS
    assert ",3," in lines[1] and "3.0" not in lines[1]


def test_read_csv_rejects_foreign_tables(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"x.csv: not a layerprobe table \(missing columns"):
        tables.read_csv(tmp_path / "x.csv", tables.ROBUSTNESS)


def criticality_inputs():
    """Units a (moved 3 from init) and b (moved 6); baseline loss 1.0 and error 0.1 on the train subset."""
    run = {"run": "r", "dataset": "digits", "model": "m", "seed": 0}
    rows = [
        {
            "probe": "criticality",
            "unit": "fullmodel",
            "checkpoint": 0,
            "alpha": 1.0,
            "sigma": 0.0,
            "split": "train",
            "error": 0.1,
            "loss": 1.0,
            "n": 50,
        }
    ]
    # mean loss per (unit, α, σ) over two samples; a is feasible at (0.5, 0.5) and (1, 0.5), b nowhere
    losses = {
        ("a", 0.5, 0.5): (1.0, 1.02),
        ("a", 1.0, 0.5): (0.99, 1.0),
        ("a", 0.5, 1.0): (1.5, 1.7),
        ("a", 1.0, 1.0): (1.2, 1.4),
        ("b", 0.5, 0.5): (2.0, 2.0),
        ("b", 1.0, 0.5): (1.2, 1.1),
        ("b", 0.5, 1.0): (3.0, 3.0),
        ("b", 1.0, 1.0): (2.5, 2.5),
    }
    for (unit, alpha, sigma), pair in losses.items():
        for k, loss in enumerate(pair):
            rows.append(
                {
                    "probe": "criticality",
                    "unit": unit,
                    "checkpoint": 0,
                    "alpha": alpha,
                    "sigma": sigma,
                    "draw": k,
                    "draw_seed": 100 + k,
                    "split": "train",
                    "error": loss / 10,
                    "loss": loss,
                    "n": 50,
                }
            )
    dist = tables.frame(
        [
            {"unit": u, "source": "checkpoint", "checkpoint": e, "n_params": 4, "l2": l2}
            for u, moved in (("a", 3.0), ("b", 6.0))
            for e, l2 in ((0, 0.0), (10, moved))
        ],
        tables.DISTANCES,
        run,
    )
    return tables.frame(rows, tables.ROBUSTNESS, run), dist, run


def test_criticality_grid_relative_tolerance(tmp_path):
    robustness, dist, run = criticality_inputs()
    tables.write_csv(robustness, tmp_path / "r.csv")  # what aggregate reads back
    grid = criticality.grade(tables.read_csv(tmp_path / "r.csv", tables.ROBUSTNESS), dist)
    refined = criticality.refined(robustness, dist, {"measure": "loss", "tolerance": "relative", "value": 1.01})
    assert list(grid.columns) == criticality.COLUMNS and len(grid) == 8
    a = grid[grid.unit == "a"].set_index(["alpha", "sigma"])
    assert a.loc[(0.5, 0.5), "mean_loss"] == pytest.approx(1.01) and a.loc[(0.5, 0.5), "samples"] == 2
    assert a.loc[(0.5, 0.5), "threshold"] == pytest.approx(1.01) and a["feasible"].tolist() == [
        True,
        True,
        False,
        False,
    ]
    assert a.loc[(0.5, 0.5), "score"] == pytest.approx(0.25 * 9 / 0.25)  # α²‖Δ‖²/σ² = 9
    assert a.loc[(1.0, 0.5), "score"] == pytest.approx(36.0) and math.isnan(a.loc[(0.5, 1.0), "score"])
    assert a["chosen"].tolist() == [True, False, False, False]
    assert not grid.loc[grid.unit == "b", "feasible"].any() and not grid.loc[grid.unit == "b", "chosen"].any()

    inventory = tables.frame(
        [
            {"unit": u, "index": i, "n_params": 4, "params": f"{u}.w", "rule": "unit chain", "num_classes": 10}
            for i, u in enumerate("ab")
        ],
        tables.INVENTORY,
        run,
    )
    units = aggregate.summarize_units(
        inventory, robustness, dist, CATEGORY_LIMITS, own={"criticality": grid, "criticality_refined": refined}
    ).set_index("unit")
    assert units.loc["a", "criticality"] == pytest.approx(9.0) and units.loc["a", "criticality_alpha"] == 0.5
    assert math.isinf(units.loc["b", "criticality"]) and math.isinf(units.loc["a", "network_criticality"])
    # without search rows, σ*(α) is the largest feasible grid σ: the refined μ is the grid's
    assert units.loc["a", "criticality_grid"] == units.loc["a", "criticality"]
    assert math.isinf(units.loc["b", "criticality_grid"]) and math.isinf(units.loc["a", "network_criticality_grid"])
    a = refined.set_index(["unit", "alpha"])
    assert a.loc[("a", 0.5), "sigma"] == 0.5 and a.loc[("a", 0.5), "sigma_above"] == 1.0
    assert not refined.loc[refined.unit == "b", "feasible"].any() and refined["evaluated"].eq(2).all()


def test_criticality_grid_absolute_tolerance_on_error():
    robustness, dist, _ = criticality_inputs()
    grid = criticality.grade(robustness, dist, measure="error", tolerance="absolute", value=0.13)
    assert (grid["threshold"] == 0.13).all()
    feasible = grid[grid["feasible"]]
    assert set(zip(feasible.unit, feasible.alpha, feasible.sigma)) == {
        ("a", 0.5, 0.5),
        ("a", 1.0, 0.5),
        ("a", 1.0, 1.0),
        ("b", 1.0, 0.5),
    }
    chosen = grid[grid["chosen"]].set_index("unit")
    assert chosen.loc["b", "score"] == pytest.approx(36 * 4)  # b: α = 1, σ = 0.5, ‖Δ‖² = 36
