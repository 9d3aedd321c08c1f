"""The probe kinds, in one registry: reinit, rerandomize, interpolate, criticality, joint.

Each kind is a module here holding `KIND` (a `base.ProbeKind`) and a section `probes.<name>` of the
config schema. The built-in kinds are the schema's probe sections, in the schema's order, each found
as the module of the same name; `register` adds a kind from elsewhere. The workflow (probe job,
aggregation, figure rules, report) and the library face read the kinds from here and nothing else.

Importable without torch, pandas or matplotlib (see base): the Snakefile plans the figures from it.
"""

from __future__ import annotations

import importlib

from layerprobe.config import checkpoint_epochs, released
from layerprobe.config import datasets as declared
from layerprobe.config.schema import load_schema, probe_kinds
from layerprobe.config.shapes import released as released_shapes
from layerprobe.config.shapes import units as unit_shapes
from layerprobe.kinds.base import Context, Figure, ProbeKind, Refine, Subset, Summary, Table

__all__ = [
    "DISTANCE_FIGURE",
    "Context",
    "Figure",
    "ProbeKind",
    "Refine",
    "Subset",
    "Summary",
    "Table",
    "aggregate_settings",
    "enabled",
    "figure",
    "figures",
    "get",
    "job_settings",
    "kinds",
    "planning_context",
    "register",
    "tables",
    "uses_categories",
]

_REGISTRY: dict[str, ProbeKind] = {}


def _builtin() -> None:
    for name in probe_kinds(load_schema()):
        if name not in _REGISTRY:
            _REGISTRY[name] = importlib.import_module(f"layerprobe.kinds.{name}").KIND


def register(kind: ProbeKind) -> ProbeKind:
    """Add a kind (its section must be in the schema the config is validated with); returns it."""
    _builtin()
    if kind.name in _REGISTRY and _REGISTRY[kind.name] is not kind:
        raise ValueError(f"a probe kind named {kind.name!r} is registered already")
    _REGISTRY[kind.name] = kind
    return kind


def kinds() -> list[ProbeKind]:
    """Every kind, built-ins first in the schema's order."""
    _builtin()
    return list(_REGISTRY.values())


def get(name: str) -> ProbeKind:
    _builtin()
    if name not in _REGISTRY:
        raise ValueError(f"unknown probe kind {name!r}; known: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def enabled(probes: dict) -> list[ProbeKind]:
    """The kinds a `probes` section turns on (a kind without a section there is off)."""
    return [k for k in kinds() if probes.get(k.name, {}).get("enabled", False)]


def job_settings(probes: dict) -> dict:
    """What of `probes` a probe job depends on: the shared keys and each kind's job settings."""
    names = {k.name: k for k in kinds()}
    return {key: names[key].job_settings(value) if key in names else value for key, value in probes.items()}


def aggregate_settings(probes: dict) -> dict:
    """What of `probes` aggregation depends on, kind by kind (e.g. the criticality feasibility)."""
    return {k.name: k.aggregate_settings(probes[k.name]) for k in kinds() if k.name in probes}


def uses_categories(probes: dict) -> bool:
    """Whether a probe job depends on the config's `categories` (the joint probe's robust set)."""
    return any(k.uses_categories(probes[k.name]) for k in enabled(probes))


def planning_context(run: dict, config: dict) -> Context | None:
    """A run's Context read from a validated config alone, before training (`rows` None; the units are
    config.shapes.UnitShape): the workflow plans shards and checks unit names with it. None for a
    model family whose units the settings do not tell."""
    from layerprobe.kinds.rerandomize import draw_seeds  # here: the kind modules import this one

    declaration = config["datasets"][run["dataset"]]
    if run.get("released"):  # the units are the checkpoints' own: known once their config.json is on disk
        hf_config = released.model_config(run["released"])
        if hf_config is None:
            return None
        shapes = released_shapes(hf_config, run["released"]["units"], declared.input_shape(declaration))
        epochs = sorted(released.steps(run["released"]))
        num_classes = released.classes(hf_config)
    else:
        shapes = unit_shapes(run["model"], declared.input_shape(declaration), declaration["num_classes"])
        epochs = checkpoint_epochs(run["checkpoints"], run["train"]["epochs"])
        num_classes = declaration["num_classes"]
    if shapes is None:
        return None
    probes, redraw = config["probes"], config["probes"]["rerandomize"]
    return Context(
        units=shapes,
        epochs=epochs,
        draw_seeds=draw_seeds(redraw["seed"], run["seed"], redraw["draws"] if redraw["enabled"] else 0),
        settings=probes,
        run_seed=run["seed"],
        num_classes=num_classes,
        categories=config["categories"],
        joint_groups=run["joint_groups"],
        rows=None,
    )


def tables() -> list[Table]:
    """The tables aggregation makes besides units.csv, from every kind (empty for a kind that is off)."""
    return [t for k in kinds() for t in k.tables]


def _draw_distances(table, run, measure):
    from layerprobe.results import figures  # here: the Snakefile imports this module without matplotlib

    return figures.distance_heatmap(table, run, measure)


# Drawn for every run whatever the probes: every probe job measures the distances.
DISTANCE_FIGURE = Figure(
    rule="distance",
    pattern="distance_{measure}",
    table="distances",
    draw=_draw_distances,
    caption="distances.rst",
    category="Distances",
    label="{measure}",
    values=lambda probes: {"measure": ["l2", "linf", "l2_rel_init"]},
)


def figures(probes: dict | None = None) -> list[Figure]:
    """The figures of every run: the distances, then each kind's (enabled ones only, when `probes` is
    given), each figure once."""
    chosen = kinds() if probes is None else enabled(probes)
    out = {DISTANCE_FIGURE.rule: DISTANCE_FIGURE}
    for kind in chosen:
        for fig in kind.figures:
            out.setdefault(fig.rule, fig)
    return list(out.values())


def figure(rule: str) -> Figure:
    for fig in figures():
        if fig.rule == rule:
            return fig
    raise ValueError(f"unknown figure {rule!r}; known: {', '.join(f.rule for f in figures())}")
