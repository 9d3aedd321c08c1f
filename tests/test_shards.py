"""Probe work in shards: the unit shapes the plan rests on, the plan, and shards merged back bit for bit."""

import copy

import pytest
import torch
import yaml
from torch import nn

from layerprobe import kinds, models, shards, study
from layerprobe.config import section, shapes, validate
from layerprobe.models.families import resnet, vgg
from layerprobe.models.units import inventory
from layerprobe.results import tables

from conftest import REPO, SCHEMA, model_factory, tiny_run


def counted_macs(model: nn.Module, input_shape) -> dict[str, int]:
    """Multiply-adds of one example through each unit, counted on the built model's linear and conv layers."""
    macs = {name: 0 for name in model.unit_names}

    def hook(name):
        def count(module, inputs, output):
            if isinstance(module, nn.Linear):
                macs[name] += module.in_features * module.out_features
            else:
                kernel = module.kernel_size[0] * module.kernel_size[1]
                macs[name] += output[0].numel() * module.in_channels // module.groups * kernel

        return count

    handles = [
        m.register_forward_hook(hook(name))
        for name in model.unit_names
        for m in model.unit(name).modules()
        if isinstance(m, (nn.Linear, nn.Conv2d))
    ]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *input_shape))
    for h in handles:
        h.remove()
    return macs


@pytest.mark.parametrize(
    "spec, shape",
    [
        ({"name": "fcn", "depth": 3, "width": 256}, (1, 8, 8)),
        ({"name": "fcn", "depth": 1, "width": 16}, (1, 28, 28)),
        ({"name": "vgg", "stages": [[32], [64, 64]], "fc": [128, 128], "batch_norm": False}, (1, 8, 8)),
        ({"name": "vgg", "stages": [[4]], "fc": [8], "batch_norm": True}, (3, 9, 7)),
        ({"name": "vgg11", "batch_norm": True, "fc": [512, 512]}, (3, 32, 32)),
        ({"name": "vgg19", "batch_norm": False, "fc": [64]}, (3, 32, 32)),
        ({"name": "resnet18", "stem": "cifar"}, (3, 32, 32)),
        ({"name": "resnet34", "stem": "imagenet"}, (3, 64, 64)),
        ({"name": "resnet50", "stem": "cifar"}, (3, 32, 32)),
        ({"name": "resnet50", "stem": "imagenet"}, (3, 65, 65)),
    ],
)
def test_shapes_name_the_built_models_units_and_count_their_multiply_adds(spec, shape):
    model = models.build(spec, shape, 10)
    planned = shapes.units(spec, shape, 10)
    assert [u.name for u in planned] == [u.name for u in inventory(model)]
    assert {u.name: u.macs for u in planned} == counted_macs(model, shape)


def test_shapes_follow_the_families_own_tables():
    assert shapes.VGG_STAGES == vgg.VGG_STAGES
    assert {d: counts for d, (_, counts) in shapes.RESNET_BLOCKS.items()} == {
        d: counts for d, (_, counts) in resnet.RESNET_BLOCKS.items()
    }
    assert shapes.units({"name": "transformer"}, (1, 8, 8), 10) is None  # unknown: planned without shapes


# --- The plan ----------------------------------------------------------------------------------------


def tiny_config(**probe) -> dict:
    raw = yaml.safe_load((REPO / ".test" / "config.yaml").read_text())
    raw["resources"] = {"probe": probe}
    return validate(raw, SCHEMA)


def every_variant(run: dict, config: dict):
    """Every variant the unsharded run describes (the joint robust set aside), with its kind."""
    context = kinds.Context(
        units=shapes.units(run["model"], (1, 8, 8), 10),
        epochs=[0, *run["checkpoints"], run["train"]["epochs"]],
        draw_seeds=[1, 2],
        settings=config["probes"],
        run_seed=run["seed"],
        num_classes=10,
        categories=config["categories"],
        joint_groups=run["joint_groups"],
        rows=None,
    )
    return [v for k in kinds.enabled(config["probes"]) for v in k.variants(context)]


def test_one_shard_means_one_job():
    config = tiny_config()
    assert all(shards.plan(run, config) == [] for run in config["runs"])


def test_shards_split_each_kind_by_engine_groups_and_cover_every_variant_once():
    config = tiny_config(shards=2)
    for run in config["runs"]:
        plan = shards.plan(run, config)
        names = [s.name for s in plan]
        assert names == [
            "reinit+rerandomize.0",
            "reinit+rerandomize.1",
            "interpolate.0",
            "interpolate.1",
            "criticality.0",
            "criticality.1",
            "joint.0",
        ]  # joint (with its robust set) stays whole
        for variant in every_variant(run, config):
            holding = [s.name for s in plan if shards.selects(s.spec(), variant)]
            assert len(holding) == 1, (variant, holding)
        assert plan[-1].groups is None and [s.name for s in shards.reads(plan[-1], plan)] == names[:2]
        costs = [s.macs for s in plan[:2]]
        assert min(costs) > 0


def test_shard_macs_caps_the_estimated_cost_per_job():
    whole = sum(s.macs for s in shards.plan(tiny_config()["runs"][-1], tiny_config(shards=1, shard_macs=1e30)))
    config = tiny_config(shard_macs=whole / 20)
    plan = shards.plan(config["runs"][-1], config)  # the VGG
    assert len(plan) > 7
    splittable = [s for s in plan if s.groups is not None and len(s.groups) > 1]
    assert all(s.macs <= whole / 20 for s in splittable)


def test_a_shard_depends_only_on_its_own_kinds_settings():
    config = tiny_config(shards=2)
    plan = {s.name: s for s in shards.plan(config["runs"][0], config)}
    edited = copy.deepcopy(config["probes"])
    edited["interpolate"]["alphas"] = 7
    for name, shard in plan.items():
        same = shards.job_settings(shard, config["probes"]) == shards.job_settings(shard, edited)
        assert same == (not name.startswith("interpolate")), name
    # the σ search applies the feasibility while probing: editing it reruns the criticality shards
    assert {"feasibility", "search"} <= set(shards.job_settings(plan["criticality.0"], config["probes"])["criticality"])
    assert "rerandomize" in shards.job_settings(plan["joint.0"], config["probes"])  # its sets are re-drawn too


# --- Shards merged back: the unsharded table, bit for bit -------------------------------------------------


RELATIVE_LOSS = {"measure": "loss", "tolerance": "relative", "value": 1.5}
ABSOLUTE_ERROR = {"measure": "error", "tolerance": "absolute", "value": 0.3}


@pytest.mark.parametrize(
    "model, feasibility",
    [(None, RELATIVE_LOSS), ({"name": "vgg", "stages": [[4]], "fc": [8], "batch_norm": True}, ABSOLUTE_ERROR)],
)
def test_merged_shards_equal_the_unsharded_run(tmp_path, digits, model, feasibility):
    """With a VGG, whose losses change in their last bits when the engine batches variants differently; the σ
    search runs in every criticality shard on its own units (relative to the baseline another shard holds)."""
    from layerprobe.config import checkpoint_epochs  # noqa: F401  (the run's epochs come from its training)
    from layerprobe.training.checkpoints import MANIFEST, load_all
    from layerprobe.training.loop import train

    run = tiny_run(**(model or {}))
    factory = model_factory(run, digits)
    torch.set_num_threads(1)
    train(factory, digits, run["train"], run["seed"], tmp_path, run["checkpoints"], progress=False)
    states = load_all(tmp_path / MANIFEST)
    raw = {
        "runs": [
            {
                **run,
                "train": {"epochs": 4, "batch_size": 64, "lr": 0.05, "lr_milestones": [3]},
                "joint_groups": {"pair": [inventory(factory())[0].name, inventory(factory())[-1].name]},
            }
        ],
        "probes": {
            "rerandomize": {"draws": 2},
            "interpolate": {"alphas": 3},
            "criticality": {
                "alphas": 2,
                "sigmas": [0.1],
                "samples": 2,
                "subset": 60,
                "feasibility": feasibility,
                "search": {"tolerance": 0.3},
            },
            "joint": {"checkpoints": [0, 4]},
        },
        "resources": {"probe": {"shards": 3}},
    }
    config = validate(raw, SCHEMA)
    run, probes = config["runs"][0], config["probes"]
    common = dict(
        categories=config["categories"],
        joint_groups=run["joint_groups"],
        device="cpu",
        progress=False,
        transform=digits.normalize,
    )
    data = {name: digits.raw(name) for name in ("test", "train")}
    columns = study.run_columns(run)
    whole = study.probe_run(factory, states, data, kinds.job_settings(probes), columns, 10, **common)
    plan = shards.plan(run, config)
    assert len(plan) >= 6
    parts = {}
    for shard in plan:  # in the plan's order: a shard's earlier shards come before it
        earlier = [r for other in shards.reads(shard, plan) for r in parts[other.name].to_dict("records")]
        parts[shard.name] = study.probe_run(
            factory,
            states,
            data,
            shards.job_settings(shard, probes),
            columns,
            10,
            shard=shard.spec(),
            earlier=earlier,
            **common,
        )["robustness"]
    for name, part in parts.items():  # round trip through the files the shard jobs write
        tables.write_csv(part, tmp_path / f"{name}.csv")
    read = [tables.read_csv(tmp_path / f"{name}.csv", shards.ORDER + tables.ROBUSTNESS) for name in parts]
    merged = study.merge_run(factory, states, read, kinds.job_settings(probes), columns, 10)
    for name in ("robustness", "distances", "inventory"):
        assert merged[name].to_csv(index=False) == whole[name].to_csv(index=False), name
    probes_ = {"reinit", "rerandomize", "interpolate", "criticality", "criticality_search", "joint"}
    assert set(merged["robustness"]["probe"]) == probes_
    searched = [name for name, part in parts.items() if (part["probe"] == "criticality_search").any()]
    assert len(searched) >= 2 and all(name.startswith("criticality.") for name in searched)
    assert (parts["criticality.1"]["unit"] != "fullmodel").all()  # its baseline is criticality.0's row


def test_merge_refuses_rows_of_a_kind_the_settings_do_not_enable():
    part = tables.frame(
        [{"probe": "midpoint", "unit": "a", "variant": 0, "split_index": 0}], shards.ORDER + tables.ROBUSTNESS
    )
    with pytest.raises(ValueError, match=r"probe kind\(s\) \['midpoint'\]"):
        shards.merge([part], section("probes"), tables.ROBUSTNESS)
