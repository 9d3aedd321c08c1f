"""Probe work in shards: one run's variants split into several jobs, by probe kind and groups of units.

How a run's variants reach the engine: the enabled kinds are evaluated in stages (a kind one stage
after the kinds whose rows it reads), and in a stage the variants of the kinds evaluating on the same
data go to the engine in one call (`stages`, `calls`). The study runs exactly this; a shard runs a
part of it. A shard never splits what the engine evaluates together — its groups are the sets of
units a variant resets, and kinds whose variants share those groups (re-initialization and
re-randomization reset the same units, from a checkpoint or a draw, in one batched call) stay in one
shard — so every variant sees the very batches, chunks and slices it would see unsharded, and the
merged table equals the unsharded one bit for bit. Shard rows carry their position in the unsharded
table: its variant's index among its kind's variants and its split's among the call's (`ORDER`),
by which `merge` puts them back in place. Both depend only on the kind's own settings (and the
shared ones), so a shard whose settings did not change need not run again.

The plan is made at workflow parse time, without torch: the units and their multiply-adds come from
the model settings (config.shapes), the variants from the kinds' own descriptions, and a shard's
cost is estimated as Σ over its variants of inputs × the multiply-adds of the variant's first reset
unit and all after it. `resources.probe.shards: N` splits each kind's work into N jobs of about
equal cost; `resources.probe.shard_macs` instead caps each job's estimated cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from layerprobe import kinds
from layerprobe.config import datasets as declared
from layerprobe.config.shapes import UnitShape
from layerprobe.probing.variants import Variant, batch_key

# A shard row's place among its kind's rows (see merge): round 0 holds the kind's variants, by their index
# among them (unit_index 0); round r ≥ 1 a search round's (ProbeKind.refine), by their unit's position and
# their index among that unit's variants of the round.
ORDER = ["round", "unit_index", "variant", "split_index"]
H200_MACS_PER_S = 33.5e12  # float32 multiply-adds per second of one H200 (67 TFLOP/s): for estimates only


@dataclass(frozen=True)
class Shard:
    name: str  # e.g. "reinit+rerandomize.0": its kinds and its number among their shards
    kinds: tuple[str, ...]
    groups: tuple | None  # the engine groups (`group`) of the variants it evaluates (None: all of its kinds')
    variants: int  # variants known at planning (the joint robust set is known only once reinit ran)
    macs: float  # estimated multiply-adds

    def spec(self) -> dict:
        """What a shard job gets (plain values, as Snakemake params): its name, kinds and engine groups."""
        groups = None if self.groups is None else [_plain(g) for g in self.groups]
        return {"name": self.name, "kinds": list(self.kinds), "groups": groups}

    def hours(self, macs_per_s: float = H200_MACS_PER_S) -> float:
        """Its estimated time at `macs_per_s` (a floor: real runs take a few times longer)."""
        return self.macs / macs_per_s / 3600


def stages(active: list[kinds.ProbeKind]) -> list[list[kinds.ProbeKind]]:
    """The kinds in evaluation stages: a kind comes one stage after the latest (enabled) kind it reads."""
    names = {k.name for k in active}
    stage: dict[str, int] = {}
    for kind in active:  # registry order: a kind reads only kinds before it
        later = [a for a in kind.after if a in names and a not in stage]
        if later:
            raise ValueError(f"probe kind {kind.name!r} reads the rows of {later}, registered after it")
        stage[kind.name] = 1 + max((stage[a] for a in kind.after if a in names), default=-1)
    return [[k for k in active if stage[k.name] == s] for s in sorted(set(stage.values()))]


def calls(described: list[tuple[kinds.ProbeKind, list[Variant]]]) -> dict[str | None, list[tuple]]:
    """One stage's (kind, variants) by the data they are evaluated on: None for the probed splits, a
    kind's name for its own subset. Each entry is one engine call."""
    out: dict[str | None, list[tuple]] = {}
    for kind, variants in described:
        out.setdefault(kind.name if kind.subset else None, []).append((kind, variants))
    return out


def selects(spec: dict, variant: Variant) -> bool:
    """Whether the shard of `spec` evaluates `variant`."""
    return variant.probe in spec["kinds"] and (spec["groups"] is None or _plain(batch_key(variant)) in spec["groups"])


def _plain(key: tuple) -> list:
    """An engine group (variants.batch_key) as plain lists, the form it has in a job's params."""
    units, whole, start, noisy = key
    return [list(units), whole, None if start is None else list(start), noisy]


def plan(run: dict, config: dict) -> list[Shard]:
    """The shards of one run of a validated config; [] when the run is probed by one job."""
    resources = config["resources"]["probe"]
    if resources["shards"] == 1 and resources["shard_macs"] is None:
        return []
    probes = config["probes"]
    declaration = config["datasets"][run["dataset"]]
    context = kinds.planning_context(run, config)
    active = kinds.enabled(probes)
    if context is None:  # a model family without shapes: one shard per kind, cost unknown
        return [Shard(f"{k.name}.0", (k.name,), None, 0, math.nan) for k in active]
    shapes = context.units
    sizes = declared.examples(declaration)
    out = []
    for stage in stages(active):
        for on, members in calls([(k, k.variants(context)) for k in stage]).items():
            inputs = _inputs(probes, sizes, None if on is None else kinds.get(on))
            for family in _families(members):
                whole = any(k.after for k, _ in family)  # its variants are known only once earlier rows are
                out += _split(family, inputs, shapes, resources, whole)
    return out


def job_settings(shard: Shard, probes: dict) -> dict:
    """What of `probes` a shard's job depends on: the shared keys, its kinds' job settings and the
    sections they read, so editing another kind's settings reruns none of its jobs."""
    names = {k.name for k in kinds.kinds()}
    own = set(shard.kinds) | {r for name in shard.kinds for r in kinds.get(name).reads}
    jobs = kinds.job_settings(probes)
    return {key: value for key, value in jobs.items() if key not in names or key in own}


def reads(shard: Shard, plan_: list[Shard]) -> list[Shard]:
    """The shards of the run whose rows this shard's kinds read (the joint robust set reads reinit's)."""
    after = {a for name in shard.kinds for a in kinds.get(name).after}
    return [other for other in plan_ if after & set(other.kinds)]


def merge(parts: list, probes: dict, columns: list[str]):
    """A run's robustness table from its shards' rows (DataFrames with the ORDER columns), in the
    unsharded order: kinds by stage, call and place in the call (from `probes`), their search rounds
    after the call, then ORDER."""
    import pandas as pd  # here: the Snakefile imports this module without pandas

    from layerprobe.results.tables import frame

    place = {}
    for s, stage in enumerate(stages(kinds.enabled(probes))):
        for c, members in enumerate(calls([(k, []) for k in stage]).values()):
            for m, (kind, _) in enumerate(members):
                place.update({probe: (s, c, m) for probe in [kind.name, *([kind.refine.probe] if kind.refine else [])]})
    rows = pd.concat(parts, ignore_index=True)
    unknown = sorted(set(rows["probe"]) - set(place))
    if unknown:
        raise ValueError(f"shard rows of probe kind(s) {unknown}, which the probe settings do not enable")
    key = pd.DataFrame(rows["probe"].map(place).tolist(), columns=["stage", "call", "member"], index=rows.index)
    # A call's searches run after it, round by round, each round every kind in the call's order.
    order = ["stage", "call", "round", "member", "unit_index", "variant", "split_index"]
    rows = pd.concat([key, rows], axis=1).sort_values(order, kind="stable")
    return frame(rows.to_dict("records"), columns)


def _suffix_macs(shapes: list[UnitShape]) -> dict[int, int]:
    """Unit index → multiply-adds of that unit and every one after it, per example."""
    total, out = 0, {}
    for shape in reversed(shapes):
        total += shape.macs
        out[shape.index] = total
    return out


def _inputs(probes: dict, sizes: dict[str, int], kind: kinds.ProbeKind | None) -> int:
    """Examples one variant is evaluated on: the probed splits (with their subsets), or a kind's subset."""
    if kind is None:
        return sum(
            min(sizes.get(s, declared.UNKNOWN_EXAMPLES), probes["subset"].get(s) or math.inf) for s in probes["splits"]
        )
    subset = kind.subset(probes[kind.name], 0)
    return min(sizes.get(subset.split, declared.UNKNOWN_EXAMPLES), subset.size or math.inf)


def _families(members: list[tuple]) -> list[list[tuple]]:
    """The call's kinds, joined where the engine evaluates their variants together (so one shard holds both)."""
    families: list[list[tuple]] = []
    for kind, variants in members:
        mine = {batch_key(v) for v in variants}
        joined = [f for f in families if mine & {batch_key(v) for _, vs in f for v in vs}]
        merged = [(kind, variants)] + [m for f in joined for m in f]
        families = [f for f in families if f not in joined] + [sorted(merged, key=lambda m: members.index(m))]
    return sorted(families, key=lambda f: members.index(f[0]))


def _split(family: list[tuple], inputs: int, shapes: list[UnitShape], resources: dict, whole: bool) -> list[Shard]:
    """A family's variants in shards of about equal cost, by their engine groups in forward order."""
    position = {u.name: u.index for u in shapes}
    suffix = _suffix_macs(shapes)
    cost: dict[tuple, float] = {}
    count: dict[tuple, int] = {}
    first = {}  # an engine group's first reset unit: where its prefix ends
    for _, variants in family:
        for v in variants:
            key = batch_key(v)
            first[key] = min(position[u] for u in v.units)
            cost[key] = cost.get(key, 0.0) + inputs * suffix[first[key]]
            count[key] = count.get(key, 0) + 1
    keys = sorted(cost, key=lambda k: (first[k], repr(k)))  # in forward order
    total = sum(cost.values())
    wanted = resources["shards"] if resources["shard_macs"] is None else math.ceil(total / resources["shard_macs"])
    wanted = 1 if whole else max(1, min(wanted, len(keys)))
    label = "+".join(k.name for k, _ in family)
    if wanted == 1:
        return [Shard(f"{label}.0", tuple(k.name for k, _ in family), None, sum(count.values()), total)]
    parts, current, done = [], [], 0.0
    for key in keys:  # greedy: close a shard once it reaches its share of the cost
        current.append(key)
        done += cost[key]
        if done >= total * (len(parts) + 1) / wanted and len(parts) < wanted - 1:
            parts.append(current)
            current = []
    if current:
        parts.append(current)
    return [
        Shard(
            f"{label}.{i}",
            tuple(k.name for k, _ in family),
            tuple(part),
            sum(count[k] for k in part),
            sum(cost[k] for k in part),
        )
        for i, part in enumerate(parts)
    ]


def main(argv: list[str] | None = None) -> int:
    """`python -m layerprobe.shards CONFIG [--config key=value ...]`: each run's shards and their estimates."""
    import argparse

    import yaml

    from layerprobe.config import ConfigError, validate
    from layerprobe.config.merge import merged

    parser = argparse.ArgumentParser(prog="python -m layerprobe.shards", description=main.__doc__)
    parser.add_argument("configfile", help="a workflow config (YAML)")
    parser.add_argument("--shards", type=int, help="override resources.probe.shards")
    parser.add_argument("--shard-macs", type=float, help="override resources.probe.shard_macs")
    parser.add_argument(
        "--config",
        nargs="*",
        default=[],
        metavar="KEY=YAML",
        help="settings laid over the file's (the form of Snakemake's --config)",
    )
    args = parser.parse_args(argv)
    with open(args.configfile) as handle:
        raw = yaml.safe_load(handle) or {}
    for item in args.config:
        key, _, value = item.partition("=")
        given = yaml.safe_load(value)
        raw[key] = merged(raw[key], given) if isinstance(raw.get(key), dict) and isinstance(given, dict) else given
    probe = raw.setdefault("resources", {}).setdefault("probe", {})
    if args.shards is not None:
        probe["shards"] = args.shards
    if args.shard_macs is not None:
        probe["shard_macs"] = args.shard_macs
    try:
        config = validate(raw)
    except ConfigError as err:
        parser.exit(2, f"{err}\n")
    print(f"{'run':<16} {'shard':<26} {'variants':>9} {'PMAC':>8} {'H200 min':>9} {'H200 h':>7}")
    for run in config["runs"]:
        for shard in plan(run, config) or [_unsharded(run, config)]:
            print(
                f"{run['name']:<16} {shard.name:<26} {shard.variants:>9} {shard.macs / 1e15:>8.2f} "
                f"{shard.hours() * 60:>9.1f} {shard.hours():>7.3f}"
            )
    print(
        f"Estimates: the float32 multiply-add floor at {H200_MACS_PER_S / 1e12:.1f} TMAC/s (one H200, 67 TFLOP/s); "
        "real runs take several times longer (benchmarks/RESULTS.md)."
    )
    return 0


def _unsharded(run: dict, config: dict) -> Shard:
    """The one job of an unsharded run, with its estimate."""
    whole = {
        **config,
        "resources": {
            **config["resources"],
            "probe": {**config["resources"]["probe"], "shards": 1, "shard_macs": math.inf},
        },
    }
    parts = plan(run, whole)
    return Shard(
        "(one job)",
        tuple(k for s in parts for k in s.kinds),
        None,
        sum(s.variants for s in parts),
        sum(s.macs for s in parts),
    )


if __name__ == "__main__":
    raise SystemExit(main())
