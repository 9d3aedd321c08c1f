"""The probe-kind registry: the built-in kinds are the schema's sections, and a new kind is one module
plus its schema section, with nothing else edited."""

import copy
import shutil
import subprocess
import sys
import types

import pandas as pd
import pytest
import yaml

from layerprobe import aggregate, kinds, study
from layerprobe.config import section
from layerprobe.config.schema import load_schema, probe_kinds

from conftest import REPO, SCHEMA


def test_builtin_kinds_are_the_schema_probe_sections_in_order():
    assert (
        [k.name for k in kinds.kinds()]
        == list(probe_kinds(load_schema()))
        == ["reinit", "rerandomize", "interpolate", "criticality", "joint"]
    )
    across = ["configuration_robustness", "sweep_categories", "sweep_robustness"]  # reinit's, across seeds
    assert [f.rule for f in kinds.figures()] == [
        "distance",
        "robustness",
        *across,
        "interpolation",
        "criticality",
        "joint",
    ]
    assert {f.over for f in kinds.figures()} == {"run", "configuration", "sweep"}
    probes = section("probes", {"interpolate": {"enabled": False}, "joint": {"enabled": False}})
    assert [f.rule for f in kinds.figures(probes)] == ["distance", "robustness", *across, "criticality"]
    assert kinds.job_settings(probes)["criticality"] == probes["criticality"]  # the search applies the feasibility
    assert kinds.aggregate_settings(probes)["criticality"] == {"feasibility": probes["criticality"]["feasibility"]}
    with pytest.raises(ValueError, match="unknown probe kind 'reinitialize'"):
        kinds.get("reinitialize")


# --- A toy kind, written as a module of layerprobe/kinds/ would be ---------------------------------

MIDPOINT_MODULE = '''
"""Midpoint: each unit, then the whole model, part of the way back to its initialization (a toy kind)."""
from layerprobe.kinds.base import Figure, ProbeKind, Summary
from layerprobe.probing.variants import Variant, targets


def variants(ctx):
    alpha = ctx.section("midpoint")["alpha"]
    return [Variant("midpoint", label, units, ("checkpoint", 0), alpha=alpha) for label, units in targets(ctx.units)]


def summary(units, robustness, distances, tables, section, categories):
    rows = robustness[(robustness["probe"] == "midpoint") & (robustness["split"] == "test")]
    return rows.groupby(["run", "unit"])["error"].first().rename("midpoint_test_error").to_frame()


def draw(table, run, split):
    from matplotlib.figure import Figure as Canvas

    rows = table[(table["run"] == run) & (table["probe"] == "midpoint") & (table["split"] == split)]
    fig = Canvas()
    fig.add_subplot().bar(rows["unit"].astype(str), rows["error"])
    return fig


KIND = ProbeKind(name="midpoint", variants=variants,
                 summary=Summary(measures=("midpoint_test_error",), verdicts=(), compute=summary),
                 figures=(Figure(rule="midpoint", pattern="midpoint_{split}", table="robustness", draw=draw,
                                 caption="midpoint.rst", category="Midpoint", label="{split} error",
                                 values=lambda probes: {"split": probes["splits"]}),))
'''
MIDPOINT_SECTION = {
    "description": "Each unit part of the way back to its initialization.",
    "type": "object",
    "additionalProperties": False,
    "default": {},
    "properties": {
        "enabled": {"description": "Run this probe.", "type": "boolean", "default": True},
        "alpha": {"description": "The point on the way.", "type": "number", "minimum": 0, "maximum": 1, "default": 0.5},
    },
}


def schema_with_midpoint() -> dict:
    schema = load_schema(SCHEMA)
    schema["properties"]["probes"]["properties"]["midpoint"] = MIDPOINT_SECTION
    return schema


@pytest.fixture
def toy_kind(monkeypatch, tmp_path):
    """The registry with the toy kind added (restored afterwards); the path of a schema holding its section."""
    module = types.ModuleType("midpoint")
    exec(compile(MIDPOINT_MODULE, "midpoint.py", "exec"), module.__dict__)
    monkeypatch.setattr(kinds, "_REGISTRY", dict(kinds._REGISTRY))
    kinds.register(module.KIND)
    path = tmp_path / "schema.yaml"
    path.write_text(yaml.safe_dump(schema_with_midpoint(), sort_keys=False))
    return path


def test_a_new_kind_runs_through_the_probe_path_and_aggregation(toy_kind, trained, digits):
    run, factory, states, _ = trained
    probes = section(
        "probes",
        {
            "rerandomize": {"enabled": False},
            "interpolate": {"enabled": False},
            "criticality": {"enabled": False},
            "joint": {"enabled": False},
        },
        toy_kind,
    )
    assert probes["midpoint"] == {"enabled": True, "alpha": 0.5}
    assert [k.name for k in kinds.enabled(probes)] == ["reinit", "midpoint"]
    categories = section("categories")
    result = study.probe_run(
        factory,
        states,
        digits.splits(),
        probes,
        study.run_columns(run),
        digits.num_classes,
        categories=categories,
        device="cpu",
        progress=False,
    )
    rows = result["robustness"]
    mine = rows[rows["probe"] == "midpoint"]
    assert len(mine) == (len(result["inventory"]) + 1) * 2 and set(mine["alpha"]) == {
        0.5
    }  # units + fullmodel, 2 splits
    assert mine["error"].between(0, 1).all() and set(rows["probe"]) == {"reinit", "midpoint"}

    columns = aggregate.units_columns()  # the new measure sits after the other kinds', before the distances
    assert columns.index("midpoint_test_error") == columns.index("rerandomize_test_error_std") + 1
    assert columns.index("l2_final") == columns.index("midpoint_test_error") + 1
    units = aggregate.summarize_units(
        result["inventory"], rows, result["distances"], categories, kinds.aggregate_settings(probes)
    )
    test = mine[mine["split"] == "test"].set_index("unit")["error"]
    assert units.set_index("unit")["midpoint_test_error"].to_dict() == test.drop("fullmodel").to_dict()


def test_a_kind_must_not_reuse_a_name(toy_kind):
    with pytest.raises(ValueError, match="'midpoint' is registered already"):
        kinds.register(copy.copy(kinds.get("midpoint")))


@pytest.mark.skipif(shutil.which("snakemake") is None, reason="snakemake is not installed")
def test_a_new_kind_is_one_module_plus_its_schema_section(tmp_path):
    """In a copy of the checkout: add layerprobe/kinds/midpoint.py, its schema section and its caption, edit
    nothing else, and the workflow probes, aggregates and draws the new kind."""
    tree = tmp_path / "repo"
    tree.mkdir()
    for name in ("Snakefile", "rules", "pyscripts", "layerprobe", "envs", "report", "config.yaml"):
        copy_ = shutil.copytree if (REPO / name).is_dir() else shutil.copy
        copy_(
            REPO / name,
            tree / name,
            **({"ignore": shutil.ignore_patterns("__pycache__")} if copy_ is shutil.copytree else {}),
        )
    (tree / "layerprobe" / "kinds" / "midpoint.py").write_text(MIDPOINT_MODULE.lstrip())
    (tree / "layerprobe" / "config" / "schema.yaml").write_text(yaml.safe_dump(schema_with_midpoint(), sort_keys=False))
    (tree / "report" / "midpoint.rst").write_text("Error with each unit part of the way back to its initialization.\n")
    config = yaml.safe_load((REPO / ".test" / "config.yaml").read_text())
    config["runs"] = config["runs"][:1]
    config.pop("sweeps")  # one run: nothing to sweep
    for kind in ("rerandomize", "interpolate", "criticality", "joint"):
        config["probes"][kind] = {"enabled": False}
    config["probes"]["midpoint"] = {"alpha": 0.25}
    config["engine"] = {"ops": "off"}
    work = tmp_path / "work"
    work.mkdir()
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--snakefile",
            str(tree / "Snakefile"),
            "--directory",
            str(work),
            "--configfile",
            str(work / "config.yaml"),
            "--cores",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = pd.read_csv(work / "results/tables/robustness.csv")
    assert set(rows["probe"]) == {"reinit", "midpoint"} and set(rows.loc[rows.probe == "midpoint", "alpha"]) == {0.25}
    assert pd.read_csv(work / "results/tables/units.csv")["midpoint_test_error"].between(0, 1).all()
    assert (work / "results/figures/fcn/midpoint_test.png").read_bytes().startswith(b"\x89PNG")
