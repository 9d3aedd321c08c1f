"""Module criticality as defined: the search for the largest feasible σ per unit and α, beside the grid."""

import math

import pytest
import torch
from torch import nn

import layerprobe
from layerprobe.kinds import criticality
from layerprobe.kinds.criticality import Point, Ray, next_sigma
from layerprobe.models.units import inventory
from layerprobe.probing.compose import noise
from layerprobe.results import tables

SEARCH = {"tolerance": 0.05, "floor": 1e-4, "ceiling": 1.0}


def searched(grid: list[float], feasible, search: dict = SEARCH) -> Ray:
    """A ray whose feasibility is `feasible(σ)`, searched from `grid` until next_sigma stops."""
    points = [Point(s, 0.0, 0.0, feasible(s)) for s in grid]
    for _ in range(100):
        ray = Ray("u", 0.5, "train", 10, 1, 0.05, tuple(sorted(points, key=lambda p: p.sigma)))
        sigma = next_sigma(ray, search)
        if sigma is None:
            return ray
        assert search["floor"] <= sigma <= search["ceiling"] and sigma not in [p.sigma for p in points]
        points.append(Point(sigma, 0.0, 0.0, feasible(sigma)))
    raise AssertionError("the search does not end")


@pytest.mark.parametrize("crossing", [3e-4, 0.0011, 0.0137, 0.04, 0.3, 0.999])
@pytest.mark.parametrize("grid", [[0.001, 0.01, 0.1], [k / 11 for k in range(1, 12)], [0.05]])
def test_the_search_brackets_a_step_at_a_known_sigma_within_the_tolerance(grid, crossing):
    ray = searched(grid, lambda s: s <= crossing)
    low, high = ray.bracket()
    assert low.sigma <= crossing < high <= low.sigma * (1 + SEARCH["tolerance"])


def test_the_search_ends_at_the_floor_and_the_ceiling():
    never = searched([0.01, 0.1], lambda s: False)
    assert never.bracket() == (None, SEARCH["floor"])  # stepped down a decade a round, to the floor
    assert [p.sigma for p in never.points] == pytest.approx([1e-4, 1e-3, 0.01, 0.1])
    always = searched([0.01, 0.1], lambda s: True)
    assert always.bracket()[0].sigma == 1.0 and always.bracket()[1] is None
    assert [p.sigma for p in searched([0.3], lambda s: True).points] == [0.3, 1.0]  # up to the ceiling, not past it


def test_a_ray_at_the_tolerance_needs_no_search():
    ray = Ray("u", 0.5, "train", 10, 1, 0.05, (Point(0.1, 0, 0, True), Point(0.104, 0, 0, False)))
    assert next_sigma(ray, SEARCH) is None
    wider = Ray("u", 0.5, "train", 10, 1, 0.05, (Point(0.1, 0, 0, True), Point(0.4, 0, 0, False)))
    assert next_sigma(wider, SEARCH) == pytest.approx(0.2)  # the midpoint in log σ


def test_feasibility_is_the_fsum_mean_against_the_threshold():
    rows = [
        {"probe": "criticality", "unit": "fullmodel", "alpha": 1.0, "sigma": 0.0, "error": 0.0, "loss": 0.2, "n": 4}
    ] + [
        {"probe": probe, "unit": "u", "alpha": 0.5, "sigma": s, "draw": k, "split": "train", "error": e, "loss": loss}
        | {"n": 4}
        for probe, s, k, e, loss in [
            ("criticality", 0.1, 0, 0.25, 0.2),
            ("criticality", 0.1, 1, 0.0, 0.4),  # mean loss 0.3 ≤ 1.5 × 0.2
            ("criticality_search", 0.2, 0, 0.5, 0.3),
            ("criticality_search", 0.2, 1, 0.25, 0.32),  # mean loss 0.31 > 0.3
            ("reinit", 0.2, 1, 1.0, 9.0),  # not a criticality row
        ]
    ]
    ray = criticality.rays(rows, {"measure": "loss", "tolerance": "relative", "value": 1.5})[("u", 0.5)]
    assert ray.threshold == pytest.approx(0.3) and ray.samples == 2 and ray.n == 4
    assert [(p.sigma, p.feasible) for p in ray.points] == [(0.1, True), (0.2, False)]
    assert ray.points[0].mean_error == 0.125
    by_error = criticality.rays(rows, {"measure": "error", "tolerance": "absolute", "value": 0.125})[("u", 0.5)]
    assert [p.feasible for p in by_error.points] == [True, False]
    with pytest.raises(ValueError, match="the one unperturbed row"):
        criticality.rays(rows[1:], {"measure": "loss", "tolerance": "relative", "value": 1.5})


# --- A model whose feasible σ is known in closed form --------------------------------------------------------
#
# Unit "0" maps the input x = 1 to h = w + b, unit "2" scores class 0 by S² − h² against class 1's 0: every
# example is right while h² < S². The trained unit "0" is (w, b) = (0, 0), its initialization (W0, 0); at α
# with noise σ·(E_w, E_b), h = (1 − α)·W0 + σ·e with e = E_w + E_b, so the one noise sample is feasible (error
# 0 ≤ 0.5) exactly while σ < (S − (1 − α)·W0·sign(e)) / |e|.

S, W0 = 0.3, 0.1
ALPHAS = [0.0, 0.5, 1.0]
PROBES = {
    "rerandomize": {"enabled": False},
    "interpolate": {"enabled": False},
    "joint": {"enabled": False},
    "criticality": {
        "alphas": ALPHAS,
        "sigmas": [0.01, 0.1, 1.0],
        "samples": 1,
        "feasibility": {"measure": "error", "tolerance": "absolute", "value": 0.5},
        "search": {"tolerance": 0.01},
    },
}


class Square(nn.Module):
    def forward(self, x):
        return x * x


def build() -> nn.Module:
    return nn.Sequential(nn.Linear(1, 1), Square(), nn.Linear(1, 2))


def checkpoints() -> dict:
    final = {k: torch.zeros_like(v) for k, v in build().state_dict().items()}
    final["2.weight"] = torch.tensor([[-1.0], [0.0]])
    final["2.bias"] = torch.tensor([S * S, 0.0])
    start = dict(final, **{"0.weight": torch.tensor([[W0]])})
    return {0: start, 1: final}


def probed() -> "tuple":
    x, y = torch.ones(16, 1), torch.zeros(16, dtype=torch.long)
    table = layerprobe.probe(build, checkpoints(), {"train": (x, y), "test": (x, y)}, probes=PROBES, device="cpu")
    return table[table["probe"].str.startswith("criticality")].reset_index(drop=True)


@pytest.fixture(scope="module")
def table():
    torch.set_num_threads(1)
    return probed()


def crossing(alpha: float, seed: int) -> float:
    """Where the one sample at α with this noise seed stops being feasible."""
    variant = criticality._noisy("criticality", "0", seed, alpha, 1.0, 0)
    drawn = noise(variant, inventory(build()), checkpoints()[1])
    e = float(drawn["0.weight"].sum() + drawn["0.bias"].sum())
    return (S - (1 - alpha) * W0 * math.copysign(1.0, e)) / abs(e)


def distances() -> "object":
    rows = [{"unit": u, "source": "checkpoint", "checkpoint": 1, "l2": d} for u, d in (("0", W0), ("2", 0.0))]
    return tables.frame(rows, tables.DISTANCES, {"run": "model", "dataset": "", "model": "Sequential", "seed": 0})


def test_the_search_finds_the_known_feasible_sigma_and_mu_follows(table):
    feasibility = PROBES["criticality"]["feasibility"]
    refined = criticality.refined(table.assign(run="model"), distances(), feasibility).set_index(["unit", "alpha"])
    seeds = table[table["unit"] == "0"].groupby("alpha")["draw_seed"].first()
    expected = {}
    for alpha in ALPHAS:
        known = crossing(alpha, int(seeds[alpha]))
        point = refined.loc[("0", alpha)]
        if known >= 1.0:  # feasible up to the ceiling
            assert point["sigma"] == 1.0 and math.isnan(point["sigma_above"])
        else:
            assert point["sigma"] <= known < point["sigma_above"] <= point["sigma"] * 1.01, alpha
        assert point["score"] == pytest.approx(alpha**2 * W0**2 / point["sigma"] ** 2)
        expected[alpha] = alpha**2 * W0**2 / min(known, 1.0) ** 2
    assert table["probe"].eq("criticality_search").sum() > 0
    mu = refined.loc["0"]["score"].min()
    assert mu == 0.0 and refined.loc[("0", 0.0), "chosen"]  # α = 0 is feasible: μ = 0, as defined
    # the score at the other α: within the tolerance of the closed form (σ* ≤ the crossing < 1.01 σ*)
    for alpha in ALPHAS[1:]:
        assert expected[alpha] <= refined.loc[("0", alpha), "score"] <= expected[alpha] * 1.01**2
    # the head did not move from its initialization: every feasible α scores 0
    assert refined.loc["2"]["feasible"].all() and (refined.loc["2"]["score"] == 0.0).all()


def test_noise_seeds_do_not_depend_on_sigma(table):
    noisy = table[table["unit"] != "fullmodel"]
    per_ray = noisy.groupby(["unit", "alpha", "draw"])["draw_seed"].nunique()
    assert (per_ray == 1).all()  # grid and search share each (unit, α, sample)'s seed, whatever σ
    assert noisy.groupby(["unit", "alpha", "draw"])["sigma"].nunique().max() > 3  # ... over several σ
    assert noisy.groupby(["unit", "draw"])["draw_seed"].nunique().eq(len(ALPHAS)).all()  # a seed per α


def test_a_rerun_gives_the_same_bits(table):
    assert probed().to_csv(index=False) == table.to_csv(index=False)
