"""Module criticality (Chatterji, Neyshabur & Sedghi, ICLR 2020; paper-notes §2).

Each unit at θ^α = (1 − α)·θ^0 + α·θ^T plus Gaussian noise σ·E, over an α × σ grid with several
noise samples, on a seeded subset of one split; one more variant, the unperturbed model (fullmodel
at α = 1, σ = 0), gives the baseline the feasibility is relative to. Aggregation grades the grid
(criticality.csv: feasible points and their scores α²‖θ^T − θ^0‖²/σ²) with the `feasibility`
setting, so editing that setting reruns no probe; units.csv gets each unit's μ, the minimal feasible
score (∞ when no point is feasible), and the run's network criticality Σ μ.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from layerprobe.base.names import FULLMODEL
from layerprobe.base.seeds import derive_seed
from layerprobe.config.values import alpha_grid, sigma_grid
from layerprobe.kinds.base import Context, Figure, ProbeKind, Subset, Summary, Table
from layerprobe.probing.variants import Variant, check_alphas
from layerprobe.results.columns import RUN_COLUMNS

if TYPE_CHECKING:
    import pandas as pd

    from layerprobe.models.units import Unit

KEYS = ["run", "unit"]
START = 0  # the checkpoint the interpolation starts from: the initialization
COLUMNS = RUN_COLUMNS + [
    "unit",
    "alpha",
    "sigma",
    "split",
    "n",
    "samples",
    "mean_error",
    "mean_loss",
    "baseline_error",
    "baseline_loss",
    "measure",
    "threshold",
    "feasible",
    "distance_sq",
    "score",
    "chosen",
]


def describe(
    units: list[Unit],
    alphas: Sequence[float],
    sigmas: Sequence[float],
    noise_seeds: Mapping[tuple[str, int, int, int], int],
    start: int = START,
) -> list[Variant]:
    """Each unit at θ^α plus noise σ·E, for every α × σ × sample; `noise_seeds[(unit, i_α, i_σ, sample)]`
    seeds each noise draw. One more variant, the unperturbed model (fullmodel at α = 1, σ = 0), first."""
    check_alphas(alphas)
    if any(not s > 0 for s in sigmas):
        raise ValueError(f"criticality: every σ must be > 0 (σ = 0 is the plain interpolation), got {list(sigmas)}")
    names = tuple(u.name for u in units)
    out = [Variant("criticality", FULLMODEL, names, ("checkpoint", start), alpha=1.0, sigma=0.0)]
    samples = sorted({key[3] for key in noise_seeds})
    for unit in units:
        for i, a in enumerate(alphas):
            for j, s in enumerate(sigmas):
                out += [
                    Variant(
                        "criticality",
                        unit.name,
                        (unit.name,),
                        ("checkpoint", start),
                        noise_seeds[(unit.name, i, j, k)],
                        float(a),
                        float(s),
                        k,
                    )
                    for k in samples
                ]
    return out


def variants(ctx: Context) -> list[Variant]:
    settings = ctx.section("criticality")
    alphas, sigmas = alpha_grid(settings["alphas"]), sigma_grid(settings["sigmas"])
    base = (settings["seed"], ctx.run_seed)
    seeds = {
        (u.name, i, j, k): derive_seed("criticality", *base, u.name, i, j, k)
        for u in ctx.units
        for i in range(len(alphas))
        for j in range(len(sigmas))
        for k in range(settings["samples"])
    }
    return describe(ctx.units, alphas, sigmas, seeds)


def subset(settings: dict, run_seed: int) -> Subset:
    return Subset(settings["split"], settings["subset"], ("criticality subset", settings["seed"], run_seed))


def grade(
    robustness: pd.DataFrame,
    distances: pd.DataFrame,
    measure: str = "loss",
    tolerance: str = "relative",
    value: float = 1.01,
) -> pd.DataFrame:
    """criticality.csv: every run × unit × α × σ grid point with its mean over the noise samples,
    whether it is feasible, its score α²‖θ^T − θ^0‖²/σ², and the chosen (minimal) point per unit.

    Feasible: mean `measure` ≤ value × the unperturbed model's (relative) or ≤ value (absolute).
    """
    from layerprobe.results.tables import frame  # here: the Snakefile imports this module without pandas

    rows = robustness[robustness["probe"] == "criticality"]
    keys = ["run", "split"]
    base = rows[rows["unit"] == FULLMODEL].set_index(keys)[["error", "loss"]].add_prefix("baseline_")
    grid = (
        rows[rows["unit"] != FULLMODEL]
        .groupby(["run", "unit", "alpha", "sigma", "split"], sort=False)
        .agg(n=("n", "first"), samples=("error", "size"), mean_error=("error", "mean"), mean_loss=("loss", "mean"))
        .reset_index()
    )
    if grid.empty:
        return frame([], COLUMNS)
    moved = distances[distances["source"] == "checkpoint"]
    moved = moved[moved["checkpoint"] == moved.groupby(KEYS)["checkpoint"].transform("max")]
    grid = (
        grid.join(base, on=keys)
        .join(moved.set_index(KEYS)["l2"].pow(2).rename("distance_sq"), on=KEYS)
        .join(robustness.groupby("run")[RUN_COLUMNS[1:]].first(), on="run")
    )
    grid["measure"] = measure
    grid["threshold"] = value * grid[f"baseline_{measure}"] if tolerance == "relative" else value
    grid["feasible"] = grid[f"mean_{measure}"] <= grid["threshold"]
    grid["score"] = (grid["alpha"] ** 2 * grid["distance_sq"] / grid["sigma"] ** 2).where(grid["feasible"])
    best = grid.dropna(subset=["score"]).groupby(KEYS, sort=False)["score"].idxmin()
    grid["chosen"] = grid.index.isin(best)
    return frame(grid.to_dict("records"), COLUMNS)


def summary(units, robustness, distances, tables, section, categories):
    """μ per unit: the chosen point's score, ∞ when no grid point is feasible; the network's is their sum."""
    import numpy as np  # here: the Snakefile imports this module without numpy

    grid = tables["criticality"]
    columns = ["criticality", "criticality_alpha", "criticality_sigma", "network_criticality"]
    out = units.set_index(KEYS)[[]]
    if grid.empty:
        return out.reindex(columns=columns)
    chosen = grid[grid["chosen"].astype(bool)].set_index(KEYS)
    measured = grid.groupby(KEYS).size().rename("grid_points")
    out = out.join(chosen[["score", "alpha", "sigma"]].add_prefix("criticality_")).join(measured)
    out["criticality"] = out["criticality_score"].where(
        out["grid_points"].isna() | out["criticality_score"].notna(), np.inf
    )
    out["network_criticality"] = out.groupby("run")["criticality"].transform(lambda c: c.sum(min_count=1))
    return out[columns]


def draw_grid(table, run):
    from layerprobe.results import figures  # here: the Snakefile imports this module without matplotlib

    return figures.criticality_grid(table, run)


KIND = ProbeKind(
    name="criticality",
    variants=variants,
    subset=subset,
    summary=Summary(
        measures=(),
        verdicts=("criticality", "criticality_alpha", "criticality_sigma", "network_criticality"),
        compute=summary,
    ),
    tables=(
        Table(
            "criticality",
            COLUMNS,
            make=lambda robustness, distances, section: grade(robustness, distances, **section["feasibility"]),
        ),
    ),
    figures=(
        Figure(
            rule="criticality",
            pattern="criticality",
            table="criticality",
            draw=draw_grid,
            caption="criticality.rst",
            category="Criticality",
            label="criticality",
        ),
    ),
    job_settings=lambda section: {k: v for k, v in section.items() if k != "feasibility"},
    aggregate_settings=lambda section: {"feasibility": section["feasibility"]},
)
