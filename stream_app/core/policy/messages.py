"""The pydantic messages of a decision: the audit record and, for treatment, the intervention."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from schemas.outputs import Decision, Intervention, Reason
from stream_app.core.policy.decide import DecisionOut


def _common(out: DecisionOut) -> dict[str, Any]:
    return {
        "user_id": out.user_id,
        "ts": datetime.fromtimestamp(out.ts, tz=UTC),
        "trigger": out.trigger,
        "p": out.p,
        "previous_p": out.previous_p,
        "baseline": out.baseline,
        "tier": out.tier,
        "previous_tier": out.previous_tier,
        "action": out.action,
        "categories": out.categories,
        "reasons": [Reason(name=n, value=v) for n, v in out.reasons],
        "model_version": out.model_version,
        "policy_version": out.policy_version,
    }


def decision_message(out: DecisionOut) -> Decision:
    """For retention.decisions (every DecisionOut, holdout and suppressed included)."""
    return Decision(
        decision_id=out.decision_id,
        outcome=out.outcome,
        suppressed_by=out.suppressed_by,
        holdout=out.holdout,
        intervention_id=out.intervention_id,
        **_common(out),
    )


def intervention_message(out: DecisionOut) -> Intervention | None:
    """For retention.interventions: only when the outcome is treatment."""
    if out.outcome != "treatment" or out.intervention_id is None:
        return None
    return Intervention(
        intervention_id=out.intervention_id, decision_id=out.decision_id, **_common(out)
    )
