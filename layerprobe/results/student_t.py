"""Student's t: the two-sided quantile behind a confidence interval on a mean over a few seeds.

Plain Python (no scipy, which layerprobe does not depend on). For an integer number of degrees of
freedom ν the probability P(|T| ≤ t) has a closed form, a finite sum in θ = atan(t/√ν) (Abramowitz
& Stegun 26.7.3-4); the quantile is found from it by bisection, to the last bits of a float.
"""

from __future__ import annotations

import math


def central_probability(t: float, df: int) -> float:
    """P(|T| ≤ t) for T ~ Student's t with `df` (a positive integer) degrees of freedom, t ≥ 0."""
    if df < 1 or df != int(df):
        raise ValueError(f"degrees of freedom must be a positive integer, not {df!r}")
    theta = math.atan(t / math.sqrt(df))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2:  # odd: (2/π)(θ + sinθ cosθ (1 + (2/3)cos²θ + (2·4)/(3·5)cos⁴θ + ...)), df − 1 terms in all
        term, total = 1.0, 1.0
        for k in range(1, (df - 1) // 2):
            term *= c2 * (2 * k) / (2 * k + 1)
            total += term
        return (2 / math.pi) * (theta + (s * math.cos(theta) * total if df > 1 else 0.0))
    # even: sinθ (1 + (1/2)cos²θ + (1·3)/(2·4)cos⁴θ + ...), df/2 terms
    term, total = 1.0, 1.0
    for k in range(1, df // 2):
        term *= c2 * (2 * k - 1) / (2 * k)
        total += term
    return s * total


def quantile(confidence: float, df: int) -> float:
    """t such that P(|T| ≤ t) = `confidence`: the half-width of a `confidence` interval on a mean is
    this times the standard error (e.g. 12.706 for 95% and df 1, 1.984 for df 100)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, not {confidence!r}")
    low, high = 0.0, 1.0
    while central_probability(high, df) < confidence:
        high *= 2
    for _ in range(200):  # bisection: the interval halves until it is one float wide
        mid = (low + high) / 2
        if mid in (low, high):
            break
        low, high = (mid, high) if central_probability(mid, df) < confidence else (low, mid)
    return high
