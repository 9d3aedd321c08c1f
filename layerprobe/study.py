"""Probe one trained run: each enabled probe kind describes its variants, the engine evaluates them.

Kinds are evaluated in stages: first those that need no other kind's rows, then those that do (the
joint probe's robust set comes from the re-initialization rows). Within a stage, the variants of
every kind that evaluates on the same data go to the engine in one call, so they share its batches.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import torch
from torch import nn

from layerprobe import kinds
from layerprobe.base.seeds import derive_seed
from layerprobe.data.dataset import Splits
from layerprobe.models import describe, fresh_state
from layerprobe.models.units import State, inventory
from layerprobe.probing import distances, engine
from layerprobe.results import tables


def draw_seeds(base_seed: int, run_seed: int, draws: int) -> list[int]:
    """Seeds of the re-randomization draws; they depend on the run's seed so seeds differ per run."""
    return [derive_seed("rerandomize", base_seed, run_seed, k) for k in range(draws)]


def run_columns(run: dict) -> dict:
    """The run-level columns every table row carries, from a config's run."""
    return {"run": run["name"], "dataset": run["dataset"], "model": describe(run["model"]), "seed": run["seed"]}


def probe_run(
    factory: Callable[[], nn.Module],
    checkpoints: dict[int, State],
    splits: Splits,
    settings: dict,
    run: dict,
    num_classes: int,
    *,
    categories: dict,
    joint_groups: dict | None = None,
    device: str = "auto",
    memory_budget: int = 2 * 2**30,
    unit_rule: str | dict | None = None,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    progress: bool = True,
    ops: bool = False,
) -> dict[str, pd.DataFrame]:
    """The `robustness`, `distances` and `inventory` tables of one run.

    `checkpoints` maps epoch → state dict and must hold epoch 0 and the final epoch (the largest).
    `splits` maps split name → (inputs, labels), of which `settings["splits"]` are probed (and the
    splits of the kinds' own subsets); `settings` is the config's `probes` section (defaults filled);
    `run` fills the run-level columns (run, dataset, model, seed); `categories` (the config's section)
    decides the joint probe's robust set; `joint_groups` are the run's named sets of units;
    `unit_rule` is inventory's rule; `transform` (e.g. `Dataset.normalize`) turns the inputs into the
    model's, applied only to the examples the subsets keep; `ops` has the engine use the loaded fused
    operators (layerprobe.probing.ops.resolve). Every setting is checked before any evaluation.
    Re-randomization's draws (`probes.rerandomize`) are the fresh states of every kind that re-draws.
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

    missing = [s for s in settings["splits"] if s not in splits]
    if missing:
        raise ValueError(f"probes.splits: no data for split(s) {missing}; splits given: {list(splits)}")
    unknown = sorted(set(settings["subset"]) - set(splits))
    if unknown:
        raise ValueError(f"probes.subset: no data for split(s) {unknown}; splits given: {list(splits)}")
    prepare = transform or (lambda x: x)
    active = kinds.enabled(settings)
    context = dict(
        units=units,
        epochs=epochs,
        draw_seeds=seeds,
        settings=settings,
        run_seed=run["seed"],
        num_classes=num_classes,
        categories=categories,
        joint_groups=joint_groups or {},
    )
    for kind in active:
        if kind.check:
            kind.check(kinds.Context(**context, rows=[]))
    data = {kind.name: _data_of(kind, settings, run["seed"], splits, prepare) for kind in active if kind.subset}
    probed = {
        s: subsample(*splits[s], settings["subset"].get(s), "probe subset", settings["subset_seed"], s)
        for s in settings["splits"]
    }
    probed = {s: (prepare(x), y) for s, (x, y) in probed.items()}

    rows: list[dict] = []
    for stage in _stages(active):
        described = [(kind, kind.variants(kinds.Context(**context, rows=rows))) for kind in stage]
        calls: dict[str | None, list] = {}  # one engine call per data: the probed splits (None) or a kind's own
        for kind, variants in described:
            calls.setdefault(kind.name if kind.subset else None, []).extend(variants)
        for on, variants in calls.items():
            rows += engine.evaluate(
                model,
                units,
                variants,
                final,
                source,
                probed if on is None else data[on],
                settings["bn_stats"],
                device=device,
                memory_budget=memory_budget,
                progress=f"probe {run['run']}" if progress else None,
                ops=ops,
            )
    unit_rows = [
        {
            "unit": u.name,
            "index": u.index,
            "n_params": u.n_params,
            "params": " ".join(u.params),
            "rule": u.rule,
            "num_classes": num_classes,
        }
        for u in units
    ]
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


def _data_of(
    kind: kinds.ProbeKind,
    settings: dict,
    run_seed: int,
    splits: Splits,
    prepare: Callable[[torch.Tensor], torch.Tensor],
) -> Splits:
    """A kind's own data: its seeded subset of one split, transformed."""
    subset = kind.subset(settings[kind.name], run_seed)
    if subset.split not in splits:
        raise ValueError(f"probes.{kind.name}.split: {subset.split!r} is not among the data splits {list(splits)}")
    x, y = subsample(*splits[subset.split], subset.size, *subset.seed)
    return {subset.split: (prepare(x), y)}


def _stages(active: list[kinds.ProbeKind]) -> list[list[kinds.ProbeKind]]:
    """The kinds in evaluation stages: a kind comes one stage after the latest (enabled) kind it reads."""
    names = {k.name for k in active}
    stage: dict[str, int] = {}
    for kind in active:  # registry order: a kind reads only kinds before it
        later = [a for a in kind.after if a in names and a not in stage]
        if later:
            raise ValueError(f"probe kind {kind.name!r} reads the rows of {later}, registered after it")
        stage[kind.name] = 1 + max((stage[a] for a in kind.after if a in names), default=-1)
    return [[k for k in active if stage[k.name] == s] for s in sorted(set(stage.values()))]
