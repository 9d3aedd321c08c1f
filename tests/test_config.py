"""The config schema: defaults filled, and every kind of bad input named before any work."""

import pytest
import yaml

from layerprobe.config import ConfigError, validate
from layerprobe.validation.settings import validated

from conftest import REPO, SCHEMA


def error_of(config) -> str:
    """The error of the pass the Snakefile runs: the schema, the cross-checks, the kinds' checks."""
    with pytest.raises(ConfigError) as info:
        validated(config, SCHEMA)
    return str(info.value)


def test_default_config_is_valid_and_complete():
    config = validate(yaml.safe_load((REPO / "config.yaml").read_text()), SCHEMA)
    assert [r["name"] for r in config["runs"]] == ["fcn-3x256", "vgg-small", "lm-2x32", "vit-2x32"]
    assert config["probes"]["rerandomize"]["draws"] >= 2


def test_missing_keys_take_schema_defaults():
    config = validate(
        {"runs": [{"name": "r", "dataset": "digits", "model": {"name": "fcn"}, "checkpoints": [5]}]}, SCHEMA
    )
    run = config["runs"][0]
    assert run["model"] == {"name": "fcn", "depth": 3, "width": 256}
    assert run["train"]["epochs"] == 100 and run["train"]["lr_milestones"] == [50, 75]
    assert run["seed"] == 0
    assert config["probes"]["splits"] == ["test", "train"]
    assert config["probes"]["bn_stats"] == "same_source"
    assert config["datasets"]["digits"]["test_fraction"] == 0.25
    assert config["categories"]["robust_max_increase"] == 0.02


def test_validation_does_not_modify_its_input(raw_config):
    before = repr(raw_config)
    validate(raw_config, SCHEMA)
    assert repr(raw_config) == before


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda c: c.update(prob={}), ["(top level)", "'prob' was unexpected"]),
        (lambda c: c["runs"][0]["train"].update(lrr=0.1), ["runs[0].train", "'lrr' was unexpected"]),
        (lambda c: c["runs"][0]["train"].update(lr="fast"), ["runs[0].train.lr", "not of type 'number'"]),
        (
            lambda c: c["runs"][1].update(dataset="mnst"),
            [
                "runs[1].dataset",
                "'mnst' is not a declared dataset",
                "declared: cifar10, cifar100, digits, fashion_mnist, imagenet, lm1b, mnist, pydoc",
            ],
        ),
        (lambda c: c["runs"][0]["model"].update(name="resnet"), ["runs[0].model.name", "'resnet'", "fcn", "vgg"]),
        (lambda c: c["runs"][0]["model"].update(widht=3), ["runs[0].model", "'widht' was unexpected"]),
        (lambda c: c["runs"][0].update(checkpoints=[]), ["runs[0].checkpoints", "should be non-empty"]),
        (lambda c: c["runs"][0].update(checkpoints=[0, 101]), ["runs[0].checkpoints", "[101]", "0..100"]),
        (lambda c: c["runs"][0]["train"].update(lr_milestones=[150]), ["runs[0].train.lr_milestones", "[150]"]),
        (lambda c: c["runs"][1].update(name="fcn-3x256"), ["runs[1].name", "used twice"]),
        (lambda c: c["runs"][0].update(name="../escape"), ["runs[0].name", "does not match"]),
        (lambda c: c["probes"].update(bn_stats="fresh"), ["probes.bn_stats", "'fresh' is not one of"]),
        (lambda c: c["probes"]["rerandomize"].update(draws=0), ["probes.rerandomize.draws", "minimum of 1"]),
        (lambda c: c["probes"].update(splits=["val"]), ["unknown split", "'val'"]),
        (lambda c: c.pop("runs"), ["'runs' is a required property"]),
    ],
)
def test_bad_config_names_the_key(raw_config, edit, expected):
    edit(raw_config)
    message = error_of(raw_config)
    for fragment in expected:
        assert fragment in message, message


def test_all_probes_disabled_is_an_error(raw_config):
    for kind in ("reinit", "rerandomize", "interpolate", "criticality", "joint"):
        raw_config["probes"][kind] = {"enabled": False}
    assert "every probe is disabled" in error_of(raw_config)


def search_of(probes: dict) -> dict:
    return probes["criticality"].setdefault("search", {})


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda p: p["interpolate"].update(alphas=[0.0, 1.5]), ["probes.interpolate.alphas", "1.5"]),
        (lambda p: p["criticality"].update(sigmas=[0.0, 0.1]), ["probes.criticality.sigmas", "0.0"]),
        (lambda p: p["criticality"]["feasibility"].update(tolerance="percent"), ["feasibility.tolerance", "percent"]),
        (lambda p: search_of(p).update(tolerance=0), ["probes.criticality.search.tolerance", "0"]),
        (lambda p: search_of(p).update(steps=8), ["probes.criticality.search", "'steps'"]),
        (lambda p: search_of(p).update(floor=-1e-3), ["probes.criticality.search.floor", "-0.001"]),
        (
            lambda p: search_of(p).update(floor=0.5, ceiling=0.5),
            ["probes.criticality.search.floor: 0.5 must lie below probes.criticality.search.ceiling (0.5)"],
        ),
        (
            lambda p: p["criticality"].update(sigmas=4, search={"ceiling": 0.6}),
            ["probes.criticality.sigmas: [0.75, 1.0] lie outside the σ search's [floor, ceiling] = [0.0001, 0.6]"],
        ),
        (
            lambda p: p["criticality"].update(sigmas=[1e-5, 0.1]),
            ["probes.criticality.sigmas: [1e-05]", "[floor, ceiling] = [0.0001, 1.0]"],
        ),
        (lambda p: p.update(splits=["test", "valid"]), ["unknown split", "valid"]),
        (lambda p: p["joint"].update(checkpoints=[0, 7]), ["probes.joint.checkpoints", "[7]"]),
        (lambda p: p["reinit"].update(enabled=False), ["probes.joint.robust", "probes.reinit"]),
    ],
)
def test_bad_probe_settings_are_named(raw_config, edit, expected):
    edit(raw_config["probes"])
    message = error_of(raw_config)
    for fragment in expected:
        assert fragment in message, message


def test_bad_memory_budget_is_named(raw_config):
    raw_config["engine"]["memory_budget"] = "lots"
    assert "engine.memory_budget" in error_of(raw_config)


def test_grids_and_sizes():
    from layerprobe.config import alpha_grid, parse_bytes, sigma_grid

    assert alpha_grid(5) == [0.0, 0.25, 0.5, 0.75, 1.0] and alpha_grid([0.5]) == [0.5]
    assert sigma_grid(4) == [0.25, 0.5, 0.75, 1.0]
    assert parse_bytes("512MB") == 512 * 2**20 and parse_bytes("1.5 GB") == 3 * 2**29


def test_every_schema_key_is_typed_described_and_defaulted():
    import yaml

    from layerprobe.config import recipes

    def walk(schema, path, required=()):
        # required: always, in the run's kind (a trained run's model, the `released` that makes a run
        # released), or as one of the alternatives (a released run's repo or folder)
        condition = schema.get("if", {}).get("not", {})
        required = [*required, *schema.get("then", {}).get("required", ()), *condition.get("required", ())]
        required += [key for option in schema.get("oneOf", []) for key in option.get("required", ())]
        for name, sub in schema.get("properties", {}).items():
            where = f"{path}.{name}"
            if "const" in sub:
                continue
            assert "description" in sub, f"{where} has no description"
            if "$ref" in sub:  # typed by its definition, walked below
                assert "default" in sub, f"{where} has no default"
                continue
            assert "type" in sub, f"{where} has no type"
            assert name in required or "default" in sub, f"{where} is neither required nor defaulted"
            walk(sub, where, sub.get("required", ()))
        for part in schema.get("allOf", []):
            walk(part["then"], path, [*schema.get("required", ()), *part["then"].get("required", ())])
        if isinstance(schema.get("additionalProperties"), dict):  # a map of named entries (datasets)
            entry = schema["additionalProperties"]
            walk(entry, path + ".<name>", entry.get("required", ()))
        if "items" in schema:
            walk(schema["items"], path + "[]", schema["items"].get("required", ()))

    schema = yaml.safe_load(SCHEMA.read_text())
    walk(schema, "", schema["required"])
    # The train settings take their defaults from the `default` recipe, which sets every one of them.
    train = schema["definitions"]["train"]
    default = recipes.BUILTIN["default"]
    train["properties"]["augment"]["required"] = list(default["augment"])
    walk(train, "definitions.train", [*default, "recipe"])
    assert set(train["properties"]) == {"recipe", *recipes.SETTINGS} == {"recipe", *default}


# ---- dataset declarations

KMNIST = {
    "format": "idx",
    "num_classes": 10,
    "files": {
        role: {"urls": [f"http://codh.rois.ac.jp/kmnist/dataset/kmnist/{role}.gz"], "sha256": "ab" * 32}
        for role in ("train_images", "train_labels", "test_images", "test_labels")
    },
}


def test_a_new_dataset_is_declared_in_the_config(raw_config):
    raw_config["datasets"]["kmnist"] = KMNIST
    raw_config["runs"][0]["dataset"] = "kmnist"
    config = validate(raw_config, SCHEMA)
    kmnist = config["datasets"]["kmnist"]
    assert kmnist["transpose"] is False and kmnist["normalization"] is None  # defaults filled
    assert config["datasets"]["mnist"]["format"] == "idx"  # the built-ins are declared too


def test_builtin_settings_are_overridden_key_by_key(raw_config, tmp_path):
    raw_config["datasets"] = {"digits": {"test_fraction": 0.5}, "imagenet": {"root": str(tmp_path), "image_size": 32}}
    config = validate(raw_config, SCHEMA)
    assert config["datasets"]["digits"] == {
        "format": "digits",
        "num_classes": 10,
        "test_fraction": 0.5,
        "split_seed": 0,
        "normalization": None,
    }
    assert (
        config["datasets"]["imagenet"]["root"] == str(tmp_path) and config["datasets"]["imagenet"]["test_dir"] == "val"
    )


def test_imagenet_needs_an_existing_root_when_a_run_uses_it(raw_config, tmp_path):
    raw_config["runs"][0]["dataset"] = "imagenet"
    assert "datasets.imagenet.root: run 'fcn-3x256' uses imagenet" in error_of(raw_config)
    raw_config["datasets"]["imagenet"] = {"root": str(tmp_path / "ILSVRC")}
    assert f"datasets.imagenet.root: {tmp_path / 'ILSVRC'} is not a folder" in error_of(raw_config)


@pytest.mark.parametrize(
    "edit, expected",
    [
        (
            lambda k: k["files"]["train_labels"].update(sha256="ab" * 31 + "a"),
            ["datasets.kmnist.files.train_labels.sha256", "does not match"],
        ),
        (lambda k: k["files"]["train_labels"].update(sha256="xy" * 32), ["datasets.kmnist.files.train_labels.sha256"]),
        (
            lambda k: k.update(format="npz"),
            [
                "datasets.kmnist.format",
                "'npz' is not one of ['digits', 'idx', 'cifar', 'imagefolder', 'text', 'lm1b', 'wikitext']",
            ],
        ),
        (lambda k: k.pop("files"), ["datasets.kmnist", "'files' is a required property"]),
        (lambda k: k["files"].pop("test_labels"), ["datasets.kmnist.files", "'test_labels' is a required property"]),
        (lambda k: k.pop("format"), ["datasets.kmnist", "'format' is a required property"]),
        (lambda k: k.update(test_fraction=0.5), ["datasets.kmnist", "'test_fraction' was unexpected"]),
        (
            lambda k: k["files"]["train_images"].update(urls=["codh.rois.ac.jp/x.gz"]),
            ["datasets.kmnist.files.train_images.urls[0]"],
        ),
        (
            lambda k: k.update(normalization={"mean": [0.5], "std": [0.1, 0.2]}),
            ["datasets.kmnist.normalization: 1 means but 2 stds"],
        ),
    ],
)
def test_bad_dataset_declaration_names_the_key(raw_config, edit, expected):
    kmnist = yaml.safe_load(yaml.safe_dump(KMNIST))
    edit(kmnist)
    raw_config["datasets"]["kmnist"] = kmnist
    message = error_of(raw_config)
    for fragment in expected:
        assert fragment in message, message


def test_bad_builtin_override_names_the_key(raw_config):
    raw_config["datasets"] = {"digits": {"test_fractoin": 0.5}, "mnist": {"files": {"test_images": {"sha256": "123"}}}}
    message = error_of(raw_config)
    assert "datasets.digits: Additional properties are not allowed ('test_fractoin' was unexpected)" in message
    assert "datasets.mnist.files.test_images.sha256: '123' does not match" in message


def test_readme_dataset_examples_validate():
    readme = (REPO / "README.md").read_text().split("## Datasets")[1].split("\n## ")[0]
    own, imagenet = [block.split("```")[0] for block in readme.split("```yaml")[1:3]]
    config = validate(yaml.safe_load(own), SCHEMA)
    assert config["datasets"]["kmnist"]["files"]["test_labels"]["sha256"].startswith("20bb9a0e")
    assert config["datasets"]["mnist"]["files"]["train_images"]["urls"] == [
        "file:///srv/mirror/mnist/train-images-idx3-ubyte.gz"
    ]
    runs = [{**yaml.safe_load(own)["runs"][0], "dataset": "digits"}]  # the folder is checked only when a run uses it
    assert (
        validate({**yaml.safe_load(imagenet), "runs": runs}, SCHEMA)["datasets"]["imagenet"]["root"]
        == "/data/ILSVRC2012"
    )


# --- --config values, which Snakemake hands over as strings when nested ----------------------------


def test_command_line_strings_are_read_by_the_schema_types(raw_config):
    given = {
        "probes": {
            "rerandomize": {"enabled": "true", "draws": "6", "seed": "0"},
            "criticality": {"sigmas": ["0.01", "0.1"], "subset": "null", "alphas": "4"},
            "interpolate": {"alphas": "[0, 0.5, 1]"},
            "joint": {"cumulative": "false"},
        },
        "categories": {"robust_max_increase": "0.05"},
        "engine": {"ops": "off", "memory_budget": "1GB"},
    }
    raw_config["probes"]["criticality"].update(given["probes"]["criticality"])
    for key in ("rerandomize", "interpolate", "joint"):
        raw_config["probes"][key].update(given["probes"][key])
    raw_config["categories"].update(given["categories"])
    raw_config["engine"].update(given["engine"])
    config = validate(raw_config, SCHEMA, given=given)
    probes = config["probes"]
    assert probes["rerandomize"] == {"enabled": True, "draws": 6, "seed": 0}
    assert probes["criticality"]["sigmas"] == [0.01, 0.1] and probes["criticality"]["subset"] is None
    assert probes["criticality"]["alphas"] == 4 and probes["interpolate"]["alphas"] == [0, 0.5, 1]
    assert probes["joint"]["cumulative"] is False and config["categories"]["robust_max_increase"] == 0.05
    assert config["engine"]["ops"] == "off" and config["engine"]["memory_budget"] == "1GB"  # strings stay strings


def test_only_command_line_values_are_coerced_and_bad_ones_still_fail(raw_config):
    raw_config["probes"]["rerandomize"]["draws"] = "6"  # a quoted number in a config file stays an error
    with pytest.raises(ConfigError, match=r"probes.rerandomize.draws: '6' is not of type 'integer'"):
        validate(raw_config, SCHEMA)
    raw_config["probes"]["rerandomize"]["draws"] = "six"
    with pytest.raises(ConfigError, match=r"probes.rerandomize.draws: 'six' is not of type 'integer'"):
        validate(raw_config, SCHEMA, given={"probes": {"rerandomize": {"draws": "six"}}})
