"""The library face: units() on models of any shape, probe() on one's own model and data."""

import copy

import pytest
import torch
from torch import nn

import layerprobe
from layerprobe.config import ConfigError
from layerprobe.results import tables


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU())
        self.drop = nn.Dropout(0.0)
        self.head = nn.Linear(3 * 8 * 8, 10)
        self.temperature = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return self.head(self.drop(self.features(x)).flatten(1)) / self.temperature


def test_units_per_block_lists_skipped_things_with_reasons():
    table = layerprobe.units(Net())
    units = table[table["skipped"] == ""]
    assert units["unit"].tolist() == ["features", "head"] and set(units["rule"]) == {"per block"}
    assert units["n_params"].tolist() == [3 * 9 + 3 + 3 + 3, 3 * 64 * 10 + 10]
    skipped = dict(zip(table.loc[table["skipped"] != "", "unit"], table.loc[table["skipped"] != "", "skipped"]))
    assert skipped["drop"] == "no parameters" and "no unit owns it" in skipped["temperature"]


def test_units_per_module_and_mapping():
    per_module = layerprobe.units(Net(), "per module")
    assert per_module.loc[per_module["skipped"] == "", "unit"].tolist() == ["features.0", "features.1", "head"]
    mapped = layerprobe.units(Net(), {"body": ["features", "temperature"], "classifier": "head"})
    assert mapped.loc[mapped["skipped"] == "", "unit"].tolist() == ["body", "classifier"]
    assert set(mapped["rule"]) == {"mapping"}
    with pytest.raises(ValueError, match="claimed by units 'a' and 'b'"):
        layerprobe.units(Net(), {"a": ["features"], "b": ["features.0"]})
    with pytest.raises(ValueError, match="unit 'x' owns no parameters"):
        layerprobe.units(Net(), {"x": ["feature"]})
    with pytest.raises(ValueError, match="unknown unit rule"):
        layerprobe.units(Net(), "per layer")


def small_problem():
    torch.manual_seed(0)
    x, y = torch.randn(120, 1, 8, 8), torch.randint(0, 10, (120,))
    model = Net()
    checkpoints = {0: copy.deepcopy(model.state_dict())}
    for epoch in (1, 2):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
        checkpoints[epoch] = copy.deepcopy(model.state_dict())
    return model, checkpoints, x, y


FAST = {"criticality": {"alphas": 2, "sigmas": [0.1], "samples": 2, "subset": 50}, "interpolate": {"alphas": 3}}


def test_probe_returns_the_robustness_table_and_is_deterministic():
    model, checkpoints, x, y = small_problem()
    table = layerprobe.probe(
        model, checkpoints, {"test": (x[:60], y[:60]), "val": (x[60:], y[60:])}, FAST, device="cpu"
    )
    assert list(table.columns) == tables.ROBUSTNESS
    assert set(table["split"]) == {"test", "val"}
    assert set(table["probe"]) == {"reinit", "rerandomize", "interpolate", "criticality", "criticality_search", "joint"}
    final = table[(table.probe == "reinit") & (table.checkpoint == 2)]
    assert (final["agreement"] == 1).all() and final.groupby("split")["error"].nunique().eq(1).all()
    again = layerprobe.probe(
        model, checkpoints, {"test": (x[:60], y[:60]), "val": (x[60:], y[60:])}, FAST, device="cpu"
    )
    assert table.to_csv() == again.to_csv()


def test_probe_with_a_factory_a_pair_and_a_unit_mapping():
    model, checkpoints, x, y = small_problem()
    table = layerprobe.probe(
        Net,
        checkpoints,
        (x, y),
        {**FAST, "criticality": {"enabled": False}},
        unit_rule={"body": ["features"], "top": ["head", "temperature"]},
        device="cpu",
    )
    assert set(table["split"]) == {"test"}
    assert set(table.loc[table.probe == "reinit", "unit"]) == {"body", "top", "fullmodel"}


def test_probe_rejects_bad_settings_and_checkpoints():
    model, checkpoints, x, y = small_problem()
    with pytest.raises(ConfigError, match="interpolate.alphas"):
        layerprobe.probe(model, checkpoints, (x, y), {"interpolate": {"alphas": [2.0]}})
    with pytest.raises(ValueError, match=r"probes.criticality.sigmas: \[2.0\] lie outside the σ search's"):
        layerprobe.probe(model, checkpoints, (x, y), {"criticality": {"sigmas": [0.5, 2.0]}})
    with pytest.raises(ValueError, match="epoch 0 \\(the initialization\\) is required"):
        layerprobe.probe(model, {1: checkpoints[1], 2: checkpoints[2]}, (x, y), FAST)
    with pytest.raises(ValueError, match="joint_groups.pair: unknown unit"):
        layerprobe.probe(model, checkpoints, (x, y), FAST, joint_groups={"pair": ["features", "neck"]})
