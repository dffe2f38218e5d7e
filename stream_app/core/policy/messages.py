"""The pydantic messages of a decision: the audit record and, for treatment, the intervention."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from schemas.outputs import Decision, Intervention, Reason
from stream_app.core.policy.decide import DecisionOut


def _common(out: DecisionOut, decided_at: float | None) -> dict[str, Any]:
    return {
        "decided_at": None if decided_at is None else datetime.fromtimestamp(decided_at, tz=UTC),
        "user_id": out.user_id,
        "ts": datetime.fromtimestamp(out.ts, tz=UTC),
        "trigger": out.trigger,
        "p": out.p,
        "risk": out.risk,
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


def decision_message(out: DecisionOut, *, decided_at: float | None = None) -> Decision:
    """For retention.decisions (every DecisionOut, holdout and suppressed included).
    ``decided_at``: the driver's wall clock (epoch seconds); core never reads the clock,
    so a replay stays deterministic and a test can pass any time."""
    return Decision(
        decision_id=out.decision_id,
        outcome=out.outcome,
        suppressed_by=out.suppressed_by,
        holdout=out.holdout,
        intervention_id=out.intervention_id,
        **_common(out, decided_at),
    )


def intervention_message(
    out: DecisionOut, *, decided_at: float | None = None
) -> Intervention | None:
    """For retention.interventions: only when the outcome is treatment (``decided_at`` as
    in :func:`decision_message`; pass the same value to both)."""
    if out.outcome != "treatment" or out.intervention_id is None:
        return None
    return Intervention(
        intervention_id=out.intervention_id,
        decision_id=out.decision_id,
        **_common(out, decided_at),
    )
