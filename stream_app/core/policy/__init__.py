"""Retention policy: score -> decision, per-user state in the row, budget/breaker per partition."""

from stream_app.core.policy.config import PolicyConfig, load_policy
from stream_app.core.policy.decide import DecisionOut, Group, Policy, ScoreLike
from stream_app.core.policy.messages import decision_message, intervention_message
from stream_app.core.policy.state import BreakerChange, PartitionGuard, UserPolicy
from stream_app.core.policy.uplift import Uplift, estimate

__all__ = [
    "BreakerChange",
    "DecisionOut",
    "Group",
    "PartitionGuard",
    "Policy",
    "PolicyConfig",
    "ScoreLike",
    "Uplift",
    "UserPolicy",
    "decision_message",
    "estimate",
    "intervention_message",
    "load_policy",
]
