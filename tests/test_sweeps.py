"""Sweeps (paper F5-F7): their declaration, its errors by key, and the figures on constructed sweeps
(the plotted fractions equal those computed by hand)."""

import math

import numpy as np
import pandas as pd
import pytest
import yaml
from test_configurations import robustness

from layerprobe.config import ConfigError, sweeps, validate
from layerprobe.results import figures

from conftest import REPO, SCHEMA


def run(name, seed=0, depth=1, width=8, **changes):
    return {
        "name": name,
        "dataset": "digits",
        "seed": seed,
        "model": {"name": "fcn", "depth": depth, "width": width},
        "train": {"epochs": 2, "lr_milestones": []},
        "checkpoints": [1],
        **changes,
    }


RUNS = [run("d1-s0"), run("d1-s1", seed=1), run("d2-s0", depth=2), run("d3-s0", depth=3, width=16)]


def test_a_sweep_is_the_configurations_of_its_runs_at_their_axis_values():
    config = validate(
        {
            "runs": RUNS,
            "sweeps": [
                {
                    "name": "depth",
                    "runs": ["d1-s0", "d[23]-*"],
                    "axes": {"depth": "model.depth", "width": "model.width"},
                }
            ],
        },
        SCHEMA,
    )
    assert sweeps.resolve(config) == {
        "depth": {
            "name": "depth",
            "axes": ["depth", "width"],
            "points": [  # d1-s0 brings its configuration's other seed
                {"configuration": "d1", "runs": ["d1-s0", "d1-s1"], "values": {"depth": 1, "width": 8}},
                {"configuration": "d2", "runs": ["d2-s0"], "values": {"depth": 2, "width": 8}},
                {"configuration": "d3", "runs": ["d3-s0"], "values": {"depth": 3, "width": 16}},
            ],
        }
    }


def test_the_paper_configs_declare_their_sweeps():
    mnist = validate(yaml.safe_load((REPO / "configs/paper-mnist.yaml").read_text()), SCHEMA)
    (fcn,) = sweeps.resolve(mnist).values()
    points = {(p["values"]["depth"], p["values"]["width"]): len(p["runs"]) for p in fcn["points"]}
    assert set(points) == {(d, w) for d in (1, 3, 5) for w in (64, 256, 1024)} and points[3, 256] == 3
    cifar = validate(yaml.safe_load((REPO / "configs/paper-cifar10.yaml").read_text()), SCHEMA)
    depths = {name: [p["values"]["depth"] for p in s["points"]] for name, s in sweeps.resolve(cifar).items()}
    assert depths == {"vgg-depth": [11, 13, 16, 19], "resnet-depth": [18, 34, 50]}  # the numbers the names end in


@pytest.mark.parametrize(
    "sweep, message",
    [
        ({"name": "s", "runs": "wide-*", "axes": {"depth": "model.depth"}}, "sweeps[0].runs: 'wide-*' matches no run"),
        (
            {"name": "s", "runs": ["d1-*", "x"], "axes": {"depth": "model.depth"}},
            "sweeps[0].runs[1]: 'x' matches no run",
        ),
        (
            {"name": "s", "runs": "d1-*", "axes": {"depth": "model.depth"}},
            "sweeps[0].runs: the runs matched form one configuration ('d1'); a sweep needs two or more",
        ),
        (
            {"name": "s", "runs": "*", "axes": {"depth": "model.stages"}},
            "sweeps[0].axes.depth: run 'd1-s0' has no setting model.stages",
        ),
        (
            {"name": "s", "runs": "*", "axes": {"data": "dataset"}},
            "sweeps[0].axes.data: run 'd1-s0' has dataset = 'digits', neither a number nor a name ending in one",
        ),
        ({"name": "s", "runs": "*", "axes": {"seed": "seed"}}, "sweeps[0].axes.seed: 'seed' tells the runs of a"),
        (
            {"name": "s", "runs": "*", "axes": {"epochs": "train.epochs"}},
            "sweeps[0].axes: configurations 'd1' and 'd2' are both at epochs=2; add an axis they differ in",
        ),
        ({"name": "s", "runs": "*", "axes": {}}, "sweeps[0].axes: {} should be non-empty"),
        (
            {"name": "s", "runs": "*", "axes": {"depth": "model..depth"}},
            "sweeps[0].axes.depth: 'model..depth' does not",
        ),
        ({"name": "s", "runs": [], "axes": {"depth": "model.depth"}}, "sweeps[0].runs: [] should be non-empty"),
        ({"name": "a b", "runs": "*", "axes": {"depth": "model.depth"}}, "sweeps[0].name: 'a b' does not match"),
        ({"runs": "*", "axes": {"depth": "model.depth"}}, "sweeps[0]: 'name' is a required property"),
    ],
)
def test_bad_sweeps_are_errors_naming_the_key(sweep, message):
    with pytest.raises(ConfigError) as err:
        validate({"runs": RUNS, "sweeps": [sweep]}, SCHEMA)
    assert message in str(err.value)


def test_a_sweep_name_is_used_once():
    twice = [{"name": "s", "runs": "*", "axes": {"depth": "model.depth"}}] * 2
    with pytest.raises(ConfigError, match=r"sweeps\[1\].name: sweep name 's' is used twice"):
        validate({"runs": RUNS, "sweeps": twice}, SCHEMA)


# --- The figures on a constructed three-run sweep ---------------------------------------------------------

# Three runs: d1 with two seeds, d2 with one; four units each, their categories chosen by hand.
CATEGORIES = {
    "d1-s0": ["critical", "robust", "robust", "intermediate"],  # robust 2/4, critical 1/4
    "d1-s1": ["critical", "critical", "robust", "uncertain"],  # robust 1/4, critical 2/4
    "d2-s0": ["critical", "robust", "robust", "robust"],  # robust 3/4, critical 1/4
}
SWEEP = {
    "name": "depth",
    "axes": ["depth"],
    "points": [
        {"configuration": "d1", "runs": ["d1-s0", "d1-s1"], "values": {"depth": 1}},
        {"configuration": "d2", "runs": ["d2-s0"], "values": {"depth": 2}},
    ],
}


def units():
    return pd.DataFrame(
        [
            {"run": r, "unit": f"layer{i + 1}", "category": c}
            for r, cats in CATEGORIES.items()
            for i, c in enumerate(cats)
        ]
    )


def means(ax):
    """The lines of the means (not the caps of the interval bars)."""
    return [line for line in ax.lines if line.get_gid() == "mean"]


def test_sweep_figure_plots_the_fractions_computed_by_hand():
    fig = figures.sweep_categories(units(), SWEEP)
    robust_ax, critical_ax = fig.axes[:2]
    assert "robust" in robust_ax.get_ylabel() and "critical" in critical_ax.get_ylabel()
    (robust_line,) = means(robust_ax)
    (critical_line,) = means(critical_ax)
    assert robust_line.get_ydata().tolist() == [(0.5 + 0.25) / 2, 0.75]
    assert critical_line.get_ydata().tolist() == [(0.25 + 0.5) / 2, 0.25]
    assert robust_line.get_xdata().tolist() == [0, 1]
    assert [t.get_text() for t in robust_ax.get_xticklabels()] == ["1", "2"]
    # The interval only where there are two seeds: 0.375 ± t(0.975, 1) · std/√2, std of (0.5, 0.25).
    (bars,) = robust_ax.collections
    (segment,) = bars.get_segments()
    half = 12.7062047 * (0.25 / math.sqrt(2)) / math.sqrt(2)
    assert segment[:, 1].tolist() == pytest.approx([0.375 - half, 0.375 + half], abs=1e-6)


def test_two_axis_sweep_has_a_line_per_value_of_the_other_axis():
    table = pd.DataFrame(
        [
            {"run": f"r{d}x{w}", "unit": f"u{i}", "category": "robust" if i < d else "critical"}
            for d in (1, 2)
            for w in (8, 16)
            for i in range(3)
        ]
    )
    sweep = {
        "name": "grid",
        "axes": ["depth", "width"],
        "points": [
            {"configuration": f"c{d}x{w}", "runs": [f"r{d}x{w}"], "values": {"depth": d, "width": w}}
            for d in (1, 2)
            for w in (8, 16)
        ],
    }
    fig = figures.sweep_categories(table, sweep)
    by_depth, by_width = fig.axes[0], fig.axes[1]  # the robust row: against depth, against width
    assert [line.get_label() for line in means(by_depth)] == ["width = 8", "width = 16"]
    assert [line.get_ydata().tolist() for line in means(by_depth)] == [[1 / 3, 2 / 3]] * 2
    assert [line.get_ydata().tolist() for line in means(by_width)] == [[1 / 3, 1 / 3], [2 / 3, 2 / 3]]
    assert not by_depth.collections  # one seed each: no intervals


def test_sweep_heatmaps_are_one_seed_mean_panel_per_model():
    table = robustness(["d1-s0", "d1-s1", "d2-s0"], seed=3)
    fig = figures.sweep_heatmaps(table, SWEEP, "test")
    panels = [ax for ax in fig.axes if ax.get_images()]
    assert [ax.get_title() for ax in panels] == ["d1 (depth = 1; 2 seeds)", "d2 (depth = 2; 1 seed)"]
    expected = figures.configuration_matrix(table, ["d1-s0", "d1-s1"], "test").to_numpy()
    assert np.array_equal(panels[0].get_images()[0].get_array().filled(np.nan), expected, equal_nan=True)
    grid = {
        "name": "grid",
        "axes": ["depth", "width"],
        "points": [
            {"configuration": "a", "runs": ["d1-s0"], "values": {"depth": 1, "width": 8}},
            {"configuration": "b", "runs": ["d2-s0"], "values": {"depth": 2, "width": 16}},
        ],
    }
    fig = figures.sweep_heatmaps(table, grid, "train")  # a 2 x 2 grid with two points: two panels
    assert len([ax for ax in fig.axes if ax.get_images()]) == 2
