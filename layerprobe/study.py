"""Probe one trained run: describe its variants, have the engine evaluate them, return the tidy tables."""
from __future__ import annotations

from typing import Callable, Mapping

import pandas as pd
import torch
from torch import nn

from layerprobe import distances, engine, probes, tables
from layerprobe.config import alpha_grid, sigma_grid
from layerprobe.models import fresh_state
from layerprobe.reference import Splits
from layerprobe.seeds import derive_seed
from layerprobe.units import FULLMODEL, Unit, inventory

State = Mapping[str, torch.Tensor]


def draw_seeds(base_seed: int, run_seed: int, draws: int) -> list[int]:
    """Seeds of the re-randomization draws; they depend on the run's seed so seeds differ per run."""
    return [derive_seed("rerandomize", base_seed, run_seed, k) for k in range(draws)]


def probe_run(factory: Callable[[], nn.Module], checkpoints: dict[int, State], splits: Splits, settings: dict,
              run: dict, num_classes: int, *, categories: dict, joint_groups: dict | None = None,
              device: str = "auto", memory_budget: int = 2 * 2**30, unit_rule: str | dict | None = None,
              transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
              progress: bool = True, ops: bool = False) -> dict[str, pd.DataFrame]:
    """The `robustness`, `distances` and `inventory` tables of one run.

    `checkpoints` maps epoch → state dict and must hold epoch 0 and the final epoch (the largest).
    `splits` maps split name → (inputs, labels), of which `settings["splits"]` are probed (and the
    criticality split); `settings` is the config's `probes` section (defaults filled); `run` fills
    the run-level columns (run, dataset, model, seed); `categories` (the config's section) decides
    the joint probe's robust set; `joint_groups` are the run's named sets of units; `unit_rule` is
    inventory's rule; `transform` (e.g. `datasets.Splits.normalize`) turns the inputs into the model's,
    applied only to the examples the subsets keep; `ops` has the engine use the loaded fused operators
    (layerprobe.ops.resolve). Every setting is checked before any evaluation. The joint sets are
    re-randomized with the same draws as single units, so only when re-randomization is on.
    """
    model = factory()
    units = inventory(model, unit_rule)
    epochs = sorted(checkpoints)
    if 0 not in checkpoints:
        raise ValueError(f"probing needs the epoch-0 checkpoint (the initialization); epochs given: {epochs}")
    final = checkpoints[epochs[-1]]
    rerandomize = settings["rerandomize"]
    seeds = draw_seeds(rerandomize["seed"], run["seed"], rerandomize["draws"] if rerandomize["enabled"] else 0)
    drawn = [(seed, fresh_state(factory, seed)) for seed in seeds]

    def source(key: tuple[str, int]) -> State:
        kind, index = key
        return checkpoints[index] if kind == "checkpoint" else drawn[index][1]

    evaluate = lambda variants, on: engine.evaluate(  # noqa: E731
        model, units, variants, final, source, on, settings["bn_stats"], device=device, memory_budget=memory_budget,
        progress=f"probe {run['run']}" if progress else None, ops=ops)

    missing = [s for s in settings["splits"] if s not in splits]
    if missing:
        raise ValueError(f"probes.splits: no data for split(s) {missing}; splits given: {list(splits)}")
    unknown = sorted(set(settings["subset"]) - set(splits))
    if unknown:
        raise ValueError(f"probes.subset: no data for split(s) {unknown}; splits given: {list(splits)}")
    prepare = transform or (lambda x: x)
    critical, subset = _criticality(units, splits, settings["criticality"], run["seed"], prepare)
    splits = {s: subsample(*splits[s], settings["subset"].get(s), "probe subset", settings["subset_seed"], s)
              for s in settings["splits"]}
    splits = {s: (prepare(x), y) for s, (x, y) in splits.items()}
    plain = []  # variants on the configured splits
    if settings["reinit"]["enabled"]:
        plain += probes.reinit(units, epochs)
    plain += probes.rerandomize(units, seeds)
    if settings["interpolate"]["enabled"]:
        plain += probes.interpolate(units, alpha_grid(settings["interpolate"]["alphas"]))
    joint = settings["joint"]
    sets = _joint_sets(units, joint_groups or {}, joint["cumulative"]) if joint["enabled"] else []
    joint_epochs = epochs if joint["checkpoints"] is None else sorted(joint["checkpoints"])
    absent = sorted(set(joint_epochs) - set(epochs))
    if joint["enabled"] and absent:
        raise ValueError(f"probes.joint.checkpoints: no checkpoint at epoch(s) {absent}; epochs: {epochs}")

    rows = evaluate(plain, splits) + (evaluate(critical, subset) if critical else [])
    if joint["enabled"]:
        if joint["robust"]:
            robust = _robust_units(rows, epochs[-1], num_classes, categories)
            if robust:
                sets.append(("robust", robust))
            else:
                print("joint: no unit is robust, so there is no 'robust' set to reset")
        rows += evaluate(probes.joint(sets, joint_epochs, seeds), splits)
    unit_rows = [{"unit": u.name, "index": u.index, "n_params": u.n_params, "params": " ".join(u.params),
                  "rule": u.rule, "num_classes": num_classes} for u in units]
    return {
        "robustness": tables.frame(rows, tables.ROBUSTNESS, run),
        "distances": tables.frame(distances.table_rows(units, checkpoints, drawn), tables.DISTANCES, run),
        "inventory": tables.frame(unit_rows, tables.INVENTORY, run),
    }


def subsample(x: torch.Tensor, y: torch.Tensor, n: int | None, *seed_parts) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random subset of n examples (in their original order); all of them when n is None or ≥ their number."""
    if n is None or n >= len(x):
        return x, y
    generator = torch.Generator().manual_seed(derive_seed(*seed_parts))
    keep = torch.randperm(len(x), generator=generator)[:n].sort().values
    return x[keep], y[keep]


def _criticality(units: list[Unit], splits: Splits, settings: dict, run_seed: int,
                 prepare: Callable[[torch.Tensor], torch.Tensor]) -> tuple[list[probes.Variant], Splits]:
    """Criticality variants, with recorded noise seeds, and the seeded subset they are evaluated on."""
    if not settings["enabled"]:
        return [], {}
    split = settings["split"]
    if split not in splits:
        raise ValueError(f"probes.criticality.split: {split!r} is not among the data splits {list(splits)}")
    base = (settings["seed"], run_seed)
    x, y = subsample(*splits[split], settings["subset"], "criticality subset", *base)
    alphas, sigmas = alpha_grid(settings["alphas"]), sigma_grid(settings["sigmas"])
    seeds = {(u.name, i, j, k): derive_seed("criticality", *base, u.name, i, j, k)
             for u in units for i in range(len(alphas)) for j in range(len(sigmas)) for k in range(settings["samples"])}
    return probes.criticality(units, alphas, sigmas, seeds), {split: (prepare(x), y)}


def _joint_sets(units: list[Unit], groups: dict, cumulative: bool) -> list[tuple[str, tuple[str, ...]]]:
    """The run's joint_groups (unit names checked), then the cumulative sets."""
    names = [u.name for u in units]
    sets = []
    for label, members in groups.items():
        unknown = [m for m in members if m not in names]
        if unknown:
            raise ValueError(f"joint_groups.{label}: unknown unit(s) {unknown}; units: {', '.join(names)}")
        if label in (FULLMODEL, "robust"):
            raise ValueError(f"joint_groups: {label!r} is a reserved set name")
        sets.append((label, tuple(sorted(members, key=names.index))))
    return sets + (probes.cumulative_sets(units) if cumulative else [])


def _robust_units(rows: list[dict], final_epoch: int, num_classes: int, categories: dict) -> tuple[str, ...]:
    """Units whose re-initialization (τ = 0, test split) leaves them in the `robust` category."""
    test = [r for r in rows if r["probe"] == "reinit" and r["split"] == "test"]
    if not test:
        raise ValueError("probes.joint.robust: the robust set comes from re-initialization on the 'test' split; "
                         "enable probes.reinit and probe a 'test' split, or set probes.joint.robust: false")
    final_error = next(r["error"] for r in test if r["unit"] == FULLMODEL and r["checkpoint"] == final_epoch)
    return tuple(r["unit"] for r in test if r["unit"] != FULLMODEL and r["checkpoint"] == 0 and tables.categorize(
        r["error"], final_error, tables.chance_error(num_classes), categories["robust_max_increase"],
        categories["critical_fraction"]) == "robust")
