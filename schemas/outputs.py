"""Pydantic models of everything the system emits: dead letters, training examples,
model snapshots, decisions and interventions."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]

DeadLetterReason = Literal[
    "too_large",  # message over max_message_bytes
    "invalid_utf8",  # bytes are not UTF-8
    "invalid_json",  # not parseable JSON (incl. NaN/Infinity literals)
    "too_deep",  # JSON nested deeper than the parsers' limit
    "tombstone",  # a null value (Kafka tombstone): no event at all
    "not_an_object",  # JSON, but not an object
    "missing_field",  # a required field is absent
    "invalid_field",  # a field breaks its rule (type, length, range, pattern)
    "unknown_event_type",  # event_type not in the contract
    "unsupported_version",  # v is not 1
    "naive_timestamp",  # ts without offset
    "future_timestamp",  # ts beyond max_future_skew past the wall clock
    "late_event",  # ts older than the partition watermark
]


Action = Literal["cart_reminder", "outreach", "coupon", "win_back", "recommendations"]
# [stayed, churned]: treated users of one (segment, action) and how their example resolved.
ArmCounts = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=2, max_length=2)]


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DeadLetter(_Out):
    """A message that could not be applied, with the rule it broke and where it came from."""

    v: Literal[1] = 1
    reason: DeadLetterReason
    field: str | None = Field(None, description="Offending field (dotted path), if any.")
    detail: str = Field(description="Human-readable explanation.")
    source_topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    key: str | None = Field(None, description="Message key (UTF-8, invalid bytes replaced).")
    payload: str = Field(
        description="Original bytes, UTF-8 with invalid bytes replaced, "
        "truncated to dlq_payload_bytes."
    )
    payload_size: int = Field(ge=0, description="Size of the original message in bytes.")
    truncated: bool = False
    received_at: AwareDatetime
    event_id: str | None = None
    user_id: str | None = None


class TrainingExample(_Out):
    """A resolved label: the features and score at scoring time, and what happened next."""

    v: Literal[1] = 1
    example_id: str = Field(description="Deterministic: user_id + scoring time.")
    user_id: str
    scored_at: AwareDatetime
    resolved_at: AwareDatetime
    label: Literal[0, 1] = Field(description="1 = churned (no activity within the horizon).")
    p: Probability = Field(description="Churn probability stored at scoring time.")
    features: dict[str, FiniteFloat]
    treated: bool = False
    model_version: int = Field(ge=0)
    group: Literal["none", "treatment", "holdout"] = Field(
        "none",
        description="Policy group when this score was flagged: treatment (an intervention "
        "was sent), holdout (flagged, deliberately not sent), none (not flagged). Uplift "
        "compares the churn of flagged holdout and treatment examples.",
    )
    train: bool = Field(
        True,
        description="False: judge the prediction, do not learn from it (a third or later "
        "example of one silence).",
    )
    segment: str | None = Field(
        None,
        description="The flagging decision's bandit segment (docs/policy.md, Chooser); "
        "absent when not flagged.",
    )
    action: Action | None = Field(
        None,
        description="The flagging decision's action: sent (treatment) or would have been "
        "sent (holdout); absent when not flagged. The bandit learns from treatment examples.",
    )


class ScalerState(_Out):
    n: dict[str, FiniteFloat]
    mean: dict[str, FiniteFloat]
    var: dict[str, Annotated[float, Field(ge=0.0, allow_inf_nan=False)]]


class DriftState(_Out):
    """The learner's ADWIN drift detector (stream_app/core/drift.py): its window as
    exponential-histogram buckets, so a restarted learner keeps judging drift from it."""

    drift_detected: bool = Field(description="The last value completed a drift.")
    tick: int = Field(ge=0, description="Values since the detector (re)started.")
    width: FiniteFloat = Field(ge=0.0, description="Values in the window.")
    total: FiniteFloat
    variance: FiniteFloat
    rows: list[list[tuple[FiniteFloat, FiniteFloat]]] = Field(
        max_length=64,
        description="rows[i]: buckets of 2**i values, oldest first, as (total, variance).",
    )


class LearnerCheckpoint(_Out):
    """The learner's own state beside the model, so a restarted learner continues exactly:
    counters, the ids of recent examples (dedup) and the prequential metric windows.
    Workers ignore it."""

    labels: int = Field(ge=0)
    positives: int = Field(ge=0)
    loss_sum: FiniteFloat = Field(ge=0.0)
    drifts: int = Field(ge=0)
    since_snapshot: int = Field(0, ge=0, description="Labels learned since the last snapshot.")
    flagged: list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=lambda: [0, 0, 0, 0],
        min_length=4,
        max_length=4,
        description="Uplift counts: flagged holdout examples, churned; treated, churned.",
    )
    recent_examples: str = Field(
        description="Base64 of 8-byte digests of recent example ids (a ring), oldest first."
    )
    window: str = Field(
        description="Base64 of little-endian float64 rows (y, p, challenger p, prior p) of "
        "the rolling window, oldest first; NaN where an example was not judged."
    )
    drift: DriftState | None = Field(
        None, description="The drift detector; absent in older snapshots (a fresh one then)."
    )


class ModelSnapshot(_Out):
    """The learner's model as data (never pickle): enough to score exactly as it does."""

    v: Literal[1] = 1
    version: int = Field(ge=0)
    created_at: AwareDatetime
    feature_schema: str = Field(description="Hash of the ordered feature names.")
    features: list[str]
    weights: dict[str, FiniteFloat]
    intercept: FiniteFloat
    scaler: ScalerState
    n_labels: int = Field(ge=0)
    ready: bool = Field(description="False while the cold-start prior still scores.")
    trained_through: dict[str, int] = Field(
        default_factory=dict,
        description="Training topic partition -> offset of the last example this model "
        "includes (the learner resumes after it).",
    )
    metrics: dict[str, FiniteFloat] = Field(default_factory=dict)
    learner: LearnerCheckpoint | None = Field(
        None, description="The learner's state for restarts (workers ignore it)."
    )
    bandit: dict[str, dict[str, ArmCounts]] | None = Field(
        None,
        description="The bandit's posterior: segment -> action -> [stayed, churned] counts "
        "of treated examples, which every worker's chooser adopts with the snapshot and the "
        "learner resumes from; absent in older snapshots (a cold posterior then).",
    )


Tier = Literal["low", "mid", "high"]
ScoreTrigger = Literal["event", "silence"]


class Reason(_Out):
    """One reason code: a feature and how much it pushed this user's risk up."""

    name: str = Field(description="Feature name (docs/features.md).")
    value: FiniteFloat = Field(
        description="Contribution to the log-odds of churn, above a reference user's: "
        "weight x standardised value for the learned model (the reference is the mean "
        "user of its training data); weight x (value - reference) for the cold-start "
        "prior (the reference user was last seen a week ago)."
    )


class _Flagged(_Out):
    """What a decision and an intervention both say about the score behind them."""

    v: Literal[1] = 1
    user_id: str
    ts: AwareDatetime = Field(description="Event time of the score that was flagged.")
    trigger: ScoreTrigger = Field(
        description="event: scored on the user's own event; silence: at an inactivity "
        "deadline, with no event."
    )
    p: Probability = Field(description="Churn probability of this score.")
    risk: Probability | None = Field(
        None,
        description="What the policy's thresholds judged (policy spike.risk): with the "
        "default, left, the chance the user has left, p less the chance that a loyal user "
        "of their recent session rate is quiet for the whole horizon; with p, p itself. "
        "previous_p, baseline and the tiers are on this scale. Null from older workers.",
    )
    previous_p: Probability | None = Field(
        None, description="The user's previous risk (none before their first score)."
    )
    baseline: Probability | None = Field(
        None, description="The user's own baseline: event-time EWMA of their past risks."
    )
    tier: Tier = Field(description="Tier of the risk (policy tiers).")
    previous_tier: Tier
    action: Action
    categories: list[str] = Field(
        default_factory=list, description="Top categories, for recommendations."
    )
    reasons: list[Reason] = Field(description="Top contributions to the score, largest first.")
    model_version: int = Field(ge=0)
    policy_version: str = Field(description="Hash of the effective policy configuration.")


class _Decided(_Flagged):
    decided_at: AwareDatetime | None = Field(
        None,
        description="Wall-clock time the worker decided (UTC); ts is the score's event "
        "time, which lags the clock in a backfill or when the worker is behind. Use it to "
        "expire interventions (docs/events.md). Null when not stamped (an offline run).",
    )


class Decision(_Decided):
    """Audit record of every flagged score: sent (treatment), held out, or suppressed by a
    limit. Key: user_id. decision_id is deterministic: dedupe on it."""

    decision_id: str
    outcome: Literal["treatment", "holdout", "suppressed"]
    suppressed_by: Literal["breaker_open", "cooldown", "user_cap", "budget"] | None = Field(
        None, description="The limit that stopped the intervention (outcome suppressed)."
    )
    holdout: bool = Field(description="The user is in the control group (whatever the outcome).")
    intervention_id: str | None = Field(
        None, description="Id of the intervention sent (outcome treatment)."
    )


class Intervention(_Decided):
    """What a CRM or messaging system acts on (treatment only). Key: user_id.
    intervention_id is deterministic: dedupe on it."""

    intervention_id: str
    decision_id: str
