"""Tidy tables: fixed columns, CSV round trips, and the per-unit summary and categories."""
import math

import pandas as pd
import pytest

from layerprobe import tables


def test_categorize_thresholds():
    cat = lambda e: tables.categorize(e, final_error=0.1, chance_error=0.9, robust_max_increase=0.02,  # noqa: E731
                                      critical_fraction=0.5)
    assert cat(0.11) == "robust" and cat(0.12) == "robust"
    assert cat(0.13) == "intermediate" and cat(0.49) == "intermediate"
    assert cat(0.5) == "critical" and cat(0.9) == "critical"
    assert cat(math.nan) == ""


def robustness_rows():
    rows = []
    for unit, errors in {"fullmodel": (0.9, 0.1), "a": (0.6, 0.1), "b": (0.11, 0.1)}.items():
        for epoch, error in zip((0, 10), errors):
            for split in ("test", "train"):
                rows.append({"probe": "reinit", "unit": unit, "checkpoint": epoch, "split": split,
                             "error": error if split == "test" else error / 2, "n": 100})
        for draw, error in enumerate((0.8, 0.9)):
            rows.append({"probe": "rerandomize", "unit": unit, "draw": draw, "draw_seed": 10 + draw,
                         "split": "test", "error": error, "n": 100})
    return rows


def test_summarize_units(tmp_path):
    run = {"run": "r", "dataset": "digits", "model": "m", "seed": 0}
    robustness = tables.frame(robustness_rows(), tables.ROBUSTNESS, run)
    dist = tables.frame([{"unit": u, "source": "checkpoint", "checkpoint": e, "n_params": 4, "l2": l2,
                          "l2_rel_init": l2 / 2, "linf": l2 / 3}
                         for u in ("a", "b") for e, l2 in ((0, 0.0), (10, 3.0 if u == "a" else 6.0))],
                        tables.DISTANCES, run)
    inventory = tables.frame([{"unit": u, "index": i, "n_params": 4, "params": f"{u}.w", "rule": "unit chain",
                               "num_classes": 10} for i, u in enumerate("ab")], tables.INVENTORY, run)
    # Round-trip through CSV first: the summary must work on what the workflow reads back.
    for name, df in (("r", robustness), ("d", dist), ("i", inventory)):
        tables.write_csv(df, tmp_path / f"{name}.csv")
    units = tables.summarize_units(tables.read_csv(tmp_path / "i.csv", tables.INVENTORY),
                                   tables.read_csv(tmp_path / "r.csv", tables.ROBUSTNESS),
                                   tables.read_csv(tmp_path / "d.csv", tables.DISTANCES), 0.02, 0.5)
    assert list(units.columns) == tables.UNITS
    a, b = units.iloc[0], units.iloc[1]
    assert a["final_test_error"] == 0.1 and a["chance_error"] == pytest.approx(0.9)
    assert a["reinit_test_error"] == 0.6 and a["reinit_train_error"] == 0.3
    assert a["category"] == "critical" and b["category"] == "robust"
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
