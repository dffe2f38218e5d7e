"""A small harness for policy tests: users with named features, scored in event time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stream_app.core.features import FeatureSpace, UserState
from stream_app.core.model import ColdStartPrior
from stream_app.core.policy import DecisionOut, PartitionGuard, Policy, PolicyConfig

DAY = 86400.0
T0 = 1767614400.0  # 2026-01-05T12:00:00Z
SPACE = FeatureSpace((DAY, 7 * DAY, 30 * DAY))


@dataclass
class FakeScore:
    user_id: str
    ts: float
    p: float
    trigger: str = "event"
    model_version: int = 0
    features: list[float] = field(default_factory=list)


def vector(**named: float) -> list[float]:
    """A feature vector in SPACE order: zeros, plus the named values."""
    vec = [0.0] * len(SPACE.names)
    for name, value in named.items():
        vec[SPACE.names.index(name)] = value
    return vec


def config(**sections: Any) -> PolicyConfig:
    """Defaults, with no holdout and a breaker that needs many users (tests opt back in).
    The thresholds judge p itself, with one entry of 0.3 for both scorers: these tests
    drive the state machine with the scores they name (test_policy_risk.py tests the
    default, the chance the user has left)."""
    doc: dict[str, Any] = {
        "holdout": {"share": 0.0},
        "breaker": {"min_scored": 10**6},
        "spike": {"risk": "p", "entry": 0.3, "prior_entry": 0.3},
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            doc[key] = {**doc.get(key, {}), **value}
        else:
            doc[key] = value
    return PolicyConfig.model_validate(doc)


class Harness:
    """One policy, one partition guard, a dict of user rows; times in days after T0."""

    def __init__(self, cfg: PolicyConfig | None = None, partitions: int = 1) -> None:
        self.policy = Policy(cfg or config(), SPACE, 30 * DAY)
        self.guard: PartitionGuard = self.policy.new_guard(partitions)
        self.scorer = ColdStartPrior(SPACE.names)
        self.users: dict[str, UserState] = {}
        self.decisions: list[DecisionOut] = []

    def score(
        self, user: str, day: float, p: float, trigger: str = "event", **features: float
    ) -> DecisionOut | None:
        state = self.users.setdefault(user, SPACE.new_state(user))
        score = FakeScore(user, T0 + day * DAY, p, trigger, 0, vector(**features))
        out = self.policy.decide(state, score, self.scorer, self.guard)
        if out is not None:
            self.decisions.append(out)
        return out

    def series(self, user: str, points: list[tuple[float, float]]) -> list[DecisionOut | None]:
        return [self.score(user, day, p) for day, p in points]
