"""Shared fixtures: the repository paths, the digits dataset, and a tiny trained run."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml

from layerprobe import models
from layerprobe.config import validate
from layerprobe.data.dataset import Dataset
from layerprobe.data.prepare import prepare
from layerprobe.training import checkpoints
from layerprobe.training.loop import train

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "schemas" / "config.schema.yaml"


@pytest.fixture(scope="session")
def default_config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


@pytest.fixture
def raw_config(default_config) -> dict:
    """A fresh, unvalidated copy of config.yaml that a test may edit."""
    return copy.deepcopy(default_config)


@pytest.fixture(scope="session")
def digits() -> Dataset:
    return prepare("digits", {"test_fraction": 0.25, "split_seed": 0})


def model_factory(run: dict, data: Dataset):
    """The model of a config's run, for a dataset."""
    return models.factory(run["model"], data.input_shape, data.num_classes)


def tiny_run(**model) -> dict:
    """A small, validated run: trains in about a second on the digits."""
    config = validate(
        {
            "runs": [
                {
                    "name": "tiny",
                    "dataset": "digits",
                    "model": model or {"name": "fcn", "depth": 2, "width": 32},
                    "train": {"epochs": 4, "batch_size": 64, "lr": 0.05, "lr_milestones": [3]},
                    "checkpoints": [1, 2],
                }
            ]
        },
        SCHEMA,
    )
    return config["runs"][0]


@pytest.fixture(scope="session")
def trained(tmp_path_factory, digits):
    """A tiny FCN trained with checkpoints 0, 1, 2, 4: (run, factory, {epoch: state_dict}, folder)."""
    run = tiny_run()
    folder = tmp_path_factory.mktemp("tiny") / "checkpoints"
    factory = model_factory(run, digits)
    torch.set_num_threads(1)
    train(factory, digits, run["train"], run["seed"], folder, run["checkpoints"], progress=False)
    return run, factory, checkpoints.load_all(folder / checkpoints.MANIFEST), folder
