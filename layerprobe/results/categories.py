"""Robust, intermediate or critical: how far a reset moved a unit's error from the final one towards chance.

Both thresholds are on the error increase over the unmodified model: robust up to
`robust_max_increase`, critical from `critical_fraction` of the way to chance on, intermediate in
between. A point increase gets one category (`categorize`). An interval on the increase gets the
category both its ends share, or `uncertain` when it straddles a threshold, with the two categories
it lies between (`categorize_interval`). The rewind point is the earliest checkpoint whose interval
lies within the robust threshold (`rewind_point`).

Plain Python (no numpy, pandas or torch): the joint probe picks its robust set with it while the
workflow plans, and aggregation sorts every unit with it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

ROBUST, INTERMEDIATE, CRITICAL, UNCERTAIN = "robust", "intermediate", "critical", "uncertain"
CATEGORIES = (ROBUST, INTERMEDIATE, CRITICAL, UNCERTAIN)


def chance_error(num_classes):
    """The error of guessing uniformly among `num_classes` classes (a number or a column)."""
    return 1.0 - 1.0 / num_classes


def side(
    increase: float, final_error: float, chance_error: float, robust_max_increase: float, critical_fraction: float
) -> str:
    """The category of an error increase: robust up to `robust_max_increase`, critical from
    `critical_fraction` of the way from the final error to chance on, intermediate in between
    ("" for a missing value). Monotone in the increase, so an interval's ends bound its values'."""
    if math.isnan(increase):
        return ""
    if increase <= robust_max_increase:
        return ROBUST
    if increase >= critical_fraction * (chance_error - final_error):
        return CRITICAL
    return INTERMEDIATE


def categorize(
    error: float, final_error: float, chance_error: float, robust_max_increase: float, critical_fraction: float
) -> str:
    """The category of a point `error` against the unmodified model's `final_error`."""
    return side(error - final_error, final_error, chance_error, robust_max_increase, critical_fraction)


def categorize_interval(
    low: float,
    high: float,
    final_error: float,
    chance_error: float,
    robust_max_increase: float,
    critical_fraction: float,
) -> tuple[str, str]:
    """(category, between) of an interval [low, high] on the increase: the category of both ends
    and "", or `uncertain` and the ends' categories, e.g. "robust/intermediate"."""
    limits = final_error, chance_error, robust_max_increase, critical_fraction
    lower, upper = side(low, *limits), side(high, *limits)
    if lower == upper or "" in (lower, upper):
        return (lower, "") if lower == upper else ("", "")
    return UNCERTAIN, f"{lower}/{upper}"


def rewind_point(increases: Iterable[tuple[int, float]], robust_max_increase: float) -> int | None:
    """The earliest checkpoint τ of (τ, increase) pairs whose increase is within the robust
    threshold; None when none is. Given the upper ends of the increases' intervals, it is the
    earliest checkpoint whose whole interval is within it."""
    within = [tau for tau, increase in increases if increase <= robust_max_increase]
    return min(within) if within else None
