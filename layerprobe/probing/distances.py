"""How far each unit moved from its initialization (paper Fig. 1 b,c), per checkpoint and per draw."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from layerprobe.models.units import State, Unit, flat_params


def _ratio(value: float, scale: float) -> float:
    return value / scale if scale > 0 else math.nan


def unit_distance(unit: Unit, state: State, theta0: torch.Tensor) -> dict:
    """‖θ − θ^0‖ in 2- and ∞-norm, raw, relative to the same norm of θ^0, and per √n_params."""
    diff = flat_params(state, unit) - theta0
    l2, linf = diff.norm(2).item(), diff.abs().max().item()
    return {
        "n_params": unit.n_params,
        "l2": l2,
        "linf": linf,
        "l2_rel_init": _ratio(l2, theta0.norm(2).item()),
        "l2_per_sqrt_n": l2 / math.sqrt(unit.n_params),
        "linf_rel_init": _ratio(linf, theta0.abs().max().item()),
    }


def table_rows(units: list[Unit], checkpoints: Mapping[int, State], draws: list[tuple[int, State]]) -> list[dict]:
    """Rows for every unit × (checkpoint τ, then re-randomized draw k), all measured from τ = 0."""
    if 0 not in checkpoints:
        raise ValueError("distances need the epoch-0 checkpoint (the initialization)")
    rows = []
    for unit in units:
        theta0 = flat_params(checkpoints[0], unit)
        for tau in sorted(checkpoints):
            rows.append(
                {
                    "unit": unit.name,
                    "source": "checkpoint",
                    "checkpoint": tau,
                    **unit_distance(unit, checkpoints[tau], theta0),
                }
            )
        for k, (seed, state) in enumerate(draws):
            rows.append(
                {
                    "unit": unit.name,
                    "source": "rerandomize",
                    "draw": k,
                    "draw_seed": seed,
                    **unit_distance(unit, state, theta0),
                }
            )
    return rows
