"""configs/*.yaml: each validates and dry-runs with the jobs its experiments need."""

import importlib.util

import pytest
import yaml

from layerprobe import shards
from layerprobe.config import validate

from conftest import REPO, SCHEMA
from test_workflow import planned_jobs, planned_resources, snakemake

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def load(name: str) -> dict:
    return yaml.safe_load((REPO / "configs" / name).read_text())


def with_imagenet_folder(config: dict, folder) -> dict:
    (folder / "train").mkdir()
    (folder / "val").mkdir()
    config["datasets"]["imagenet"]["root"] = str(folder)
    return config


def test_every_config_is_covered():
    assert [c.name for c in CONFIGS] == [
        "paper-cifar10.yaml",
        "paper-imagenet.yaml",
        "paper-lm1b.yaml",
        "paper-mnist.yaml",
        "paper-vit.yaml",
        "pythia-160m.yaml",
        "pythia-suite.yaml",
    ]


def test_mnist_config_is_f1_f2_and_a_sweep_with_seeds(tmp_path):
    config = validate(load("paper-mnist.yaml"), SCHEMA)
    runs = {r["name"]: r for r in config["runs"]}
    f1 = [r for r in runs.values() if r["model"] == {"name": "fcn", "depth": 3, "width": 256}]
    assert sorted(r["seed"] for r in f1) == [0, 1, 2]
    assert all(r["checkpoints"] == [0, 1, 2, 3, 8, 40, 90, 100] and r["dataset"] == "mnist" for r in runs.values())
    assert all(r["train"]["recipe"] == "mnist-sgd" and r["train"]["epochs"] == 100 for r in runs.values())
    shapes = {(r["model"]["depth"], r["model"]["width"]) for r in runs.values()}
    assert {(d, w) for d in (1, 3, 5) for w in (64, 256, 1024)} <= shapes
    jobs = planned_jobs(snakemake(tmp_path, config, "-n"))
    n = len(runs)
    assert {k: jobs[k] for k in ("download", "data", "train", "probe", "aggregate")} == {
        "download": 4,
        "data": 1,
        "train": n,
        "probe": n,
        "aggregate": 1,
    }
    assert jobs["criticality_figure"] == n and jobs["interpolation_figure"] == 2 * n
    # Nine configurations (3x256 and 5x256 with three seeds) and the depth x width sweep (F5).
    assert jobs["configuration_robustness_figure"] == 2 * 9
    assert (jobs["sweep_categories_figure"], jobs["sweep_robustness_figure"]) == (1, 2)


def test_cifar10_config_is_f3_and_the_depth_sweep(tmp_path):
    config = validate(load("paper-cifar10.yaml"), SCHEMA)
    models = {r["model"]["name"] for r in config["runs"]}
    assert models == {"vgg11", "vgg13", "vgg16", "vgg19", "resnet18", "resnet34", "resnet50"}
    assert all(r["checkpoints"] == [0, 1, 10, 100] and r["train"]["recipe"] == "cifar-sgd" for r in config["runs"])
    assert all(r["train"]["augment"] == {"crop_padding": 4, "flip": True} for r in config["runs"])
    assert len({r["seed"] for r in config["runs"] if r["model"]["name"] == "vgg11"}) >= 2
    jobs = planned_jobs(snakemake(tmp_path, config, "-n"))
    n = len(config["runs"])
    assert (jobs["download"], jobs["data"], jobs["train"], jobs["merge_shards"]) == (1, 1, n, n)
    # The VGG and ResNet depth sweeps (F6-F7), over seven configurations.
    assert jobs["configuration_robustness_figure"] == 2 * 7
    assert (jobs["sweep_categories_figure"], jobs["sweep_robustness_figure"]) == (2, 4)
    # Each run's probe work in shards (resources.probe.shard_macs): several probe jobs per run.
    planned = [len(shards.plan(run, config)) for run in config["runs"]]
    assert jobs["probe_shard"] == sum(planned) and min(planned) >= 4 and "probe" not in jobs


@pytest.mark.parametrize(
    "name, model, dataset, units",
    [
        ("paper-lm1b.yaml", "transformer_lm", "lm1b", 8),  # embed, block0..5, head
        ("paper-vit.yaml", "vit", "cifar10", 10),  # embed, block0..7, head
    ],
)
def test_transformer_configs_are_f8_f9_with_blocks_and_sublayers(tmp_path, name, model, dataset, units):
    config = validate(load(name), SCHEMA)
    assert {r["model"]["name"] for r in config["runs"]} == {model}
    assert {r["dataset"] for r in config["runs"]} == {dataset}
    assert all(r["train"]["recipe"] == "transformer-adamw" for r in config["runs"])
    assert all(r["train"]["optimizer"] == "adamw" and r["train"]["schedule"] == "cosine" for r in config["runs"])
    assert {r["model"].get("units", "blocks") for r in config["runs"]} == {"blocks", "sublayers"}
    blocks = next(r for r in config["runs"] if r["model"].get("units", "blocks") == "blocks")
    assert len(shards.plan(blocks, config)) >= 1
    from layerprobe.config import datasets, shapes

    shape = datasets.input_shape(config["datasets"][dataset])
    assert len(shapes.units(blocks["model"], shape, config["datasets"][dataset]["num_classes"])) == units
    jobs = planned_jobs(snakemake(tmp_path, config, "-n"))
    n = len(config["runs"])
    assert (jobs["download"], jobs["data"], jobs["train"]) == (1, 1, n)
    assert jobs["configuration_robustness_figure"] == 2 * 2  # blocks (two seeds) and sublayers


def test_imagenet_config_requires_its_folder_and_plans_resnet50(tmp_path):
    raw = load("paper-imagenet.yaml")
    with pytest.raises(ValueError, match="datasets.imagenet.root: run 'resnet50-s0' uses imagenet"):
        validate(raw, SCHEMA)
    config = with_imagenet_folder(raw, tmp_path)
    validated = validate(config, SCHEMA)
    assert {r["model"]["name"] for r in validated["runs"]} == {"resnet50"}
    assert all(r["model"]["stem"] == "imagenet" and r["train"]["recipe"] == "imagenet-sgd" for r in validated["runs"])
    result = snakemake(tmp_path, config, "-n")
    jobs = planned_jobs(result)
    n = len(config["runs"])
    planned = sum(len(shards.plan(run, validated)) for run in validated["runs"])
    assert "download" not in jobs and (jobs["data"], jobs["train"], jobs["merge_shards"]) == (1, n, n)
    assert jobs["probe_shard"] == planned > 2 * n
    # Without the folder the workflow stops before planning anything, naming the key.
    raw["datasets"]["imagenet"]["root"] = None
    refused = snakemake(tmp_path, raw, "-n")
    assert refused.returncode != 0 and "datasets.imagenet.root" in refused.stdout + refused.stderr


def test_imagenet_folder_given_on_the_command_line_as_the_readme_says(tmp_path):
    (tmp_path / "imagenet" / "train").mkdir(parents=True)
    (tmp_path / "imagenet" / "val").mkdir()
    result = snakemake(
        tmp_path,
        load("paper-imagenet.yaml"),
        "-n",
        "--config",
        f"datasets={{imagenet: {{root: {tmp_path / 'imagenet'}}}}}",
    )
    assert planned_jobs(result)["data"] == 1


@pytest.mark.skipif(
    importlib.util.find_spec("snakemake_executor_plugin_slurm") is None,
    reason="snakemake-executor-plugin-slurm is not installed",
)
def test_on_slurm_each_cifar10_shard_is_its_own_gpu_job(tmp_path):
    config = load("paper-cifar10.yaml")
    result = snakemake(tmp_path, config, "-n", "--profile", str(REPO / "profiles" / "slurm"))
    jobs, resources = planned_jobs(result), planned_resources(result)
    validated = validate(config, SCHEMA)
    per_run = {run["name"]: len(shards.plan(run, validated)) for run in validated["runs"]}
    assert jobs["probe_shard"] == sum(per_run.values()) and min(per_run.values()) >= 4
    assert per_run["resnet50-s0"] > per_run["vgg11-s0"]  # the costlier net, in more shards
    assert resources["probe_shard"]["gpu"] == "1" and resources["merge_shards"].get("gpu", "0") == "0"


def test_pythia_160m_config_fetches_its_revisions_and_probes_every_layer(tmp_path):
    config = validate(load("pythia-160m.yaml"), SCHEMA)
    (run,) = config["runs"]
    steps = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000, 4000, 8000, 16000, 32000, 64000, 143000]
    assert run["released"]["repo"] == "EleutherAI/pythia-160m" and run["released"]["revisions"] == [
        f"step{s}" for s in steps
    ]
    assert all(config["probes"][k]["enabled"] for k in ("reinit", "rerandomize", "interpolate", "joint"))
    assert config["datasets"]["wikitext103"]["tokenizer"] == {
        "repo": "EleutherAI/pythia-160m",
        "revision": "step143000",
    }
    jobs = planned_jobs(snakemake(tmp_path, config, "-n"))
    # 19 revisions fetched once each (the tokenizer's is one of them), WikiText's archive, no training
    assert {k: jobs.get(k) for k in ("fetch_revision", "download", "data", "released", "probe", "train")} == {
        "fetch_revision": 19,
        "download": 1,
        "data": 1,
        "released": 1,
        "probe": 1,
        "train": None,
    }


def test_pythia_suite_config_is_a_sweep_over_model_size(tmp_path):
    from layerprobe.config import sweeps

    config = validate(load("pythia-suite.yaml"), SCHEMA)
    sizes = {r["name"]: sweeps.axis_value(r["released"]["repo"]) for r in config["runs"]}
    assert sizes == {
        "pythia-70m": 7e7,
        "pythia-160m": 1.6e8,
        "pythia-410m": 4.1e8,
        "pythia-1b": 1e9,
        "pythia-1.4b": 1.4e9,
    }
    assert len({tuple(r["released"]["revisions"]) for r in config["runs"]}) == 1  # the same steps for every size
    jobs = planned_jobs(snakemake(tmp_path, config, "-n"))
    n, revisions = len(config["runs"]), len(config["runs"][0]["released"]["revisions"])
    assert (jobs["fetch_revision"], jobs["released"], jobs["probe"]) == (n * revisions, n, n)
    assert (jobs["sweep_categories_figure"], jobs["sweep_robustness_figure"]) == (1, 1)  # the test split only
