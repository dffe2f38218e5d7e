"""Uplift: churn of flagged holdout - flagged treated, with intervals that cover as claimed."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from schemas.outputs import TrainingExample
from stream_app.core.policy.uplift import estimate, newcombe, risk_reduction, wilson


@dataclass
class Ex:
    label: int
    group: str


def draw(rng: random.Random, n: int, p: float) -> int:
    return sum(rng.random() < p for _ in range(n))


def test_counts_rates_and_the_point_estimate() -> None:
    examples = (
        [Ex(1, "holdout")] * 30
        + [Ex(0, "holdout")] * 70
        + [Ex(1, "treatment")] * 120
        + [Ex(0, "treatment")] * 280
        + [Ex(1, "none")] * 500  # not flagged: not part of the comparison
    )
    u = estimate(examples)
    assert (u.holdout_n, u.holdout_churned, u.treated_n, u.treated_churned) == (100, 30, 400, 120)
    assert u.holdout_rate == 0.3 and u.treated_rate == 0.3
    assert u.uplift == pytest.approx(0.0) and u.reduction == pytest.approx(0.0)
    assert u.uplift_low is not None and u.uplift_high is not None
    assert u.uplift_low < 0 < u.uplift_high


def test_no_flagged_examples_give_no_estimate() -> None:
    u = estimate([Ex(1, "none"), Ex(0, "holdout")])
    assert u.holdout_n == 1 and u.treated_n == 0
    assert u.uplift is None and u.reduction is None and u.treated_rate is None


def test_training_example_messages_are_accepted_as_they_are() -> None:
    now = datetime(2026, 1, 5, tzinfo=UTC)

    def ex(label: int, group: str) -> TrainingExample:
        return TrainingExample(
            example_id="x",
            user_id="u",
            scored_at=now,
            resolved_at=now,
            label=label,  # type: ignore[arg-type]
            p=0.5,
            features={},
            model_version=0,
            group=group,  # type: ignore[arg-type]
        )

    u = estimate([ex(1, "holdout"), ex(0, "holdout"), ex(0, "treatment"), ex(1, "none")])
    assert (u.holdout_n, u.holdout_churned, u.treated_n) == (2, 1, 1)
    assert TrainingExample.model_fields["group"].default == "none"


def test_wilson_interval_contains_the_estimate_and_stays_in_zero_one() -> None:
    for k, n in ((0, 10), (10, 10), (3, 40), (500, 1000)):
        lo, hi = wilson(k, n)
        assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_the_difference_interval_covers_the_true_uplift_about_95_percent_of_the_time() -> None:
    rng = random.Random(2026)
    p_holdout, p_treated, n_h, n_t, reps = 0.35, 0.25, 150, 600, 2000
    truth = p_holdout - p_treated
    covered = 0
    for _ in range(reps):
        k_h, k_t = draw(rng, n_h, p_holdout), draw(rng, n_t, p_treated)
        _, lo, hi = newcombe(k_h, n_h, k_t, n_t)
        covered += lo <= truth <= hi
    assert 0.93 <= covered / reps <= 0.97


def test_the_relative_reduction_recovers_a_known_saved_share() -> None:
    # Treated churn = holdout churn x (1 - q): the reduction estimates q.
    rng = random.Random(7)
    q, p_holdout, n_h, n_t, reps = 0.4, 0.5, 300, 1200, 1000
    covered = 0
    for _ in range(reps):
        k_h, k_t = draw(rng, n_h, p_holdout), draw(rng, n_t, p_holdout * (1 - q))
        result = risk_reduction(k_t, n_t, k_h, n_h)
        assert result is not None
        covered += result[1] <= q <= result[2]
    assert 0.93 <= covered / reps <= 0.97
