"""The 95% intervals (results.intervals), the categories that admit doubt and the rewind point
(results.categories, kinds.reinit): known cases, by-hand computations, thresholds."""

import math

import pandas as pd
import pytest

from layerprobe import aggregate
from layerprobe.results import tables
from layerprobe.results.categories import CATEGORIES, categorize, categorize_interval, rewind_point
from layerprobe.results.intervals import Z, paired_increase, wilson, with_intervals

LIMITS = {"robust_max_increase": 0.02, "critical_fraction": 0.5}


def quadratic_wilson(k, n):
    """The Wilson bounds as the roots in p of (k/n − p)² = z² p(1 − p)/n, by the quadratic formula."""
    a, b, c = 1 + Z**2 / n, -(2 * k / n + Z**2 / n), (k / n) ** 2
    root = math.sqrt(b * b - 4 * a * c)
    return (-b - root) / (2 * a), (-b + root) / (2 * a)


# Wilson score interval ---------------------------------------------------------------------------


def test_z_is_the_normal_quantile():
    assert 0.5 * math.erfc(-Z / math.sqrt(2)) == pytest.approx(0.975, abs=1e-15)


@pytest.mark.parametrize(
    "k, n, low, high", [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (1, 29, 0.0061, 0.1718)]
)
def test_wilson_matches_published_values(k, n, low, high):
    """Newcombe, Statistics in Medicine 17:857–872 (1998), Table II, method 3 (the score interval)."""
    assert wilson(k, n) == pytest.approx((low, high), abs=5e-5)


@pytest.mark.parametrize("k, n", [(3, 10), (1, 1), (7, 50), (499, 1000)])
def test_wilson_is_the_roots_of_its_quadratic(k, n):
    assert wilson(k, n) == pytest.approx(quadratic_wilson(k, n), rel=1e-12)


@pytest.mark.parametrize("n", [1, 2, 20, 360, 10_000])
def test_wilson_at_all_right_and_all_wrong(n):
    """k = 0: exactly 0 to z²/(n + z²) (0.1611 for n = 20, Newcombe's Table II); k = n: the mirror image."""
    assert wilson(0, n) == (0.0, pytest.approx(Z**2 / (n + Z**2), rel=1e-12))
    assert wilson(n, n) == (pytest.approx(n / (n + Z**2), rel=1e-12), 1.0)
    low, high = wilson(0, n)
    assert low == 0.0 and 0 < high < 1


def test_wilson_on_small_n_and_bad_counts():
    # 1 of 2: ½ ± z·√(1/8 + z²/16)/(1 + z²/2) = ½ ± 0.4055, symmetric and inside [0, 1]
    assert wilson(1, 2) == pytest.approx((0.0945, 0.9055), abs=1e-4)
    assert all(math.isnan(v) for v in wilson(0, 0))
    with pytest.raises(ValueError, match="0 ≤ k ≤ n"):
        wilson(3, 2)


# Newcombe's paired interval -----------------------------------------------------------------------


def by_hand(errors, worse, better, n, phi):
    """Method 10 written out: the two Wilson intervals (by the quadratic formula), square and add."""
    before = errors - worse + better
    p1, p2 = errors / n, before / n
    (l1, u1), (l2, u2) = quadratic_wilson(errors, n), quadratic_wilson(before, n)
    d = (worse - better) / n
    return (
        d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2)),
        d + math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1)),
    )


def test_paired_case_by_hand_without_correlation_correction():
    """n = 10: 1 wrong before and after, 3 worse, 1 better, 5 right both times. ad − bc = 5 − 3 = 2
    lies in [0, n/2], so φ = 0, and the bounds are 0.2 ∓ √(sum of the squared Wilson arms):
    variant 4/10 in [0.1682, 0.6873], final model 2/10 in [0.0567, 0.5098]."""
    assert quadratic_wilson(4, 10) == pytest.approx((0.1682, 0.6873), abs=1e-4)
    assert quadratic_wilson(2, 10) == pytest.approx((0.0567, 0.5098), abs=1e-4)
    low, high = paired_increase(4, 3, 1, 10)
    assert (low, high) == pytest.approx(by_hand(4, 3, 1, 10, phi=0.0), rel=1e-12)
    # 0.2 − √((0.4 − 0.1682)² + (0.5098 − 0.2)²),  0.2 + √((0.2 − 0.0567)² + (0.6873 − 0.4)²)
    assert (low, high) == pytest.approx((-0.1869, 0.5210), abs=1e-4)


def test_paired_case_by_hand_with_correlation_correction():
    """n = 20: both wrong 5, worse 3, better 1, both right 11; ad − bc = 52 > n/2, so
    φ = (52 − 10)/√(8·12·6·14) = 0.4677; positively correlated errors narrow the interval."""
    phi = (52 - 10) / math.sqrt(8 * 12 * 6 * 14)
    assert phi == pytest.approx(0.4677, abs=1e-4)
    got = paired_increase(8, 3, 1, 20)
    assert got == pytest.approx(by_hand(8, 3, 1, 20, phi), rel=1e-12)
    independent = by_hand(8, 3, 1, 20, 0.0)
    assert independent[0] < got[0] < 0.1 < got[1] < independent[1]


def test_paired_negative_correlation():
    """Newcombe's (1998, paired) first example: 36 +/+, 12 +/−, 2 −/+, 0 −/−: ad − bc = −24 < 0,
    φ = −24/√(48·2·38·12), not corrected."""
    phi = -24 / math.sqrt(48 * 2 * 38 * 12)
    assert paired_increase(48, 12, 2, 50) == pytest.approx(by_hand(48, 12, 2, 50, phi), rel=1e-12)


@pytest.mark.parametrize("n", [1, 5, 360])
def test_paired_at_the_extremes(n):
    # no discordant pair: symmetric about 0, and narrow only for a large n
    low, high = paired_increase(0, 0, 0, n)
    assert low == -high and 0 < high <= 1
    low, high = paired_increase(3 if n > 3 else 0, 0, 0, n)
    assert low == pytest.approx(-high) and high > 0
    # every example got worse / better: the interval reaches +1 / −1 exactly
    low, high = paired_increase(n, n, 0, n)
    assert high == 1.0 and -1 < low < 1 and (low > 0.98) == (n == 360)
    assert paired_increase(0, 0, n, n) == (-1.0, -low)


def test_paired_rejects_inconsistent_counts():
    with pytest.raises(ValueError, match="inconsistent counts"):
        paired_increase(2, 3, 0, 10)  # more worse than the variant's errors
    with pytest.raises(ValueError, match="inconsistent counts"):
        paired_increase(9, 0, 5, 10)  # before = 14 > n
    assert all(math.isnan(v) for v in paired_increase(0, 0, 0, 0))


def test_paired_is_wider_than_nothing_and_within_bounds():
    """On every table of n = 12 the interval holds its point and lies in [−1, 1]."""
    n = 12
    for both in range(n + 1):
        for worse in range(n + 1 - both):
            for better in range(n + 1 - both - worse):
                low, high = paired_increase(both + worse, worse, better, n)
                d = (worse - better) / n
                assert -1 - 1e-12 <= low <= d <= high <= 1 + 1e-12, (both, worse, better)


def test_with_intervals_recovers_the_counts_from_the_error():
    row = {"error": 37 / 360, "n": 360, "worse": 30, "better": 3, "loss": 0.5}
    got = with_intervals(row)
    assert got["loss"] == 0.5 and got["increase"] == 27 / 360
    assert (got["error_low"], got["error_high"]) == wilson(37, 360)
    assert (got["increase_low"], got["increase_high"]) == paired_increase(37, 30, 3, 360)


# Categories that admit doubt ----------------------------------------------------------------------


def cat(low, high):
    # final error 0.1, chance 0.9: robust up to +0.02, critical from +0.4 on
    return categorize_interval(low, high, 0.1, 0.9, **LIMITS)


def test_categories_of_intervals_at_and_around_the_thresholds():
    assert cat(-0.01, 0.02) == ("robust", "")  # the upper end on the threshold: robust
    assert cat(-0.01, 0.0201) == ("uncertain", "robust/intermediate")
    assert cat(0.02, 0.03) == ("uncertain", "robust/intermediate")  # the lower end on it: could be robust
    assert cat(0.0201, 0.39) == ("intermediate", "")
    assert cat(0.39, 0.4) == ("uncertain", "intermediate/critical")  # the upper end reaches critical
    assert cat(0.4, 0.45) == ("critical", "")
    assert cat(0.01, 0.5) == ("uncertain", "robust/critical")  # so wide it straddles both
    assert cat(math.nan, math.nan) == ("", "")
    assert {c for c, _ in (cat(0, 0.01), cat(0.1, 0.2), cat(0.5, 0.6), cat(0, 0.1))} == set(CATEGORIES)


def test_a_point_interval_gets_the_point_category():
    expected = ["robust"] * 3 + ["intermediate"] * 2 + ["critical"] * 3
    for error, category in zip((0.05, 0.1, 0.11, 0.13, 0.49, 0.5, 0.6, 0.9), expected):
        assert categorize(error, 0.1, 0.9, **LIMITS) == category
        assert cat(error - 0.1, error - 0.1) == (category, "")


# The rewind point ---------------------------------------------------------------------------------


def test_rewind_point_is_the_earliest_checkpoint_within():
    assert rewind_point([(0, 0.5), (1, 0.03), (3, 0.02), (8, 0.0)], 0.02) == 3
    assert rewind_point([(8, 0.01), (0, 0.019), (3, 0.5)], 0.02) == 0  # order does not matter
    assert rewind_point([(0, 0.5), (3, 0.021)], 0.02) is None
    assert rewind_point([(0, math.nan)], 0.02) is None and rewind_point([], 0.02) is None


def summarize(rows, n):
    run = {"run": "r", "dataset": "digits", "model": "m", "seed": 0}
    robustness = tables.frame([with_intervals(r) for r in rows], tables.ROBUSTNESS, run)
    units = sorted({r["unit"] for r in rows} - {"fullmodel"})
    inventory = tables.frame(
        [
            {"unit": u, "index": i, "n_params": 1, "params": u, "rule": "r", "num_classes": 10}
            for i, u in enumerate(units)
        ],
        tables.INVENTORY,
        run,
    )
    distances = tables.frame(
        [{"unit": u, "source": "checkpoint", "checkpoint": 10, "n_params": 1, "l2": 1.0} for u in units],
        tables.DISTANCES,
        run,
    )
    return aggregate.summarize_units(inventory, robustness, distances, LIMITS).set_index("unit")


def reinit_row(unit, tau, worse, better, n, final_errors):
    return {
        "probe": "reinit",
        "unit": unit,
        "checkpoint": tau,
        "split": "test",
        "error": (final_errors + worse - better) / n,
        "n": n,
        "worse": worse,
        "better": better,
    }


def test_rewind_point_and_categories_on_a_constructed_table():
    """n = 1000, final error 0.1 (100 wrong). Worse/better per checkpoint 0, 1, 3, 10 (10 is final):
    - a: +0.3 at τ = 0, +0.015 at τ = 1 (interval reaches above 0.02), +0.005 at τ = 3: rewinds to 3
      on the interval, to 1 on the point; intermediate at τ = 0.
    - b: +0.003 at τ = 0, narrow: robust, rewinds to 0.
    - c: +0.5 at every checkpoint before the final one: critical, no rewind point.
    - d: +0.02 at τ = 0, on the threshold: robust by the point, uncertain by the interval."""
    n, final = 1000, 100
    plan = {
        "a": [(300, 0), (20, 5), (5, 0)],
        "b": [(3, 0), (0, 0), (0, 0)],
        "c": [(500, 0), (500, 0), (500, 0)],
        "d": [(25, 5), (0, 0), (0, 0)],
    }
    rows = [reinit_row("fullmodel", t, 0, 0, n, final) for t in (0, 1, 3, 10)]
    for unit, counts in plan.items():
        rows += [reinit_row(unit, t, w, b, n, final) for t, (w, b) in zip((0, 1, 3), counts)]
        rows.append(reinit_row(unit, 10, 0, 0, n, final))
    units = summarize(rows, n)
    assert units.loc["a", "rewind_checkpoint"] == 3 and units.loc["a", "rewind_checkpoint_point"] == 1
    assert units.loc["a", "category"] == "intermediate"
    assert units.loc["b", "rewind_checkpoint"] == 0 and units.loc["b", "category"] == "robust"
    assert pd.isna(units.loc["c", "rewind_checkpoint"]) and pd.isna(units.loc["c", "rewind_checkpoint_point"])
    assert units.loc["c", "category"] == "critical"
    assert units.loc["d", "reinit_test_increase"] == 0.02
    assert units.loc["d", "category_point"] == "robust" and units.loc["d", "category"] == "uncertain"
    assert units.loc["d", "category_between"] == "robust/intermediate"
    assert units.loc["d", "reinit_test_increase_low"] < 0.02 < units.loc["d", "reinit_test_increase_high"]
    assert units.loc["d", "rewind_checkpoint"] == 1  # τ = 1 is the final model's own weights for d: no change
