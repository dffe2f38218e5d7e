"""Erasure (right to be forgotten): the request a privacy tool sends on ``user.erasure`` and
the audit record the worker writes to ``user.erasure.audit`` once it is done.

Both are keyed by user_id, partitioned like the clickstream, so the worker that holds a
user's state is the one that erases it, in order with that user's events."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from schemas.events import UserId

RequestId = Annotated[str, StringConstraints(min_length=1, max_length=128)]

# What the worker removes (ErasureAudit.erased) and what it cannot (not_erased).
ERASED = ("user_state", "open_training_examples", "timers", "policy_state")
NOT_ERASED = (
    "model_weights",  # a logistic model's weights are not per user; retrain to drop a user
    "published_training_examples",  # on the training topic until its retention deletes them
    "published_decisions_and_interventions",  # already delivered downstream
)


class ErasureRequest(BaseModel):
    """Forget everything the system holds about ``user_id``. Idempotent: sending it twice
    erases once and audits twice."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1] = 1
    request_id: RequestId = Field(description="Caller's id of the request, echoed in the audit.")
    user_id: UserId = Field(description="The user to forget; also the Kafka message key.")
    requested_at: AwareDatetime
    requested_by: Annotated[str, StringConstraints(max_length=200)] | None = Field(
        None, description="Who asked (a ticket, a tool); kept in the audit record."
    )


class ErasureAudit(BaseModel):
    """Written after the user's state is gone from the table and its changelog."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1] = 1
    request_id: RequestId
    user_id: UserId
    requested_at: AwareDatetime
    requested_by: str | None = None
    erased_at: AwareDatetime
    found: bool = Field(description="Whether this worker held any state for the user.")
    erased: list[str] = Field(description="What was removed.")
    not_erased: list[str] = Field(description="What erasure cannot reach (docs/privacy.md).")
    partition: int = Field(ge=0)
    offset: int = Field(ge=0, description="Offset of the request on the erasure topic.")
