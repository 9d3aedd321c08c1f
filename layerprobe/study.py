"""Probe one trained run: each enabled probe kind describes its variants, the engine evaluates them.

Kinds are evaluated in stages: first those that need no other kind's rows, then those that do (the
joint probe's robust set comes from the re-initialization rows). Within a stage, the variants of
every kind that evaluates on the same data go to the engine in one call, so they share its batches
(layerprobe.shards: `stages`, `calls`). A kind with a search (`ProbeKind.refine`, criticality's σ
search) runs it after its call, round after round, one engine call a round. A shard of the run
evaluates a part of those calls, and the searches of its own units.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pandas as pd
import torch
from torch import nn

from layerprobe import kinds, models, shards
from layerprobe.base.seeds import derive_seed
from layerprobe.data.dataset import Dataset, Splits
from layerprobe.kinds.rerandomize import draw_seeds
from layerprobe.models import describe, fresh_state
from layerprobe.models.units import State, inventory
from layerprobe.probing import distances, engine
from layerprobe.results import tables
from layerprobe.results.intervals import with_intervals
from layerprobe.training import checkpoints, released
from layerprobe.validation import inputs


def run_columns(run: dict) -> dict:
    """The run-level columns every table row carries, from a config's run."""
    if run.get("released"):  # the architecture is the checkpoints' own: named by where they come from
        source = run["released"].get("repo") or run["released"]["folder"]
        model = describe({"name": "released", "source": source, "units": run["released"]["units"]})
    else:
        model = describe(run["model"])
    return {"run": run["name"], "dataset": run["dataset"], "model": model, "seed": run["seed"]}


def load_run(
    run: dict, manifest_path: str, data: Dataset
) -> tuple[Callable[[], nn.Module], dict[int, State], int, str | dict | None]:
    """A run's model factory, its checkpoints {τ: state dict}, its classes and its unit rule (None: the
    model's own), from the manifest its rule wrote: trained here (the config's model) or released (the
    checkpoints' own architecture, the dataset's tokenizer checked against theirs first)."""
    if not run.get("released"):
        factory = models.factory(run["model"], data.input_shape, data.num_classes)
        return factory, checkpoints.load_all(manifest_path), data.num_classes, None
    manifest = released.read_manifest(manifest_path)
    own = released.tokenizer_fingerprint(manifest)
    if own is not None and data.tokenizer != own:  # another tokenizer's ids would be read as other words
        final = manifest["checkpoints"][-1]
        made = (
            "byte tokens" if data.tokenizer == "bytes" else f"tokens of a tokenizer with fingerprint {data.tokenizer}"
        )
        raise inputs.InputError(
            f"run {run['name']!r}: dataset {data.name!r} holds {made}, but the checkpoints' tokenizer "
            f"({final['folder']}/tokenizer.json) has fingerprint {own}; tokenize the dataset with it "
            f"(datasets.{data.name}.tokenizer: {{repo: {run['released'].get('repo')}, revision: {final['revision']}}})"
        )
    factory = released.factory(manifest)
    model = factory()
    return factory, released.load_states(manifest, model), released.classes(manifest), released.unit_rule(model)


def probe_run(
    factory: Callable[[], nn.Module],
    checkpoints: dict[int, State],
    splits: Splits,
    settings: dict,
    run: dict,
    num_classes: int | None,
    *,
    categories: dict,
    joint_groups: dict | None = None,
    device: str = "auto",
    memory_budget: int = 2 * 2**30,
    unit_rule: str | dict | None = None,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    progress: bool = True,
    ops: bool = False,
    shard: dict | None = None,
    earlier: list[dict] | None = None,
    allow_nonfinite: bool = False,
) -> dict[str, pd.DataFrame]:
    """The `robustness`, `distances` and `inventory` tables of one run.

    `checkpoints` maps epoch → state dict and must hold epoch 0 and the final epoch (the largest).
    `splits` maps split name → (inputs, labels), of which `settings["splits"]` are probed (and the
    splits of the kinds' own subsets); `settings` is the config's `probes` section (defaults filled);
    `run` fills the run-level columns (run, dataset, model, seed); `categories` (the config's section)
    decides the joint probe's robust set; `joint_groups` are the run's named sets of units;
    `unit_rule` is inventory's rule; `transform` (e.g. `Dataset.normalize`) turns the inputs into the
    model's, applied only to the examples the subsets keep; `ops` has the engine use the loaded fused
    operators (layerprobe.probing.ops.resolve). Every setting, and the model, checkpoints and splits
    (layerprobe.validation.inputs; `num_classes` None: the model's outputs), are checked before any
    evaluation; `allow_nonfinite` lets a checkpoint or input with NaN or ±inf through, with a warning.
    Re-randomization's draws (`probes.rerandomize`) are the fresh states of every kind that re-draws.

    `shard` (a `shards.Shard.spec()`) evaluates only that shard's variants and returns only its
    `robustness` rows, each with its place in the unsharded table (shards.ORDER columns); `earlier`
    then holds the rows its kinds read that other shards made (the reinit rows of the joint robust set).
    """
    missing = [s for s in settings["splits"] if s not in splits]
    if missing:
        raise ValueError(f"probes.splits: no data for split(s) {missing}; splits given: {list(splits)}")
    unknown = sorted(set(settings["subset"]) - set(splits))
    if unknown:
        raise ValueError(f"probes.subset: no data for split(s) {unknown}; splits given: {list(splits)}")
    model = factory()
    # Model, checkpoints and data checked against each other before anything is evaluated.
    num_classes = inputs.validate(
        model, checkpoints, splits, num_classes, transform=transform, allow_nonfinite=allow_nonfinite
    )
    units = inventory(model, unit_rule)
    epochs = sorted(checkpoints)
    final = checkpoints[epochs[-1]]
    seeds, drawn = _draws(factory, settings, run)

    def source(key: tuple[str, int]) -> State:
        kind, index = key
        return checkpoints[index] if kind == "checkpoint" else drawn[index][1]

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
    wanted = set(shard["kinds"]) if shard else {k.name for k in active}
    for kind in active:
        if kind.check and kind.name in wanted:
            kind.check(kinds.Context(**context, rows=[]))
    data = {
        kind.name: _data_of(kind, settings, run["seed"], splits, prepare)
        for kind in active
        if kind.subset and kind.name in wanted
    }
    probed = {
        s: subsample(*splits[s], settings["subset"].get(s), "probe subset", settings["subset_seed"], s)
        for s in settings["splits"]
    }
    probed = {s: (prepare(x), y) for s, (x, y) in probed.items()}

    rows: list[dict] = list(earlier or [])  # what the kinds of later stages read
    placed: list[dict] = []  # shard rows: each with its place in the unsharded table (shards.ORDER)

    def evaluate(variants: list, on_data: Splits, noise: dict | None = None) -> list[dict]:
        return engine.evaluate(
            model,
            units,
            variants,
            final,
            source,
            on_data,
            settings["bn_stats"],
            device=device,
            memory_budget=memory_budget,
            progress=f"probe {run['run']}" if progress else None,
            ops=ops,
            noise=noise,
        )

    def place(evaluated: list[dict], on_data: Splits, places: list[tuple[int, int]], round_: int) -> None:
        split_index = {name: j for j, name in enumerate(on_data)}
        placed.extend(
            {
                "round": round_,
                "unit_index": unit,
                "variant": variant,
                "split_index": split_index[r["split"]],
                **with_intervals(r),
            }
            for r, (unit, variant) in zip(evaluated, [p for p in places for _ in on_data], strict=True)
        )

    for stage in shards.stages([k for k in active if k.name in wanted]):
        described = [(kind, kind.variants(kinds.Context(**context, rows=rows))) for kind in stage]
        for on, members in shards.calls(described).items():
            on_data = probed if on is None else data[on]
            chosen = [(v, i) for _, vs in members for i, v in enumerate(vs) if not shard or shards.selects(shard, v)]
            if chosen:
                evaluated = evaluate([v for v, _ in chosen], on_data)
                rows += evaluated
                place(evaluated, on_data, [(0, i) for _, i in chosen], 0)
            searching = [(kind, vs) for kind, vs in members if kind.refine]
            if searching:
                ctx = kinds.Context(**context, rows=rows)
                rows += _search(searching, ctx, rows, shard, on_data, evaluate, place, memory_budget // 4)
    if shard:
        return {"robustness": tables.frame(placed, shards.ORDER + tables.ROBUSTNESS, run)}
    return {
        "robustness": tables.frame(placed, tables.ROBUSTNESS, run),
        **unit_tables(units, checkpoints, drawn, run, num_classes),
    }


def _search(
    searching: list[tuple[kinds.ProbeKind, list]],
    ctx: kinds.Context,
    rows: list[dict],
    shard: dict | None,
    on_data: Splits,
    evaluate: Callable[[list, Splits], list[dict]],
    place: Callable[[list[dict], Splits, list[tuple[int, int]], int], None],
    noise_budget: int,
) -> list[dict]:
    """The searches (ProbeKind.refine) of one call's kinds, round after round, each round one engine call;
    returns their rows. A row's place in the unsharded table is its round, its unit's position and its
    index among that unit's variants of the round: the same in a shard, which holds whole units.

    The rounds reuse their noise seeds (criticality: one per unit, α and sample), so the noise the first
    round draws is kept for the others when it fits `noise_budget` bytes (later rounds are subsets)."""
    position = {u.name: u.index for u in ctx.units}
    own = {kind.name: [r for r in rows if r["probe"] == kind.name] for kind, _ in searching}
    if shard:  # the kinds' whole-model rows (a baseline) that another shard of the kind evaluates
        missing = [(kind, v) for kind, vs in searching for v in vs if v.whole and not shards.selects(shard, v)]
        if missing:
            evaluated = evaluate([v for _, v in missing], on_data)
            for (kind, _), r in zip([m for m in missing for _ in on_data], evaluated, strict=True):
                own[kind.name].append(r)
    out, drawn = [], None
    for round_ in itertools.count(1):
        new = []
        for kind, _ in searching:
            found = kind.refine.step(ctx, own[kind.name]) or []
            new += [(kind, v) for v in sorted(found, key=lambda v: min(position[u] for u in v.units))]
        if not new:
            return out
        if round_ == 1:
            drawn = {} if _noise_bytes([v for _, v in new], ctx.units) <= noise_budget else None
        evaluated = evaluate([v for _, v in new], on_data, drawn)
        counts: dict[tuple[str, int], int] = {}
        places = []
        for kind, v in new:
            unit = min(position[u] for u in v.units)
            places.append((unit, counts.setdefault((kind.name, unit), 0)))
            counts[(kind.name, unit)] += 1
        place(evaluated, on_data, places, round_)
        for (kind, _), r in zip([n for n in new for _ in on_data], evaluated, strict=True):
            own[kind.name].append(r)
        out += evaluated


def _noise_bytes(variants: list, units: list) -> int:
    """An upper bound on the bytes of the noise of `variants`, one draw per seed (float64 entries)."""
    size = {u.name: u.n_params for u in units}
    draws = {(v.seed, v.units) for v in variants if v.noisy}
    return sum(8 * size[name] for _, names in draws for name in names)


def unit_tables(
    units: list, checkpoints: dict[int, State], drawn: list[tuple[int, State]], run: dict, num_classes: int
) -> dict[str, pd.DataFrame]:
    """The `distances` and `inventory` tables of one run (the merge of a sharded run makes them too)."""
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
        "distances": tables.frame(distances.table_rows(units, checkpoints, drawn), tables.DISTANCES, run),
        "inventory": tables.frame(unit_rows, tables.INVENTORY, run),
    }


def merge_run(
    factory: Callable[[], nn.Module],
    checkpoints: dict[int, State],
    parts: list[pd.DataFrame],
    settings: dict,
    run: dict,
    num_classes: int,
    unit_rule: str | dict | None = None,
) -> dict[str, pd.DataFrame]:
    """A sharded run's tables: its shards' rows in the unsharded order, and its distances and inventory."""
    _, drawn = _draws(factory, settings, run)
    units = inventory(factory(), unit_rule)
    return {
        "robustness": shards.merge(parts, settings, tables.ROBUSTNESS),
        **unit_tables(units, checkpoints, drawn, run, num_classes),
    }


def _draws(factory: Callable[[], nn.Module], settings: dict, run: dict) -> tuple[list[int], list[tuple[int, State]]]:
    """The re-randomization draws' seeds and fresh states (none when re-randomization is off)."""
    settings = settings.get("rerandomize", {"enabled": False})  # a shard's settings hold it only when it draws
    seeds = draw_seeds(settings["seed"], run["seed"], settings["draws"]) if settings["enabled"] else []
    return seeds, [(seed, fresh_state(factory, seed)) for seed in seeds]


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
