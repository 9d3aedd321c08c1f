"""What a probe kind declares: how it describes its variants, what it adds to the tables, its figures.

A kind is one module of layerprobe.kinds holding a `KIND = ProbeKind(...)`, plus its section
`probes.<name>` in the config schema. Everything else — the probe job, aggregation, the figure rules
and the report — reads the declaration, so adding a kind edits nothing else.

Kind modules are imported when the Snakefile is parsed (to know the figures to draw), where torch,
pandas and matplotlib need not be installed: at module level they import only plain-Python parts of
layerprobe, and a function that needs a heavy library imports it itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only
    import pandas as pd

    from layerprobe.models.units import Unit
    from layerprobe.probing.variants import Variant


@dataclass(frozen=True)
class Context:
    """What a kind describes its variants from: one trained run and the probe settings."""

    units: list[Unit]  # the run's units, in forward order (while planning: config.shapes.UnitShape, names only)
    epochs: list[int]  # the run's checkpoints, 0 and the final epoch included
    draw_seeds: list[int]  # seeds of the re-randomization draws (empty when re-randomization is off)
    settings: dict  # the config's `probes` section, defaults filled
    run_seed: int
    num_classes: int
    categories: dict  # the config's `categories` section
    joint_groups: dict  # the run's named sets of units
    # The rows of the kinds evaluated before this one (ProbeKind.after); None while the workflow plans,
    # before any evaluation: a kind then describes what it can without them.
    rows: list[dict] | None

    def section(self, name: str) -> dict:
        return self.settings[name]


@dataclass(frozen=True)
class Subset:
    """Data a kind evaluates on instead of the probed splits: a seeded subset of one split."""

    split: str
    size: int | None  # examples kept (None: all of the split)
    seed: tuple  # the parts the subset's seed is derived from


@dataclass(frozen=True)
class Table:
    """A table aggregation makes from the runs' rows: results/tables/{name}.csv."""

    name: str
    columns: list[str]
    make: Callable[[pd.DataFrame, pd.DataFrame, dict], pd.DataFrame]  # (robustness, distances, section)


@dataclass(frozen=True)
class Summary:
    """The columns a kind adds to units.csv: measurements first (placed with the other kinds'
    measurements), then what they imply (categories, scores: placed after every measurement)."""

    measures: tuple[str, ...]
    verdicts: tuple[str, ...]
    # (units so far, robustness, distances, this kind's tables, section, categories) -> DataFrame
    # indexed by (run, unit) holding exactly measures + verdicts
    compute: Callable[..., pd.DataFrame]


@dataclass(frozen=True)
class Refine:
    """A sequential search after a kind's variants: round after round, `step(ctx, rows)` reads the kind's
    rows so far (its variants', the earlier rounds') and returns the next round's variants, evaluated in one
    engine call, or nothing when the search is done.

    A unit's next variants may depend only on that unit's own rows and the kind's whole-model rows (a
    baseline), so a shard searches its own units: it evaluates the kind's whole-model variants too, keeping
    their rows out of its table, and its rounds hold exactly its units' part of the unsharded rounds."""

    probe: str  # the `probe` value of the search's rows (its variants'), e.g. "criticality_search"
    step: Callable[[Context, list[dict]], list[Variant] | None]


@dataclass(frozen=True)
class Figure:
    """One figure per run (or per configuration, or per sweep: `over`), drawn by rule {rule}_figure:
    results/figures/{run}/{pattern}.{png,pdf}, .../configurations/{configuration}/..., .../sweeps/{sweep}/...."""

    rule: str  # the rule's name less "_figure", e.g. "robustness"
    pattern: str  # the file stem with its wildcards, e.g. "robustness_{split}"
    table: str  # the aggregated table it reads (robustness, distances, units, or a kind's Table)
    # (table, subject, *more, **wildcards) -> matplotlib Figure; the subject is the run's name, or the
    # configuration {"name", "runs"}, or the sweep (config.sweeps.resolve)
    draw: Callable[..., Any]
    caption: str  # file under report/
    category: str  # the report's category
    label: str  # the report's label of one figure, with the same wildcards, e.g. "{split} error"
    values: Callable[[dict], dict[str, list]] = lambda probes: {}  # each wildcard's values, from `probes`
    categories: bool = False  # whether `draw` also takes the config's `categories` section (categories=...)
    more: tuple[str, ...] = ()  # further tables it reads, passed to `draw` after the subject
    over: str = "run"  # what one figure is of: "run", "configuration" (runs across seeds) or "sweep"


@dataclass(frozen=True)
class ProbeKind:
    """A probe kind: the `probe` column's value and its config section `probes.<name>`."""

    name: str
    variants: Callable[[Context], list[Variant]]
    # Its own data (e.g. criticality's seeded subset of the training split); None: the probed splits.
    subset: Callable[[dict, int], Subset] | None = None  # (section, run seed) -> Subset
    after: tuple[str, ...] = ()  # kinds whose rows `variants` reads (Context.rows): evaluated first
    reads: tuple[str, ...] = ()  # other kinds' sections its variants depend on (joint: the draws of rerandomize)
    check: Callable[[Context], None] | None = None  # the settings against the run, before any evaluation
    refine: Refine | None = None  # a search the study runs after its variants (criticality: the largest σ)
    summary: Summary | None = None
    tables: tuple[Table, ...] = ()
    figures: tuple[Figure, ...] = ()
    # What of its section the probe job depends on (a setting used only by aggregation is left out,
    # so editing it reruns no probe), what aggregation depends on, and whether the probe job also
    # depends on the config's `categories`.
    job_settings: Callable[[dict], dict] = lambda section: section
    aggregate_settings: Callable[[dict], dict] = lambda section: {}
    uses_categories: Callable[[dict], bool] = lambda section: False
