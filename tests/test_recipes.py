"""Named training recipes in the config, and the device-side augmentation they switch on."""

import pytest
import torch

from layerprobe.config import ConfigError, recipes, validate
from layerprobe.training import augment

from conftest import SCHEMA


def config_with(train, declared=None) -> dict:
    config = {
        "runs": [{"name": "r", "dataset": "digits", "model": {"name": "fcn"}, "train": train, "checkpoints": [1]}]
    }
    if declared is not None:
        config["recipes"] = declared
    return config


def error_of(config) -> str:
    with pytest.raises(ConfigError) as info:
        validate(config, SCHEMA)
    return str(info.value)


def test_paper_recipes_exist_with_their_settings():
    known = recipes.BUILTIN
    assert {"default", "mnist-sgd", "cifar-sgd", "imagenet-sgd"} <= set(known)
    cifar = recipes.resolve({"recipe": "cifar-sgd"})
    assert (cifar["lr"], cifar["momentum"], cifar["weight_decay"], cifar["batch_size"]) == (0.1, 0.9, 5e-4, 128)
    assert cifar["augment"] == {"crop_padding": 4, "flip": True}
    imagenet = recipes.resolve({"recipe": "imagenet-sgd", "batch_size": 1024})
    assert imagenet["epochs"] == 90 and imagenet["lr_milestones"] == [30, 60, 80] and imagenet["weight_decay"] == 1e-4
    assert recipes.effective_lr(imagenet) == pytest.approx(0.4)  # 0.1 × 1024 / 256
    mnist = recipes.resolve({"recipe": "mnist-sgd"})
    assert mnist["augment"] == {"crop_padding": 0, "flip": False} and mnist["weight_decay"] == 0
    for name in known:  # every built-in recipe is a full, valid set of settings
        assert set(known[name]) == set(recipes.SETTINGS) and recipes.resolve({"recipe": name})["recipe"] == name


def test_a_run_without_recipe_keeps_the_historic_defaults():
    run = validate(config_with({"epochs": 10, "lr_milestones": [5]}), SCHEMA)["runs"][0]
    assert run["train"] == {**recipes.BUILTIN["default"], "recipe": "default", "epochs": 10, "lr_milestones": [5]}


def test_a_run_overrides_its_recipe_and_nested_augment_keys_merge():
    run = validate(config_with({"recipe": "cifar-sgd", "lr": 0.05, "augment": {"flip": False}}), SCHEMA)["runs"][0]
    assert run["train"]["recipe"] == "cifar-sgd" and run["train"]["lr"] == 0.05 and run["train"]["weight_decay"] == 5e-4
    assert run["train"]["augment"] == {"crop_padding": 4, "flip": False}


def test_declared_recipes_build_on_others():
    declared = {"short-cifar": {"recipe": "cifar-sgd", "epochs": 10, "lr_milestones": [5]}, "slow": {"lr": 0.01}}
    config = validate(config_with({"recipe": "short-cifar", "lr": 0.02}, declared), SCHEMA)
    train = config["runs"][0]["train"]
    assert (train["recipe"], train["epochs"], train["lr"], train["weight_decay"]) == ("short-cifar", 10, 0.02, 5e-4)
    slow = validate(config_with({"recipe": "slow"}, declared), SCHEMA)["runs"][0]["train"]
    assert slow["lr"] == 0.01 and slow["epochs"] == 100  # a recipe without `recipe` builds on default
    assert recipes.for_training(train) == train  # the library takes a validated config's settings as they are


@pytest.mark.parametrize(
    "train, declared, expected",
    [
        (
            {"recipe": "cifar"},
            None,
            ["runs[0].train.recipe: unknown recipe 'cifar'", "cifar-sgd, default, imagenet-sgd, mnist-sgd"],
        ),
        ({"recipe": "mine"}, {"mine": {"recipe": "nope"}}, ["recipes.mine.recipe: unknown recipe 'nope'"]),
        ({"recipe": "a"}, {"a": {"recipe": "b"}, "b": {"recipe": "a"}}, ["in a cycle (a -> b -> a)"]),
        ({}, {"cifar-sgd": {"lr": 1.0}}, ["recipes.cifar-sgd", "built-in recipe"]),
        ({}, {"mine": {"lrr": 1.0}}, ["recipes.mine", "'lrr' was unexpected"]),
        ({"recipe": "cifar-sgd", "augment": {"crop": 4}}, None, ["runs[0].train.augment", "'crop' was unexpected"]),
        ({"precision": "fp16"}, None, ["runs[0].train.precision", "'fp16' is not one of"]),
        ({"device": "gpu"}, None, ["runs[0].train.device", "does not match"]),
        ({"device": "cpu", "precision": "bf16"}, None, ["runs[0].train.precision: bf16 is autocast on CUDA only"]),
        (
            {"recipe": "imagenet-sgd", "epochs": 50},
            None,
            ["runs[0].train.lr_milestones: [60, 80] lie beyond train.epochs = 50"],
        ),
        ({"momentum": 0, "nesterov": True}, None, ["runs[0].train.nesterov", "momentum > 0"]),
        ({"recipe": 3}, None, ["runs[0].train.recipe", "not of type 'string'"]),
    ],
)
def test_bad_recipes_are_named_before_any_work(train, declared, expected):
    message = error_of(config_with(train, declared))
    for fragment in expected:
        assert fragment in message, message


def test_checkpoints_are_checked_against_the_recipe_length():
    message = error_of(
        {
            "runs": [
                {
                    "name": "r",
                    "dataset": "digits",
                    "model": {"name": "fcn"},
                    "train": {"recipe": "imagenet-sgd"},
                    "checkpoints": [100],
                }
            ]
        }
    )
    assert "runs[0].checkpoints" in message and "0..90" in message


@pytest.mark.parametrize("padding, flip", [(4, True), (2, False), (0, True), (3, True)])
def test_batched_crop_flip_equals_the_per_sample_loop(padding, flip):
    x = torch.randint(0, 256, (50, 3, 10, 12), dtype=torch.uint8)
    generator = torch.Generator().manual_seed(padding)
    top, left, flips = augment.draw(len(x), padding, flip, generator)
    assert torch.equal(
        augment.apply(x, padding, top, left, flips), augment.crop_flip_reference(x, padding, top, left, flips)
    )
    assert int(top.max()) <= 2 * padding and bool(flips.any()) == flip


def test_crop_flip_is_reproducible_and_varies():
    x = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8)
    a = augment.crop_flip(x, 2, True, torch.Generator().manual_seed(1))
    b = augment.crop_flip(x, 2, True, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, x) and a.dtype == torch.uint8
    assert augment.crop_flip(x, 0, False, torch.Generator()) is x  # off: untouched, nothing drawn
    # A crop that lands at offset (p, p) without flip is the image itself.
    same = augment.apply(x, 2, torch.full((64,), 2), torch.full((64,), 2), torch.zeros(64, dtype=torch.bool))
    assert torch.equal(same, x)
