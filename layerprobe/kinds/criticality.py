"""Module criticality (Chatterji, Neyshabur & Sedghi, ICLR 2020; paper-notes §2).

Each unit at θ^α = (1 − α)·θ^0 + α·θ^T plus Gaussian noise σ·E, over an α × σ grid with several
noise samples, on a seeded subset of one split; one more variant, the unperturbed model (fullmodel
at α = 1, σ = 0), gives the baseline the feasibility is relative to. E is drawn from a seed of
(unit, α, sample), not of σ, so each sample is one ray along which only σ scales the noise.

Then, for each unit and α, a search (the kind's `refine`, run by the study round after round) finds
the largest feasible σ, σ*(α): it starts from the grid's bracket (its largest feasible σ and the
next infeasible one), steps a decade down or up where the grid has none of either (to the search's
floor or ceiling), and bisects log σ to the `search.tolerance`. Feasible: the mean `measure` over
the samples within the `feasibility` setting, which the search applies while probing.

Aggregation makes two tables: criticality.csv, the grid graded (feasible points, their scores
α²‖θ^T − θ^0‖²/σ², the grid's minimal point), and criticality_refined.csv, σ*(α) per unit × α and
its score α²‖θ^T − θ^0‖²/σ*(α)². units.csv gets μ = the refined minimum over α (0 where α = 0 is
feasible, ∞ where no α is), the grid's minimum beside it, and the run's network criticality Σ μ.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from layerprobe.base.names import FULLMODEL
from layerprobe.base.seeds import derive_seed
from layerprobe.config.values import alpha_grid, sigma_grid, sigma_search_problems
from layerprobe.kinds.base import Context, Figure, ProbeKind, Refine, Subset, Summary, Table
from layerprobe.probing.variants import Variant, check_alphas
from layerprobe.results.columns import RUN_COLUMNS

if TYPE_CHECKING:
    import pandas as pd

    from layerprobe.models.units import Unit

KEYS = ["run", "unit"]
START = 0  # the checkpoint the interpolation starts from: the initialization
GRID, SEARCH = "criticality", "criticality_search"  # the `probe` values of the grid's rows and the search's
STEP = 10.0  # the factor per round by which the search leaves a grid that has no feasible (infeasible) σ
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
REFINED_COLUMNS = RUN_COLUMNS + [
    "unit",
    "alpha",
    "split",
    "n",
    "samples",
    "measure",
    "threshold",
    "evaluated",
    "sigma",
    "sigma_above",
    "mean_error",
    "mean_loss",
    "feasible",
    "distance_sq",
    "score",
    "chosen",
]


def describe(
    units: list[Unit],
    alphas: Sequence[float],
    sigmas: Sequence[float],
    noise_seeds: Mapping[tuple[str, int, int], int],
    start: int = START,
) -> list[Variant]:
    """Each unit at θ^α plus noise σ·E, for every α × σ × sample; `noise_seeds[(unit, i_α, sample)]`
    seeds each noise draw E, the same for every σ. One more variant, the unperturbed model (fullmodel
    at α = 1, σ = 0), first."""
    check_alphas(alphas)
    if any(not s > 0 for s in sigmas):
        raise ValueError(f"criticality: every σ must be > 0 (σ = 0 is the plain interpolation), got {list(sigmas)}")
    names = tuple(u.name for u in units)
    out = [Variant(GRID, FULLMODEL, names, ("checkpoint", start), alpha=1.0, sigma=0.0)]
    samples = sorted({key[2] for key in noise_seeds})
    for unit in units:
        for i, a in enumerate(alphas):
            for s in sigmas:
                out += [_noisy(GRID, unit.name, noise_seeds[(unit.name, i, k)], a, s, k, start) for k in samples]
    return out


def _noisy(probe: str, unit: str, seed: int, alpha: float, sigma: float, sample: int, start: int = START) -> Variant:
    return Variant(probe, unit, (unit,), ("checkpoint", start), seed, float(alpha), float(sigma), sample)


def noise_seeds(ctx: Context) -> dict[tuple[str, int, int], int]:
    """(unit, α index, sample) → the seed of that sample's noise E (no σ in it: σ only scales E)."""
    settings = ctx.section("criticality")
    base = (settings["seed"], ctx.run_seed)
    return {
        (u.name, i, k): derive_seed("criticality", *base, u.name, i, k)
        for u in ctx.units
        for i in range(len(alpha_grid(settings["alphas"])))
        for k in range(settings["samples"])
    }


def variants(ctx: Context) -> list[Variant]:
    settings = ctx.section("criticality")
    return describe(ctx.units, alpha_grid(settings["alphas"]), sigma_grid(settings["sigmas"]), noise_seeds(ctx))


def check(ctx: Context) -> None:
    problems = sigma_search_problems(ctx.section("criticality"))
    if problems:
        raise ValueError("; ".join(problems))


def subset(settings: dict, run_seed: int) -> Subset:
    return Subset(settings["split"], settings["subset"], ("criticality subset", settings["seed"], run_seed))


# --- The search: plain Python on rows, the same in the probe job (to choose σ) and in aggregation ---------


@dataclass(frozen=True)
class Point:
    """One σ on a ray (unit, α): the means over the noise samples and whether they are feasible."""

    sigma: float
    mean_error: float
    mean_loss: float
    feasible: bool


@dataclass(frozen=True)
class Ray:
    """A unit at one α: every σ evaluated on it (grid and search), in increasing order."""

    unit: str
    alpha: float
    split: str
    n: int
    samples: int
    threshold: float
    points: tuple[Point, ...]

    def bracket(self) -> tuple[Point | None, float | None]:
        """The largest feasible point (None: none is) and the smallest infeasible σ above it (None: none)."""
        feasible = [p for p in self.points if p.feasible]
        low = feasible[-1] if feasible else None
        above = [p.sigma for p in self.points if not p.feasible and (low is None or p.sigma > low.sigma)]
        return low, (above[0] if above else None)


def mean(values: Iterable[float]) -> float:
    """The mean, from the correctly rounded sum (math.fsum): the same bits in whatever order rows come."""
    values = list(values)
    return math.fsum(values) / len(values)


def threshold(rows: list[dict], measure: str, tolerance: str, value: float) -> float:
    """The feasibility bound: `value` (absolute), or the unperturbed model's `measure` times `value`
    (relative) or plus `value` (increase)."""
    if tolerance == "absolute":
        return value
    base = [r[measure] for r in rows if r["probe"] == GRID and r["unit"] == FULLMODEL]
    if len(base) != 1:
        raise ValueError(f"criticality: a {tolerance} feasibility needs the one unperturbed row, found {len(base)}")
    return value * base[0] if tolerance == "relative" else base[0] + value


def rays(rows: Iterable[dict], feasibility: dict) -> dict[tuple[str, float], Ray]:
    """One run's criticality rows (grid and search; other rows are ignored) as rays, by (unit, α)."""
    rows = [r for r in rows if r["probe"] in (GRID, SEARCH)]
    bound = threshold(rows, **feasibility)
    samples: dict[tuple[str, float, float], list[dict]] = {}
    for r in rows:
        if r["unit"] != FULLMODEL:
            samples.setdefault((r["unit"], float(r["alpha"]), float(r["sigma"])), []).append(r)
    points: dict[tuple[str, float], list[tuple[Point, dict]]] = {}
    for (unit, alpha, sigma), own in samples.items():
        error, loss = mean(r["error"] for r in own), mean(r["loss"] for r in own)
        measured = error if feasibility["measure"] == "error" else loss
        points.setdefault((unit, alpha), []).append((Point(sigma, error, loss, measured <= bound), own[0]))
    out = {}
    for (unit, alpha), found in points.items():
        first = found[0][1]
        ray = sorted((p for p, _ in found), key=lambda p: p.sigma)
        count = len(samples[(unit, alpha, ray[0].sigma)])
        out[(unit, alpha)] = Ray(unit, alpha, first["split"], int(first["n"]), count, bound, tuple(ray))
    return out


def next_sigma(ray: Ray, search: dict) -> float | None:
    """The σ to evaluate next on a ray, or None when its search is done (see the module docstring)."""
    low, high = ray.bracket()
    floor, ceiling = search["floor"], search["ceiling"]
    if low is None:  # nothing feasible yet: a decade further down, until the floor is infeasible too
        return None if high <= floor else max(high / STEP, floor)
    if high is None:  # feasible up to the largest σ tried: a decade further up, to the ceiling
        return None if low.sigma >= ceiling else min(low.sigma * STEP, ceiling)
    if high <= low.sigma * (1 + search["tolerance"]):
        return None
    return math.sqrt(low.sigma * high)  # the midpoint in log σ


def refine(ctx: Context, rows: list[dict]) -> list[Variant]:
    """The search's next round: for every unit × α whose search goes on, its next σ for every sample (the
    same seeds as the grid's). Units without rows here (another shard's) are not searched."""
    settings = ctx.section("criticality")
    found = rays(rows, settings["feasibility"])
    seeds = noise_seeds(ctx)
    out = []
    for unit in ctx.units:
        for i, alpha in enumerate(alpha_grid(settings["alphas"])):
            ray = found.get((unit.name, float(alpha)))
            sigma = None if ray is None else next_sigma(ray, settings["search"])
            if sigma is not None:
                out += [
                    _noisy(SEARCH, unit.name, seeds[(unit.name, i, k)], alpha, sigma, k)
                    for k in range(settings["samples"])
                ]
    return out


# --- Aggregation ----------------------------------------------------------------------------------------


def _moved_sq(distances: pd.DataFrame) -> pd.Series:
    """‖θ^T − θ^0‖² per (run, unit): the squared distance at the final checkpoint."""
    moved = distances[distances["source"] == "checkpoint"]
    moved = moved[moved["checkpoint"] == moved.groupby(KEYS)["checkpoint"].transform("max")]
    return moved.set_index(KEYS)["l2"].pow(2).rename("distance_sq")


def grade(
    robustness: pd.DataFrame,
    distances: pd.DataFrame,
    measure: str = "loss",
    tolerance: str = "relative",
    value: float = 1.01,
) -> pd.DataFrame:
    """criticality.csv: every run × unit × α × σ grid point with its mean over the noise samples,
    whether it is feasible, its score α²‖θ^T − θ^0‖²/σ², and the chosen (minimal) point per unit.

    Feasible: mean `measure` ≤ value × the unperturbed model's (relative), ≤ the unperturbed model's
    + value (increase) or ≤ value (absolute).
    """
    from layerprobe.results.tables import frame  # here: the Snakefile imports this module without pandas

    rows = robustness[robustness["probe"] == GRID]
    keys = ["run", "split"]
    base = rows[rows["unit"] == FULLMODEL].set_index(keys)[["error", "loss"]].add_prefix("baseline_")
    grid = (
        rows[rows["unit"] != FULLMODEL]
        .groupby(["run", "unit", "alpha", "sigma", "split"], sort=False)
        .agg(n=("n", "first"), samples=("error", "size"), mean_error=("error", mean), mean_loss=("loss", mean))
        .reset_index()
    )
    if grid.empty:
        return frame([], COLUMNS)
    grid = (
        grid.join(base, on=keys)
        .join(_moved_sq(distances), on=KEYS)
        .join(robustness.groupby("run")[RUN_COLUMNS[1:]].first(), on="run")
    )
    grid["measure"] = measure
    baseline = grid[f"baseline_{measure}"]
    grid["threshold"] = {"relative": value * baseline, "increase": baseline + value}.get(tolerance, value)
    grid["feasible"] = grid[f"mean_{measure}"] <= grid["threshold"]
    grid["score"] = (grid["alpha"] ** 2 * grid["distance_sq"] / grid["sigma"] ** 2).where(grid["feasible"])
    best = grid.dropna(subset=["score"]).groupby(KEYS, sort=False)["score"].idxmin()
    grid["chosen"] = grid.index.isin(best)
    return frame(grid.to_dict("records"), COLUMNS)


def refined(robustness: pd.DataFrame, distances: pd.DataFrame, feasibility: dict) -> pd.DataFrame:
    """criticality_refined.csv: per run × unit × α, σ*(α) (the largest feasible σ of grid and search;
    empty when none is), the smallest infeasible σ above it, the means there, and the score
    α²‖θ^T − θ^0‖²/σ*(α)²; `chosen` marks each unit's minimal score, its μ."""
    from layerprobe.results.tables import frame  # here: the Snakefile imports this module without pandas

    rows = robustness[robustness["probe"].isin([GRID, SEARCH])]
    moved = _moved_sq(distances)
    run_columns = robustness.groupby("run")[RUN_COLUMNS[1:]].first()
    out = []
    for run, own in rows.groupby("run", sort=False):
        for (unit, alpha), ray in rays(own.to_dict("records"), feasibility).items():
            low, high = ray.bracket()
            distance_sq = moved.get((run, unit), math.nan)
            out.append(
                {
                    "run": run,
                    **run_columns.loc[run].to_dict(),
                    "unit": unit,
                    "alpha": alpha,
                    "split": ray.split,
                    "n": ray.n,
                    "samples": ray.samples,
                    "measure": feasibility["measure"],
                    "threshold": ray.threshold,
                    "evaluated": len(ray.points),
                    "sigma": low.sigma if low else math.nan,
                    "sigma_above": math.nan if high is None else high,
                    "mean_error": low.mean_error if low else math.nan,
                    "mean_loss": low.mean_loss if low else math.nan,
                    "feasible": low is not None,
                    "distance_sq": distance_sq,
                    "score": alpha**2 * distance_sq / low.sigma**2 if low else math.nan,
                }
            )
    table = frame(out, REFINED_COLUMNS)
    if table.empty:
        return table
    best = table.dropna(subset=["score"]).groupby(KEYS, sort=False)["score"].idxmin()
    table["chosen"] = table.index.isin(best)
    return table


def _minimum(table: pd.DataFrame, units: pd.DataFrame) -> pd.DataFrame:
    """Per (run, unit): the chosen point's score, α and σ (∞, with no point, where a unit has rows but no
    feasible point; NaN where it has none)."""
    import numpy as np  # here: the Snakefile imports this module without numpy

    out = units.set_index(KEYS)[[]]
    chosen = table[table["chosen"].astype(bool)].set_index(KEYS)[["score", "alpha", "sigma"]]
    out = out.join(chosen).join(table.groupby(KEYS).size().rename("points"))
    out["score"] = out["score"].where(out["points"].isna() | out["score"].notna(), np.inf)
    out["total"] = out.groupby("run")["score"].transform(lambda c: c.sum(min_count=1))
    return out


def summary(units, robustness, distances, tables, section, categories):
    """μ per unit, refined (its α and σ*) and on the grid; the network's are their sums."""
    columns = list(VERDICTS)
    out = units.set_index(KEYS)[[]]
    if tables["criticality"].empty:
        return out.reindex(columns=columns)
    best, grid = _minimum(tables["criticality_refined"], units), _minimum(tables["criticality"], units)
    out["criticality"] = best["score"]
    out["criticality_alpha"] = best["alpha"]
    out["criticality_sigma"] = best["sigma"]
    out["network_criticality"] = best["total"]
    out["criticality_grid"] = grid["score"]
    out["network_criticality_grid"] = grid["total"]
    return out[columns]


VERDICTS = (
    "criticality",
    "criticality_alpha",
    "criticality_sigma",
    "network_criticality",
    "criticality_grid",
    "network_criticality_grid",
)


def draw_grid(table, run, refined_table):
    from layerprobe.results import figures  # here: the Snakefile imports this module without matplotlib

    return figures.criticality_grid(table, run, refined_table)


KIND = ProbeKind(
    name="criticality",
    variants=variants,
    subset=subset,
    check=check,
    refine=Refine(SEARCH, refine),
    summary=Summary(measures=(), verdicts=VERDICTS, compute=summary),
    tables=(
        Table(
            "criticality",
            COLUMNS,
            make=lambda robustness, distances, section: grade(robustness, distances, **section["feasibility"]),
        ),
        Table(
            "criticality_refined",
            REFINED_COLUMNS,
            make=lambda robustness, distances, section: refined(robustness, distances, section["feasibility"]),
        ),
    ),
    figures=(
        Figure(
            rule="criticality",
            pattern="criticality",
            table="criticality",
            more=("criticality_refined",),
            draw=draw_grid,
            caption="criticality.rst",
            category="Criticality",
            label="criticality",
        ),
    ),
    # The whole section, the feasibility too: the search applies it while probing.
    aggregate_settings=lambda section: {"feasibility": section["feasibility"]},
)
