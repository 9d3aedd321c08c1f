"""Robust, intermediate or critical: how far a reset moved a unit's error from the final one towards chance.

Plain Python (no numpy, pandas or torch): the joint probe picks its robust set with it while the
workflow plans, and aggregation sorts every unit with it.
"""

from __future__ import annotations

import math

CATEGORIES = ("robust", "intermediate", "critical")


def chance_error(num_classes):
    """The error of guessing uniformly among `num_classes` classes (a number or a column)."""
    return 1.0 - 1.0 / num_classes


def categorize(error: float, final_error: float, chance_error: float, robust_max_increase: float,
               critical_fraction: float) -> str:
    """robust: error rises by at most `robust_max_increase`; critical: at least `critical_fraction`
    of the way from the final error to chance; intermediate in between ("" for a missing error)."""
    if math.isnan(error):
        return ""
    if error - final_error <= robust_max_increase:
        return "robust"
    if error >= final_error + critical_fraction * (chance_error - final_error):
        return "critical"
    return "intermediate"
