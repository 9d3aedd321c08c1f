"""Joint robustness (paper F10): sets of units reset together, to every checkpoint and by every draw.

The sets are the run's `joint_groups`, the `robust` set (every unit that re-initialization left in
the robust category by its point error, units.csv's `category_point`, so this kind runs after reinit
and its job depends on `categories`), and the
cumulative sets, bottom-up ("up to <unit>") and top-down ("from <unit>"). Each set is
re-randomized with the same draws as the single units, so only when re-randomization is on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from layerprobe.base.names import FULLMODEL
from layerprobe.kinds.base import Context, Figure, ProbeKind
from layerprobe.probing.variants import Variant
from layerprobe.results.categories import categorize, chance_error

if TYPE_CHECKING:
    pass

ROBUST = "robust"


def check(ctx: Context) -> None:
    """The run's groups name its units; the checkpoints asked for exist."""
    _groups(ctx)
    absent = sorted(set(_epochs(ctx)) - set(ctx.epochs))
    if absent:
        raise ValueError(f"probes.joint.checkpoints: no checkpoint at epoch(s) {absent}; epochs: {ctx.epochs}")


def variants(ctx: Context) -> list[Variant]:
    settings = ctx.section("joint")
    sets = _groups(ctx) + (cumulative_sets(ctx.units) if settings["cumulative"] else [])
    if settings["robust"] and ctx.rows is not None:  # known only once re-initialization has run
        robust = _robust_units(ctx)
        if robust:
            sets.append((ROBUST, robust))
        else:
            print("joint: no unit is robust, so there is no 'robust' set to reset")
    return describe(sets, _epochs(ctx), ctx.draw_seeds)


def describe(sets: Sequence[tuple[str, Sequence[str]]], epochs: list[int], draw_seeds: list[int]) -> list[Variant]:
    """Each (label, units) set reset together to every checkpoint, then re-randomized by every draw."""
    out = []
    for label, members in sets:
        members, text = tuple(members), " ".join(members)
        out += [Variant("joint", label, members, ("checkpoint", tau), members=text) for tau in epochs]
        out += [Variant("joint", label, members, ("draw", k), seed, members=text) for k, seed in enumerate(draw_seeds)]
    return out


def cumulative_sets(units) -> list[tuple[str, tuple[str, ...]]]:
    """Bottom-up sets (units 1..k, "up to <unit k>") then top-down sets (units k..D, "from <unit k>")."""
    names = [u.name for u in units]
    return [(f"up to {n}", tuple(names[: k + 1])) for k, n in enumerate(names)] + [
        (f"from {n}", tuple(names[k:])) for k, n in reversed(list(enumerate(names)))
    ]


def _epochs(ctx: Context) -> list[int]:
    chosen = ctx.section("joint")["checkpoints"]
    return ctx.epochs if chosen is None else sorted(chosen)


def _groups(ctx: Context) -> list[tuple[str, tuple[str, ...]]]:
    """The run's joint_groups, unit names checked, members in forward order."""
    names = [u.name for u in ctx.units]
    sets = []
    for label, members in ctx.joint_groups.items():
        unknown = [m for m in members if m not in names]
        if unknown:
            raise ValueError(f"joint_groups.{label}: unknown unit(s) {unknown}; units: {', '.join(names)}")
        if label in (FULLMODEL, ROBUST):
            raise ValueError(f"joint_groups: {label!r} is a reserved set name")
        sets.append((label, tuple(sorted(members, key=names.index))))
    return sets


def _robust_units(ctx: Context) -> tuple[str, ...]:
    """Units whose re-initialization (τ = 0, test split) leaves them in the `robust` category, judged
    on the point error (units.csv's `category_point`): the set asks whether the units that each look
    expendable alone are so together, so a unit whose interval merely reaches past the threshold
    stays in it (units.csv's `category` calls such a unit uncertain)."""
    test = [r for r in ctx.rows if r["probe"] == "reinit" and r["split"] == "test"]
    if not test:
        raise ValueError(
            "probes.joint.robust: the robust set comes from re-initialization on the 'test' split; "
            "enable probes.reinit and probe a 'test' split, or set probes.joint.robust: false"
        )
    final_epoch = ctx.epochs[-1]
    final_error = next(r["error"] for r in test if r["unit"] == FULLMODEL and r["checkpoint"] == final_epoch)
    limits = ctx.categories["robust_max_increase"], ctx.categories["critical_fraction"]
    return tuple(
        r["unit"]
        for r in test
        if r["unit"] != FULLMODEL
        and r["checkpoint"] == 0
        and categorize(r["error"], final_error, chance_error(ctx.num_classes), *limits) == ROBUST
    )


def draw_heatmap(table, run, split):
    from layerprobe.results import figures  # here: the Snakefile imports this module without matplotlib

    return figures.joint_heatmap(table, run, split)


KIND = ProbeKind(
    name="joint",
    variants=variants,
    after=("reinit",),
    reads=("rerandomize",),
    check=check,
    figures=(
        Figure(
            rule="joint",
            pattern="joint_{split}",
            table="robustness",
            draw=draw_heatmap,
            caption="joint.rst",
            category="Joint",
            label="{split} error",
            values=lambda probes: {"split": probes["splits"]},
        ),
    ),
    uses_categories=lambda section: section["enabled"] and section["robust"],
)
