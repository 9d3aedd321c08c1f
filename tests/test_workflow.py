"""The Snakemake workflow end to end on a tiny config, in a temporary folder.

One real run produces the tables, figures and report; dry runs after config edits check that
Snakemake reruns exactly the stale rules.
"""

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from layerprobe import aggregate
from layerprobe.kinds import criticality
from layerprobe.results import tables
from layerprobe.results.categories import CATEGORIES

from conftest import REPO

pytestmark = pytest.mark.skipif(shutil.which("snakemake") is None, reason="snakemake is not installed")

TINY = yaml.safe_load((REPO / ".test" / "config.yaml").read_text())
TINY["engine"] = {"ops": "off"}  # no compiler run here; tests/test_ops.py runs the build rule


def snakemake(folder: Path, config: dict, *args: str) -> subprocess.CompletedProcess:
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(folder),
        "--configfile",
        str(folder / "config.yaml"),
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def planned_jobs(result: subprocess.CompletedProcess) -> dict[str, int]:
    """Job name -> count from a dry run's 'Job stats' table."""
    assert result.returncode == 0, result.stdout + result.stderr
    text = result.stdout + result.stderr
    if "Nothing to be done" in text:
        return {}
    stats = text.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", stats, re.M)}


@pytest.fixture(scope="module")
def workflow(tmp_path_factory):
    folder = tmp_path_factory.mktemp("workflow")
    result = snakemake(folder, TINY, "--cores", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    return folder


def test_tables_are_complete(workflow):
    rob = tables.read_csv(workflow / "results/tables/robustness.csv", tables.ROBUSTNESS)
    assert set(rob["run"]) == {"fcn", "fcn-s1", "vgg"}
    fcn = rob[rob["run"] == "fcn"]
    # 2 units + fullmodel; checkpoints 0, 1, 3; 2 draws; 2 splits
    assert len(fcn[fcn.probe == "reinit"]) == 3 * 3 * 2 and len(fcn[fcn.probe == "rerandomize"]) == 3 * 2 * 2
    assert fcn["model"].iloc[0] == "fcn(depth=1,width=16)"
    final = fcn[(fcn.probe == "reinit") & (fcn.checkpoint == 3) & (fcn.split == "test")]
    assert final["error"].nunique() == 1 and (final["agreement"] == 1).all()
    assert (final["worse"] == 0).all() and (final["better"] == 0).all() and (final["increase"] == 0).all()
    intervals = ["worse", "better", "increase", "error_low", "error_high", "increase_low", "increase_high"]
    assert rob[intervals].notna().all().all()  # every row, criticality's subset rows too
    assert ((rob["error_low"] <= rob["error"]) & (rob["error"] <= rob["error_high"])).all()
    assert ((rob["increase_low"] <= rob["increase"]) & (rob["increase"] <= rob["increase_high"])).all()

    units = tables.read_csv(workflow / "results/tables/units.csv", aggregate.units_columns())
    assert units["unit"].tolist() == ["layer1", "layer2"] * 2 + ["stage1.block1", "fc1", "final_linear"]
    assert set(units["category"]) <= set(CATEGORIES)
    uncertain = units["category"] == "uncertain"
    assert (units.loc[uncertain, "category_between"].str.contains("/")).all()
    assert units.loc[~uncertain, "category_between"].isna().all()  # empty in the CSV
    rewound = units["rewind_checkpoint"].dropna()
    assert set(rewound) <= {0, 1} and (units["rewind_checkpoint_point"].dropna() <= 1).all()  # before the final 3
    dist = tables.read_csv(workflow / "results/tables/distances.csv", tables.DISTANCES)
    assert len(dist[dist.run == "vgg"]) == 3 * (3 + 2)  # units x (checkpoints + draws)

    log = pd.read_csv(workflow / "results/runs/fcn/train_log.csv")
    assert log["epoch"].tolist() == [0, 1, 2, 3]


def test_new_probe_kinds_are_in_the_tables(workflow):
    rob = tables.read_csv(workflow / "results/tables/robustness.csv", tables.ROBUSTNESS)
    fcn = rob[rob["run"] == "fcn"]
    assert len(fcn[fcn.probe == "interpolate"]) == 3 * 5 * 2  # (2 units + fullmodel) x 5 alphas x 2 splits
    critical = fcn[fcn.probe == "criticality"]
    assert len(critical) == 1 + 2 * 3 * 2 * 2 and set(critical["split"]) == {"train"} and set(critical["n"]) == {100}
    joint = fcn[fcn.probe == "joint"]
    assert {"both", "up to layer1", "up to layer2", "from layer1", "from layer2"} <= set(joint["unit"])
    assert set(joint.loc[joint.unit == "both", "members"]) == {"layer1 layer2"}

    grid = tables.read_csv(workflow / "results/tables/criticality.csv", criticality.COLUMNS)
    assert len(grid[grid.run == "fcn"]) == 2 * 3 * 2 and (grid["samples"] == 2).all()
    units = tables.read_csv(workflow / "results/tables/units.csv", aggregate.units_columns())
    chosen = grid[grid["chosen"].astype(str) == "True"]
    assert set(chosen["unit"]) <= set(units["unit"]) and units["network_criticality"].notna().all()
    refined = tables.read_csv(workflow / "results/tables/criticality_refined.csv", criticality.REFINED_COLUMNS)
    assert len(refined[refined.run == "fcn"]) == 2 * 3 and (refined["evaluated"] >= 2).all()
    assert len(fcn[fcn.probe == "criticality_search"]) == 2 * (refined.loc[refined.run == "fcn", "evaluated"] - 2).sum()
    assert units["network_criticality_grid"].notna().all()
    # a refined σ* is at least the grid's largest feasible σ, so μ refined ≤ μ on the grid
    assert (units["criticality"] <= units["criticality_grid"]).all()


def test_configurations_across_seeds(workflow):
    """fcn and fcn-s1 differ only in seed: configuration fcn, two seeds; vgg alone: one seed, no spread."""
    units = tables.read_csv(workflow / "results/tables/units.csv", aggregate.units_columns())
    table = pd.read_csv(workflow / "results/tables/configurations.csv")
    assert table[["configuration", "unit", "runs", "seeds"]].values.tolist() == [
        ["fcn", "layer1", "fcn fcn-s1", 2],
        ["fcn", "layer2", "fcn fcn-s1", 2],
        ["vgg", "stage1.block1", "vgg", 1],
        ["vgg", "fc1", "vgg", 1],
        ["vgg", "final_linear", "vgg", 1],
    ]
    for unit in ("layer1", "layer2"):
        row = table[(table.configuration == "fcn") & (table.unit == unit)].iloc[0]
        errors = units.loc[units.unit == unit, "reinit_test_error"].astype(float).tolist()
        assert row["reinit_test_error_mean"] == pytest.approx(sum(errors) / 2, abs=1e-15)
        assert row["reinit_test_error_std"] == pytest.approx(abs(errors[0] - errors[1]) / 2**0.5, abs=1e-15)
        assert row[[f"seeds_{c}" for c in ("robust", "intermediate", "critical", "uncertain")]].sum() == 2
    vgg = table[table.configuration == "vgg"]
    assert vgg["reinit_test_error_std"].isna().all() and vgg["reinit_test_error_low"].isna().all()
    summary = (workflow / "results/summary.rst").read_text(encoding="utf-8")
    assert summary.count(".. list-table:: ") == 2 and "fcn: 2 seeds (fcn, fcn-s1)" in summary


def test_figures_logs_and_benchmarks_exist(workflow):
    for folder, stems in {
        "configurations/fcn": ("robustness_test", "robustness_train"),
        "configurations/vgg": ("robustness_test", "robustness_train"),
        "sweeps/epochs": ("categories", "robustness_test", "robustness_train"),
    }.items():
        for stem in stems:
            png = workflow / f"results/figures/{folder}/{stem}.png"
            assert png.read_bytes().startswith(b"\x89PNG") and png.with_suffix(".pdf").stat().st_size > 0
    for run in ("fcn", "fcn-s1", "vgg"):
        for stem in (
            "robustness_test",
            "robustness_train",
            "distance_l2",
            "distance_linf",
            "distance_l2_rel_init",
            "interpolation_test",
            "interpolation_train",
            "criticality",
            "joint_test",
            "joint_train",
        ):
            png = workflow / f"results/figures/{run}/{stem}.png"
            assert png.read_bytes().startswith(b"\x89PNG") and png.with_suffix(".pdf").stat().st_size > 0
        assert (workflow / f"logs/train/{run}.log").stat().st_size > 0
        assert (workflow / f"results/benchmarks/probe/{run}.tsv").exists()
    assert not [p for p in workflow.rglob(".*.tmp*")]


def test_report(workflow):
    result = snakemake(workflow, TINY, "--report", str(workflow / "report.html"))
    assert result.returncode == 0, result.stderr
    assert (workflow / "report.html").stat().st_size > 10_000
    # It opens with the summary: one table per configuration, before the description of the workflow.
    html = (workflow / "report.html").read_text(encoding="utf-8")
    opening = html[html.index("var workflow_desc") :]
    tables_first = [opening.index(text) for text in ("fcn: 2 seeds (fcn, fcn-s1)", "vgg: 1 seed (vgg)", "five steps")]
    assert tables_first == sorted(tables_first)


def test_nothing_to_do_when_up_to_date(workflow):
    assert planned_jobs(snakemake(workflow, TINY, "-n")) == {}


def test_probe_change_reruns_probes_aggregation_and_figures_not_training(workflow):
    config = yaml.safe_load(yaml.safe_dump(TINY))
    config["probes"]["rerandomize"]["draws"] = 3
    jobs = planned_jobs(snakemake(workflow, config, "-n"))
    assert jobs.get("probe") == 3 and jobs.get("aggregate") == 1 and jobs.get("robustness_figure") == 6
    assert jobs.get("configuration_robustness_figure") == 4 and jobs.get("sweep_robustness_figure") == 2
    assert "train" not in jobs and "data" not in jobs


def test_category_change_reruns_probes_only_for_the_joint_robust_set(workflow):
    config = yaml.safe_load(yaml.safe_dump(TINY))
    config["categories"] = {"robust_max_increase": 0.05}
    jobs = planned_jobs(snakemake(workflow, config, "-n"))
    assert jobs.get("probe") == 3 and jobs.get("aggregate") == 1 and "train" not in jobs  # the robust set may change


def test_feasibility_change_reruns_the_probes_not_training(workflow):
    config = yaml.safe_load(yaml.safe_dump(TINY))
    config["probes"]["criticality"]["feasibility"] = {"tolerance": "absolute", "measure": "error", "value": 0.5}
    jobs = planned_jobs(snakemake(workflow, config, "-n"))  # the σ search applies it while probing
    assert jobs.get("probe") == 3 and jobs.get("aggregate") == 1 and jobs.get("criticality_figure") == 3
    assert not {"train", "data"} & set(jobs)


def test_configuration_name_change_reruns_no_training_or_probe(workflow):
    config = yaml.safe_load(yaml.safe_dump(TINY))
    for fcn in config["runs"][:2]:
        fcn["configuration"] = "tiny-fcn"
    jobs = planned_jobs(snakemake(workflow, config, "-n"))
    assert jobs.get("aggregate") == 1 and jobs.get("configuration_robustness_figure") == 4
    assert not {"train", "probe", "data"} & set(jobs)


def test_training_change_retrains_that_run_only(workflow):
    config = yaml.safe_load(yaml.safe_dump(TINY))
    config["runs"][2]["train"]["lr"] = 0.02  # vgg
    jobs = planned_jobs(snakemake(workflow, config, "-n"))
    assert jobs.get("train") == 1 and jobs.get("probe") == 1 and "data" not in jobs


def test_rerunning_everything_gives_identical_tables_and_checkpoints(workflow):
    names = (
        "robustness.csv",
        "distances.csv",
        "criticality.csv",
        "criticality_refined.csv",
        "units.csv",
        "configurations.csv",
    )
    before = {name: (workflow / "results/tables" / name).read_bytes() for name in names}
    manifests = {p: p.read_bytes() for p in workflow.glob("results/runs/*/checkpoints/manifest.json")}
    result = snakemake(workflow, TINY, "--cores", "2", "--forceall")
    assert result.returncode == 0, result.stderr
    assert all((workflow / "results/tables" / name).read_bytes() == before[name] for name in names)
    # Retrained from scratch, the checkpoints are the same bytes: their SHA-256s in the manifests agree.
    assert len(manifests) == len(TINY["runs"]) and all(path.read_bytes() == text for path, text in manifests.items())


def test_bad_config_stops_before_any_work(tmp_path):
    config = yaml.safe_load(yaml.safe_dump(TINY))
    config["runs"][0]["train"]["learning_rate"] = 0.1
    result = snakemake(tmp_path, config, "--cores", "1")
    assert result.returncode != 0
    assert "runs[0].train" in result.stderr and "'learning_rate' was unexpected" in result.stderr
    assert not (tmp_path / "results").exists()


# --- Probe work in shards ---------------------------------------------------------------------------------

SHARDED = {**TINY, "resources": {"probe": {"shards": 2}}}


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sharded")
    result = snakemake(folder, SHARDED, "--cores", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    return folder


def test_sharded_tables_equal_the_unsharded_ones(workflow, sharded):
    """Two runs, every probe kind, 7 shards a run, merged back: the same bytes as one probe job a run."""
    assert len(list((sharded / "results/runs/fcn/probes/shards").glob("*.csv"))) == 7
    for name in (
        "robustness.csv",
        "distances.csv",
        "criticality.csv",
        "criticality_refined.csv",
        "units.csv",
        "configurations.csv",
    ):
        assert (sharded / "results/tables" / name).read_bytes() == (workflow / "results/tables" / name).read_bytes()


def test_editing_one_kind_reruns_only_its_shards(sharded):
    config = yaml.safe_load(yaml.safe_dump(SHARDED))
    config["probes"]["interpolate"]["alphas"] = 3
    result = snakemake(sharded, config, "-n")
    jobs = planned_jobs(result)
    assert jobs["probe_shard"] == 6 and jobs["merge_shards"] == 3 and "train" not in jobs  # interpolate.{0,1} x 3 runs
    rerun = set(re.findall(r"output: results/runs/\w+/probes/shards/([\w.+-]+)\.csv", result.stdout))
    assert rerun == {"interpolate.0", "interpolate.1"}


def test_a_config_file_is_complete_on_its_own(tmp_path):
    """With --configfile, keys the file leaves out take the schema's defaults, not config.yaml's."""
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({**TINY, "probes": {"criticality": {"enabled": False}}}))
    mine = {"runs": TINY["runs"][:1], "engine": {"ops": "off"}}  # no probes section: every probe, by default
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(mine))
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(tmp_path),
        "--configfile",
        str(tmp_path / "mine.yaml"),
        "-n",
    ]
    jobs = planned_jobs(subprocess.run(command, capture_output=True, text=True, timeout=300))
    assert jobs["train"] == 1 and jobs["criticality_figure"] == 1  # config.yaml's criticality: off is not inherited


def test_without_a_config_file_the_embedded_default_runs(tmp_path):
    (tmp_path / "config.yaml").write_text((REPO / "config.yaml").read_text())
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(tmp_path),
        "-n",
    ]
    jobs = planned_jobs(subprocess.run(command, capture_output=True, text=True, timeout=300))
    assert jobs["train"] == 4 and jobs["criticality_figure"] == 4  # fcn, vgg, the LM and the ViT


def test_nested_command_line_values_are_typed_by_the_schema(workflow):
    """--config hands nested values over as strings; they are read as the integers, booleans, floats and lists
    the schema wants (the same values as the config file's: nothing to do; others: a rerun)."""
    same = [
        "probes={rerandomize: {enabled: true, draws: 2, seed: 0}, interpolate: {alphas: 5}}",
        "categories={robust_max_increase: 0.02}",
    ]
    assert planned_jobs(snakemake(workflow, TINY, "-n", "--config", *same)) == {}
    other = ["probes={rerandomize: {enabled: true, draws: 6, seed: 0}, criticality: {sigmas: [0.05, 0.4]}}"]
    jobs = planned_jobs(snakemake(workflow, TINY, "-n", "--config", *other))
    assert jobs["probe"] == 3 and "train" not in jobs
    off = planned_jobs(snakemake(workflow, TINY, "-n", "--config", "probes={criticality: {enabled: false}}"))
    assert off["probe"] == 3 and "criticality_figure" not in off
    bad = snakemake(workflow, TINY, "-n", "--config", "probes={rerandomize: {draws: six}}")
    assert bad.returncode != 0 and "probes.rerandomize.draws: 'six' is not of type 'integer'" in bad.stderr


def test_lint_is_clean():
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint", "--snakefile", str(REPO / "Snakefile"), "--directory", str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and "Congratulations" in result.stdout + result.stderr, result.stdout + result.stderr


# --- Profiles and resources ------------------------------------------------------------------------


def planned_resources(result: subprocess.CompletedProcess) -> dict[str, dict[str, str]]:
    """Rule name -> its jobs' resources, from a dry run's job listing."""
    assert result.returncode == 0, result.stdout + result.stderr
    text, resources = result.stdout + result.stderr, {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", text):
        name = re.match(r"(?:local)?rule (\w+):", block)
        found = re.search(r"^\s+resources: (.*)$", block, re.M)
        if name and found:
            resources[name.group(1)] = dict(item.split("=", 1) for item in found.group(1).split(", "))
    return resources


def test_profiles_are_yaml_with_known_options():
    from snakemake.cli import get_argument_parser

    options = {action.dest for action in get_argument_parser()._actions}
    for name in ("default", "local", "slurm"):
        profile = yaml.safe_load((REPO / "profiles" / name / "config.yaml").read_text())
        unknown = [key for key in profile if key.replace("-", "_") not in options]
        assert not unknown, f"profiles/{name}: unknown options {unknown}"
    slurm = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    assert slurm["executor"] == "slurm" and slurm["set-resources"]["train"]["gpu"] == 1
    assert slurm["set-resources"]["probe"]["gpu"] == 1
    local = yaml.safe_load((REPO / "profiles/local/config.yaml").read_text())
    assert local["resources"] == {"gpu": 1}


def test_local_profile_plans_the_default_config_with_its_resources(tmp_path):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["resources"] = {"train": {"runtime": 30, "mem_mb": 2000}}
    result = snakemake(tmp_path, config, "-n", "--profile", str(REPO / "profiles" / "local"))
    assert planned_jobs(result)["train"] == 4  # fcn, vgg, the LM and the ViT
    resources = planned_resources(result)
    assert resources["train"]["runtime"] == "30" and resources["train"]["mem_mb"] == "2000"
    assert resources["probe"]["runtime"] == "240" and resources["data"]["mem_mb"] == "4096"
    gpus = "1" if torch.cuda.is_available() else "0"  # device auto: a GPU when the planning machine has one
    assert resources["train"]["gpu"] == gpus and resources["probe"]["gpu"] == gpus


def test_a_cuda_run_asks_for_a_gpu_and_a_cpu_run_for_none(tmp_path):
    config = yaml.safe_load(yaml.safe_dump(TINY))
    for fcn in config["runs"][:2]:  # both seeds of configuration fcn
        fcn["train"]["device"] = "cuda"
    config["engine"] = {"device": "cpu"}
    result = snakemake(tmp_path, config, "-n", "--cores", "1", "-p")
    gpu = {}
    for block in re.split(r"\n(?=rule \w+:)", result.stdout + result.stderr):
        job = re.match(r"rule (train|probe):.*?wildcards: run=([\w.-]+).*?resources: ([^\n]*)", block, re.S)
        if job:
            gpu[job.group(1), job.group(2)] = dict(i.split("=", 1) for i in job.group(3).split(", "))["gpu"]
    assert gpu[("train", "fcn")] == gpu[("train", "fcn-s1")] == "1" and gpu[("train", "vgg")] == "0"
    assert gpu[("probe", "fcn")] == gpu[("probe", "vgg")] == "0"


@pytest.mark.skipif(
    importlib.util.find_spec("snakemake_executor_plugin_slurm") is None,
    reason="snakemake-executor-plugin-slurm is not installed",
)
def test_slurm_profile_dry_run_gives_training_and_probing_a_gpu(tmp_path):
    result = snakemake(tmp_path, TINY, "-n", "--profile", str(REPO / "profiles" / "slurm"))
    resources = planned_resources(result)
    assert resources["train"]["gpu"] == "1" and resources["probe"]["gpu"] == "1"
    assert resources["train"]["runtime"] == "720" and resources["aggregate"]["mem_mb"] == "4096"


def test_aggregation_and_figures_are_local_rules(tmp_path):
    """They run where Snakemake runs: a cluster run submits no batch job per table or figure, and
    downloads run where there is internet."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

    (tmp_path / "config.yaml").write_text(yaml.safe_dump(TINY))
    with SnakemakeApi(OutputSettings()) as api:
        parsed = api.workflow(
            resource_settings=ResourceSettings(),
            snakefile=REPO / "Snakefile",
            workdir=tmp_path,
            config_settings=ConfigSettings(configfiles=[tmp_path / "config.yaml"]),
        )
        local = set(parsed._workflow._localrules)  # the set Snakemake's executors consult
    figures = {
        f"{name}_figure"
        for name in ("robustness", "distance", "interpolation", "criticality", "joint")
        + ("configuration_robustness", "sweep_categories", "sweep_robustness")
    }
    # fetch_revision downloads on the submit host; released only reads and hashes files
    assert {"download", "fetch_revision", "released", "aggregate", *figures} == local


def test_resources_change_reruns_nothing(workflow):
    config = yaml.safe_load(yaml.safe_dump(TINY))
    config["resources"] = {"train": {"runtime": 5, "gpu": 0}, "probe": {"mem_mb": 100}}
    assert planned_jobs(snakemake(workflow, config, "-n")) == {}


def test_recipe_change_retrains(workflow):
    config = yaml.safe_load(yaml.safe_dump(TINY))
    config["runs"][2]["train"]["recipe"] = "cifar-sgd"  # vgg
    jobs = planned_jobs(snakemake(workflow, config, "-n"))
    assert jobs.get("train") == 1 and jobs.get("probe") == 1
