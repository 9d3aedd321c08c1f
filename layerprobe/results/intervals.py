"""95% intervals from counts: on an error, and on its increase over the unmodified model, paired.

Plain Python (no numpy, scipy or torch): the workflow's planning and any table consumer can use it.

- The error of k wrong out of n: the **Wilson score interval** (E. B. Wilson, "Probable inference,
  the law of succession, and statistical inference", JASA 22:209–212, 1927): the p with
  |k/n − p| ≤ z·√(p(1 − p)/n). It stays inside [0, 1], is not empty at k = 0 or k = n (where the
  normal approximation's interval collapses to a point), and keeps close to its nominal coverage
  for small n.
- The increase (errors after − errors before)/n, where both are measured on the same n examples:
  **Newcombe's hybrid score interval for paired proportions**, method 10 of R. G. Newcombe,
  "Improved confidence intervals for the difference between binomial proportions based on paired
  data", Statistics in Medicine 17:2635–2650 (1998): the two Wilson intervals combined by "square
  and add", with a correction for the correlation of the paired errors (φ, itself corrected by n/2
  as in the paper). It is closed-form, lies in [−1, 1], behaves at 0 and n discordant pairs and for
  small n, and is among the intervals recommended by Fagerland, Lydersen & Laake, "Recommended
  tests and confidence intervals for paired binomial proportions", Statistics in Medicine
  33:2850–2875 (2014). Its inputs are the discordant counts: `worse` (examples the unmodified
  model gets right and the variant wrong) and `better` (the reverse); the point increase is
  (worse − better)/n.
"""

from __future__ import annotations

import math

Z = 1.959963984540054  # the standard normal's 0.975 quantile: two-sided 95%
INTERVALS = ("increase", "error_low", "error_high", "increase_low", "increase_high")


def wilson(k: int, n: int, z: float = Z) -> tuple[float, float]:
    """The Wilson score interval on a proportion of k out of n ((NaN, NaN) for n = 0)."""
    if not 0 <= k <= n:
        raise ValueError(f"wilson: need 0 ≤ k ≤ n, got k = {k}, n = {n}")
    if n == 0:
        return math.nan, math.nan
    p, z2 = k / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # At k = 0 and k = n the bound is exactly 0 or 1; rounding would leave it a hair off.
    return (0.0 if k == 0 else centre - half), (1.0 if k == n else centre + half)


def paired_increase(errors: int, worse: int, better: int, n: int, z: float = Z) -> tuple[float, float]:
    """Newcombe's method-10 interval on (errors − errors_before)/n = (worse − better)/n, where
    `errors` are the variant's wrong examples and errors_before = errors − worse + better the
    unmodified model's, on the same n examples ((NaN, NaN) for n = 0)."""
    before = errors - worse + better
    both = errors - worse  # wrong before and after
    neither = n - both - worse - better  # right before and after
    if min(worse, better, both, neither) < 0:
        raise ValueError(
            f"paired_increase: inconsistent counts: errors = {errors}, worse = {worse}, better = {better}, n = {n}"
        )
    if n == 0:
        return math.nan, math.nan
    p1, p2 = errors / n, before / n
    l1, u1 = wilson(errors, n, z)
    l2, u2 = wilson(before, n, z)
    margins = errors * (n - errors) * before * (n - before)
    phi = 0.0
    if margins:
        a = both * neither - worse * better
        phi = (a - n / 2) / math.sqrt(margins) if a > n / 2 else (a / math.sqrt(margins) if a < 0 else 0.0)
    d = (worse - better) / n
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2))
    high = d + math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1))
    return low, high


def with_intervals(row: dict) -> dict:
    """A robustness row (error, worse, better, n) with its point increase and both intervals added."""
    n, worse, better = row["n"], row["worse"], row["better"]
    errors = round(row["error"] * n)  # error = errors / n, correctly rounded: the count comes back exactly
    error_low, error_high = wilson(errors, n)
    increase_low, increase_high = paired_increase(errors, worse, better, n)
    values = ((worse - better) / n if n else math.nan, error_low, error_high, increase_low, increase_high)
    return {**row, **dict(zip(INTERVALS, values))}
