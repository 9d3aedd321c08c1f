"""Distances to initialization against hand computations on constructed weights."""

import math

import pytest
import torch
from torch import nn

from layerprobe.models.units import inventory
from layerprobe.probing import distances


def test_distances_match_hand_computation():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    units = inventory(model)
    init = {
        "0.weight": torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
        "0.bias": torch.tensor([0.0, 2.0]),
        "1.weight": torch.tensor([[3.0, 4.0]]),
        "1.bias": torch.tensor([0.0]),
    }
    later = {**init, "0.weight": torch.tensor([[1.0, 3.0], [0.0, 1.0]]), "0.bias": torch.tensor([4.0, 2.0])}
    drawn = {**init, "1.weight": torch.tensor([[3.0, 4.0]]), "1.bias": torch.tensor([-2.0])}
    rows = distances.table_rows(units, {0: init, 7: later}, [(123, drawn)])
    by_key = {(r["unit"], r["source"], r.get("checkpoint", r.get("draw"))): r for r in rows}

    first = by_key[("0", "checkpoint", 7)]  # moved by (0, 3, 0, 0 | 4, 0): ‖·‖₂ = 5, ‖·‖∞ = 4
    assert first["n_params"] == 6
    assert first["l2"] == pytest.approx(5.0) and first["linf"] == pytest.approx(4.0)
    assert first["l2_rel_init"] == pytest.approx(5.0 / math.sqrt(1 + 1 + 4))  # ‖θ⁰‖₂ = √6
    assert first["l2_per_sqrt_n"] == pytest.approx(5.0 / math.sqrt(6))
    assert first["linf_rel_init"] == pytest.approx(4.0 / 2.0)  # ‖θ⁰‖∞ = 2

    assert by_key[("0", "checkpoint", 0)]["l2"] == 0.0
    assert by_key[("1", "checkpoint", 7)]["linf"] == 0.0
    redrawn = by_key[("1", "rerandomize", 0)]
    assert redrawn["draw_seed"] == 123 and redrawn["l2"] == pytest.approx(2.0)
    assert redrawn["l2_rel_init"] == pytest.approx(2.0 / 5.0)


def test_zero_initialization_gives_nan_relative_distance():
    model = nn.Sequential(nn.Linear(1, 1))
    units = inventory(model)
    zero = {"0.weight": torch.zeros(1, 1), "0.bias": torch.zeros(1)}
    rows = distances.table_rows(units, {0: zero, 1: {"0.weight": torch.ones(1, 1), "0.bias": torch.zeros(1)}}, [])
    assert math.isnan(rows[1]["l2_rel_init"]) and rows[1]["l2"] == 1.0


def test_distances_need_the_initialization():
    model = nn.Sequential(nn.Linear(1, 1))
    with pytest.raises(ValueError, match="epoch-0"):
        distances.table_rows(inventory(model), {3: model.state_dict()}, [])
