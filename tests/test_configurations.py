"""Configurations (runs that differ only in seed): which runs form one, the Student-t quantiles, the
table across seeds (numbers checked by hand), the seed-mean heatmap and the summary."""

import copy
import math
import random

import numpy as np
import pandas as pd
import pytest

from layerprobe.config import ConfigError, configurations, validate
from layerprobe.results import across_seeds, figures, student_t, summary
from layerprobe.results.categories import CATEGORIES

from conftest import SCHEMA

# --- Student's t -------------------------------------------------------------------------------------

# Two-sided 95% quantiles from the published tables (e.g. NIST/SEMATECH e-Handbook, Table 1.3.6.7.2).
T_TABLE = {
    1: 12.7062047,
    2: 4.3026527,
    3: 3.1824463,
    4: 2.7764451,
    5: 2.5705818,
    6: 2.4469119,
    10: 2.2281389,
    20: 2.0859634,
    30: 2.0422725,
    100: 1.9839715,
}


@pytest.mark.parametrize("df", sorted(T_TABLE))
def test_t_quantiles_equal_the_table(df):
    assert student_t.quantile(0.95, df) == pytest.approx(T_TABLE[df], abs=5e-7)


def test_t_quantiles_of_other_levels_and_the_normal_limit():
    assert student_t.quantile(0.99, 1) == pytest.approx(63.6567412, abs=1e-6)
    assert student_t.quantile(0.90, 5) == pytest.approx(2.0150484, abs=1e-6)
    assert student_t.quantile(0.95, 100_000) == pytest.approx(1.959964, abs=1e-4)
    with pytest.raises(ValueError, match="positive integer"):
        student_t.central_probability(1.0, 0)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        student_t.quantile(1.0, 3)


def t_density(x, df):
    return (
        math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2)) * (1 + x * x / df) ** (-(df + 1) / 2)
    )


def test_closed_form_probability_equals_the_integrated_density():
    """The closed form against a plain reference: Simpson's rule on the density, fresh random t and df."""
    rng = random.Random(1234)
    for _ in range(12):
        df, t = rng.randint(1, 40), rng.uniform(0.05, 8.0)
        n = 4000
        xs = [-t + 2 * t * k / n for k in range(n + 1)]
        weights = [1 if k in (0, n) else 4 if k % 2 else 2 for k in range(n + 1)]
        integral = (2 * t / n) / 3 * sum(w * t_density(x, df) for w, x in zip(weights, xs))
        assert student_t.central_probability(t, df) == pytest.approx(integral, abs=1e-9)


def test_interval_by_hand():
    mean, std, low, high = across_seeds.interval([0.1, 0.3])
    assert (mean, std) == (pytest.approx(0.2), pytest.approx(math.sqrt(0.02)))
    half = 12.7062047 * math.sqrt(0.02) / math.sqrt(2)  # = 1.27062047
    assert (low, high) == (pytest.approx(0.2 - half, abs=1e-6), pytest.approx(0.2 + half, abs=1e-6))
    mean, std, low, high = across_seeds.interval([1.0, 2.0, 3.0])
    assert (mean, std, low, high) == (
        2.0,
        1.0,
        pytest.approx(2 - 2.4841377, abs=1e-6),
        pytest.approx(2 + 2.4841377, abs=1e-6),
    )
    assert across_seeds.interval([0.5])[0] == 0.5 and all(math.isnan(v) for v in across_seeds.interval([0.5])[1:])
    assert all(math.isnan(v) for v in across_seeds.interval([0.5, math.nan]))


# --- Which runs form a configuration ----------------------------------------------------------------


def run(name, seed=0, **changes):
    return {
        "name": name,
        "dataset": "digits",
        "seed": seed,
        "model": {"name": "fcn", "depth": 1, "width": 8},
        "train": {"epochs": 2, "lr_milestones": []},
        "checkpoints": [1],
        **changes,
    }


def test_runs_that_differ_only_in_seed_form_a_configuration_named_without_the_seed():
    config = validate(
        {
            "runs": [
                run("fcn-3x8-s0"),
                run("fcn-3x8-s1", seed=1),
                run("fcn-3x8_seed2", seed=2),
                run("wide", model={"name": "fcn", "depth": 1, "width": 64}),
                run("mine", seed=5, configuration="fcn-3x8"),
            ]
        },
        SCHEMA,
    )
    assert configurations.group(config["runs"]) == {
        "fcn-3x8": ["fcn-3x8-s0", "fcn-3x8-s1", "fcn-3x8_seed2", "mine"],
        "wide": ["wide"],
    }


@pytest.mark.parametrize(
    "runs, message",
    [
        (
            [run("a-s0"), run("b-s1", seed=1)],
            "runs[1].configuration: run 'b-s1' differs from run 'a-s0' only in its seed, so they form one "
            "configuration, but it is named 'b' and that one 'a'",
        ),
        (
            [run("a-s0"), run("a-s1", seed=1, checkpoints=[1, 2])],
            "runs[1].configuration: run 'a-s1' would be configuration 'a', the name of run 'a-s0''s, whose settings "
            "differ (checkpoints)",
        ),
        ([run("a-s0"), run("a-s00")], "runs[1].seed: run 'a-s00' repeats seed 0 of run 'a-s0' in configuration 'a'"),
    ],
)
def test_runs_that_cannot_form_configurations_are_errors_naming_the_key(runs, message):
    with pytest.raises(ConfigError) as err:
        validate({"runs": runs}, SCHEMA)
    assert message in str(err.value)


def test_the_configuration_key_is_a_name():
    with pytest.raises(ConfigError, match=r"runs\[0\].configuration: 'a b' does not match"):
        validate({"runs": [run("x", configuration="a b")]}, SCHEMA)


# --- The table across seeds -------------------------------------------------------------------------


def units_table():
    """Two seeds of configuration a, one of b; a column a kind might add (rewind_checkpoint), and a text
    column left all empty (category_between), as a CSV reads it back."""
    rows = [
        # run, unit, reinit_test_error, criticality, rewind_checkpoint, category
        ("a-s0", "layer1", 0.10, 1.0, 1.0, "critical"),
        ("a-s0", "layer2", 0.02, 0.0, 0.0, "robust"),
        ("a-s1", "layer1", 0.30, 3.0, math.nan, "uncertain"),
        ("a-s1", "layer2", 0.04, 0.0, 0.0, "robust"),
        ("b", "layer1", 0.50, math.inf, 2.0, "intermediate"),
    ]
    return pd.DataFrame(
        [
            {
                "run": r,
                "dataset": "digits",
                "model": "fcn",
                "seed": int(r[-1]) if r[-1].isdigit() else 0,
                "unit": u,
                "index": int(u[-1]) - 1,
                "n_params": 10,
                "params": "weight bias",
                "rule": "chain",
                "num_classes": 10,
                "final_test_error": 0.01 * (1 + (r == "a-s1")),
                "reinit_test_error": e,
                "criticality": mu,
                "rewind_checkpoint": rewind,
                "category": category,
                "category_between": math.nan,
            }
            for r, u, e, mu, rewind, category in rows
        ]
    )


CONFIGS = {"a": ["a-s0", "a-s1"], "b": ["b"]}


def test_configurations_table_by_hand():
    table = across_seeds.configurations_table(units_table(), CONFIGS)
    assert table[["configuration", "unit", "runs", "seeds"]].values.tolist() == [
        ["a", "layer1", "a-s0 a-s1", 2],
        ["a", "layer2", "a-s0 a-s1", 2],
        ["b", "layer1", "b", 1],
    ]
    assert list(table.columns) == across_seeds.columns(
        ["final_test_error", "reinit_test_error", "criticality", "rewind_checkpoint"]
    )  # not the text column
    a1, a2, b1 = (row for _, row in table.iterrows())
    half = 12.7062047 * math.sqrt(0.02) / math.sqrt(2)  # errors 0.1 and 0.3: std √0.02, df 1
    assert a1["reinit_test_error_mean"] == pytest.approx(0.2) and a1["reinit_test_error_std"] == pytest.approx(
        0.1414214
    )
    assert a1["reinit_test_error_low"] == pytest.approx(0.2 - half, abs=1e-6)
    assert a1["reinit_test_error_high"] == pytest.approx(0.2 + half, abs=1e-6)
    assert (a1["criticality_mean"], a1["criticality_std"]) == (2.0, pytest.approx(math.sqrt(2)))
    assert np.isnan([a1[f"rewind_checkpoint_{s}"] for s in across_seeds.STATISTICS]).all()  # one seed has none
    assert (a2["rewind_checkpoint_mean"], a2["rewind_checkpoint_std"]) == (0.0, 0.0)
    assert a2["reinit_test_error_mean"] == pytest.approx(0.03)
    assert [a1[f"seeds_{c}"] for c in across_seeds.CATEGORY_NAMES] == [0, 0, 1, 1]
    assert [a2[f"seeds_{c}"] for c in across_seeds.CATEGORY_NAMES] == [2, 0, 0, 0]
    # One seed: the mean is the value, no spread, no interval; an infinite μ stays infinite.
    assert (
        b1["reinit_test_error_mean"] == 0.5
        and np.isnan([b1["reinit_test_error_std"], b1["reinit_test_error_low"]]).all()
    )
    assert b1["criticality_mean"] == math.inf and b1["seeds_intermediate"] == 1 and b1["seeds"] == 1


def test_every_category_is_counted():
    assert set(CATEGORIES) <= set(across_seeds.CATEGORY_NAMES) == set(summary.SHOWN_CATEGORIES)


def test_configurations_table_is_the_same_bits_twice():
    first = across_seeds.configurations_table(units_table(), CONFIGS).to_csv(index=False)
    assert across_seeds.configurations_table(copy.deepcopy(units_table()), CONFIGS).to_csv(index=False) == first


# --- The seed-mean heatmap --------------------------------------------------------------------------


def robustness(runs, units=("layer1", "layer2"), epochs=(0, 1, 3), draws=2, seed=0):
    rng = random.Random(seed)
    rows = []
    for r in runs:
        for split in ("test", "train"):
            for unit in ("fullmodel", *units):
                rows += [
                    dict(
                        run=r,
                        probe="reinit",
                        unit=unit,
                        checkpoint=tau,
                        draw=math.nan,
                        split=split,
                        error=round(rng.random(), 4),
                    )
                    for tau in epochs
                ]
                rows += [
                    dict(
                        run=r,
                        probe="rerandomize",
                        unit=unit,
                        checkpoint=math.nan,
                        draw=d,
                        split=split,
                        error=round(rng.random(), 4),
                    )
                    for d in range(draws)
                ]
    return pd.DataFrame(rows)


def test_configuration_heatmap_is_the_mean_of_the_runs_heatmaps():
    table = robustness(["a-s0", "a-s1", "a-s2"])
    matrix = figures.configuration_matrix(table, ["a-s0", "a-s1", "a-s2"], "test")
    # The plain computation: each cell's rows, averaged by hand (ReRnd: each run's draw mean first).
    test = table[table["split"] == "test"]
    for unit in ("fullmodel", "layer1", "layer2"):
        for tau in (0, 1, 3):
            cells = test[(test.unit == unit) & (test.checkpoint == tau)]["error"].tolist()
            assert matrix.loc[unit, tau] == pytest.approx(sum(cells) / 3, abs=1e-12)
        draws = test[(test.unit == unit) & (test.probe == "rerandomize")]
        per_run = [draws[draws.run == r]["error"].mean() for r in ("a-s0", "a-s1", "a-s2")]
        assert matrix.loc[unit, "ReRnd"] == pytest.approx(sum(per_run) / 3, abs=1e-12)
    fig = figures.configuration_heatmap(table, {"name": "a", "runs": ["a-s0", "a-s1", "a-s2"]}, "test")
    assert "mean over 3 seeds" in fig.axes[0].get_title()


# --- The summary ------------------------------------------------------------------------------------


def test_summary_is_one_table_per_configuration_and_valid_rst():
    publish_parts = pytest.importorskip("docutils.core").publish_parts  # docutils comes with snakemake
    units = units_table()
    text = summary.render(across_seeds.configurations_table(units, CONFIGS), units)
    html = publish_parts(text, writer="html", settings_overrides={"halt_level": 2})["body"]
    assert html.count("<table") == 2
    assert "a: 2 seeds (a-s0, a-s1); final test error 0.015 [" in html
    assert "b: 1 seed (b); final test error 0.010</caption>" in html
    rows = [r.split(" - ")[1] for r in text.splitlines() if r.startswith("   * - ")]
    assert rows == ["unit", "layer1", "layer2", "unit", "layer1"]  # a header, then the units in model order
    assert "1, none" in text and "     - 0, 0" in text  # the rewind points of each seed, in seed order
    assert f"0.200 [{0.2 - 12.7062047 * 0.1:.3f}, {0.2 + 12.7062047 * 0.1:.3f}]" in text
    # Without the columns other parts add, the summary leaves them out.
    plain = units.drop(columns=["rewind_checkpoint", "criticality"])
    text = summary.render(across_seeds.configurations_table(plain, CONFIGS), plain)
    assert "rewind" not in text and "criticality" not in text
