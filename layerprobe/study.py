"""Probe one trained run: describe its variants, evaluate them, and return the tidy tables."""
from __future__ import annotations

from typing import Callable, Mapping

import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from layerprobe import distances, probes, reference, tables
from layerprobe.datasets import Splits
from layerprobe.models import fresh_state
from layerprobe.seeds import derive_seed
from layerprobe.units import inventory

State = Mapping[str, torch.Tensor]


def draw_seeds(base_seed: int, run_seed: int, draws: int) -> list[int]:
    """Seeds of the re-randomization draws; they depend on the run's seed so seeds differ per run."""
    return [derive_seed("rerandomize", base_seed, run_seed, k) for k in range(draws)]


def probe_run(factory: Callable[[], nn.Module], checkpoints: dict[int, State], data: Splits,
              settings: dict, run: dict, progress: bool = True) -> dict[str, pd.DataFrame]:
    """The `robustness`, `distances` and `inventory` tables of one run.

    `checkpoints` maps epoch → state dict and must hold epoch 0 and the final epoch (the largest).
    `settings` is the config's `probes` section; `run` fills the run-level columns
    (run, dataset, model, seed).
    """
    model = factory()
    units = inventory(model)
    epochs = sorted(checkpoints)
    final = checkpoints[epochs[-1]]
    rerandomize = settings["rerandomize"]
    seeds = draw_seeds(rerandomize["seed"], run["seed"], rerandomize["draws"] if rerandomize["enabled"] else 0)
    drawn = [(seed, fresh_state(factory, seed)) for seed in seeds]

    variants = []
    if settings["reinit"]["enabled"]:
        variants += probes.reinit(units, epochs)
    variants += probes.rerandomize(units, seeds)

    def source(key: tuple[str, int]) -> State:
        kind, index = key
        return checkpoints[index] if kind == "checkpoint" else drawn[index][1]

    bar = (lambda items: tqdm(items, desc=f"probe {run['run']}", unit="variant", disable=None)) if progress else None
    rows = reference.evaluate(model, units, variants, final, source, data, settings["splits"],
                              settings["bn_stats"], progress=bar)
    unit_rows = [{"unit": u.name, "index": u.index, "n_params": u.n_params, "params": " ".join(u.params),
                  "rule": u.rule, "num_classes": data.num_classes} for u in units]
    return {
        "robustness": tables.frame(rows, tables.ROBUSTNESS, run),
        "distances": tables.frame(distances.table_rows(units, checkpoints, drawn), tables.DISTANCES, run),
        "inventory": tables.frame(unit_rows, tables.INVENTORY, run),
    }
