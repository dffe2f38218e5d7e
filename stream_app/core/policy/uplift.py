"""Uplift of the interventions from resolved labels: flagged holdout churn - flagged treated."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

Z95 = 1.959963984540054


class Labelled(Protocol):
    """A resolved example: a TrainingExample, or the engine's Label once it carries a group."""

    @property
    def label(self) -> int: ...
    @property
    def group(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Uplift:
    """``uplift`` = churn rate of flagged holdout - flagged treated examples (absolute, with
    Newcombe's hybrid score 95% interval); ``reduction`` = 1 - treated rate / holdout rate
    (relative: the share of would-be churners the interventions kept, with the Katz log
    interval of the risk ratio). None where there is not enough data."""

    holdout_n: int
    holdout_churned: int
    treated_n: int
    treated_churned: int
    uplift: float | None
    uplift_low: float | None
    uplift_high: float | None
    reduction: float | None
    reduction_low: float | None
    reduction_high: float | None

    @property
    def holdout_rate(self) -> float | None:
        return self.holdout_churned / self.holdout_n if self.holdout_n else None

    @property
    def treated_rate(self) -> float | None:
        return self.treated_churned / self.treated_n if self.treated_n else None


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (n > 0)."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # The exact limits at 0 and n (rounding would put n/n just outside its own interval).
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def newcombe(k1: int, n1: int, k2: int, n2: int, z: float = Z95) -> tuple[float, float, float]:
    """p1 - p2 with Newcombe's hybrid score interval (his method 10): good coverage even for
    small counts and rates near 0 or 1, where the Wald interval is too narrow."""
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson(k1, n1, z)
    l2, u2 = wilson(k2, n2, z)
    d = p1 - p2
    return d, d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2)


def risk_reduction(
    k_t: int, n_t: int, k_h: int, n_h: int, z: float = Z95
) -> tuple[float, float, float] | None:
    """1 - (k_t/n_t) / (k_h/n_h) with the Katz log interval; None when a count is 0."""
    if not (k_t and k_h):
        return None
    log_rr = math.log((k_t / n_t) / (k_h / n_h))
    se = math.sqrt(1 / k_t - 1 / n_t + 1 / k_h - 1 / n_h)
    return (
        1 - math.exp(log_rr),
        1 - math.exp(log_rr + z * se),
        1 - math.exp(log_rr - z * se),
    )


def estimate(examples: Iterable[Labelled]) -> Uplift:
    """Uplift from resolved examples; those of group "none" are ignored."""
    n = {"holdout": 0, "treatment": 0}
    k = {"holdout": 0, "treatment": 0}
    for ex in examples:
        if ex.group in n:
            n[ex.group] += 1
            k[ex.group] += 1 if ex.label else 0
    return from_counts(n["holdout"], k["holdout"], n["treatment"], k["treatment"])


def from_counts(n_h: int, k_h: int, n_t: int, k_t: int) -> Uplift:
    """Uplift from counts: flagged holdout examples (n_h, k_h churned) and flagged treated
    ones (n_t, k_t churned)."""
    diff = newcombe(k_h, n_h, k_t, n_t) if n_h and n_t else None
    red = risk_reduction(k_t, n_t, k_h, n_h) if n_h and n_t else None
    return Uplift(
        holdout_n=n_h,
        holdout_churned=k_h,
        treated_n=n_t,
        treated_churned=k_t,
        uplift=diff[0] if diff else None,
        uplift_low=diff[1] if diff else None,
        uplift_high=diff[2] if diff else None,
        reduction=red[0] if red else None,
        reduction_low=red[1] if red else None,
        reduction_high=red[2] if red else None,
    )
