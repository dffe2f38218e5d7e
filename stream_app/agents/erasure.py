"""Erasure requests (schemas/erasure.py) on the erasure topic, read with the clickstream.

:meth:`ErasureHandler.erase` is synchronous: it replaces the user's state (open training
examples, timers and policy state live in it) with an erasure marker and returns the audit
record to publish. :meth:`ErasureHandler.apply` runs a batch of requests: for each
carried-out request the marker is confirmed by the broker before its audit record is sent,
and the batch's offsets are committable only after the audit record is confirmed too.

**Why a marker, not just a tombstone.** Kafka orders no two topics: with a backlog on the
clickstream, an erasure can be applied before events the user sent earlier, which would
then build the user again. The marker is a state with no events and no features, only
``extra["erased"] = [requested_at, applied_at, clickstream_offset]``: the request's time,
the worker's wall clock when it applied it, and the clickstream partition's high watermark
then. It lives in the users table and its changelog like any state, so a restart or a
taking-over worker keeps it. An event of that user is dropped (and counted in
``churn_erasure_events_dropped_total``) when it was written to the clickstream before the
request (Kafka CreateTime <= requested_at) or stands below that offset; a later one starts
a new user. A marker older than ``STREAM_APP_ERASURE_MARKER_TTL`` no longer drops
anything and is deleted (a tombstone) at the next partition assignment or the user's next
event; docs/privacy.md says what that window leaves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, MutableMapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from schemas.erasure import ERASED, NOT_ERASED, ErasureAudit, ErasureRequest
from schemas.outputs import DeadLetterReason
from stream_app.core.features import UserState
from stream_app.ingest import Rejection, Source
from stream_app.kafka.send import Send, Sender, partition_for
from stream_app.runtime.batches import Batch
from stream_app.runtime.committer import Committer
from stream_app.runtime.user_cache import UserCache

if TYPE_CHECKING:
    from stream_app.agents.score import Outcome, ScoreHandler

log = logging.getLogger(__name__)

MARK = "erased"  # the marker's slot in UserState.extra


def covers(state: UserState, offset: int, created_ms: int | None, now: float, ttl: float) -> bool:
    """Whether the erasure marker on ``state`` drops a clickstream record at ``offset``
    written at ``created_ms`` (Kafka CreateTime; None or <= 0 when unknown)."""
    requested_at, _applied_at, hw = state.extra[MARK]
    if expired(state, now, ttl):
        return False
    if hw is not None and offset < hw:
        return True
    return created_ms is not None and 0 < created_ms <= requested_at * 1000.0


def expired(state: UserState, now: float, ttl: float) -> bool:
    return now - float(state.extra[MARK][1]) > ttl


class ErasureHandler:
    def __init__(
        self,
        score: ScoreHandler,
        topic: str,
        highwater: Callable[[int], int | None] = lambda partition: None,
    ) -> None:
        self.score = score
        self.topic = topic
        self.highwater = highwater  # the clickstream partition's high watermark, if known

    def erase(
        self,
        store: MutableMapping[str, UserState],
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
    ) -> Outcome:
        """One request: the audit record to publish once the tombstone is written, or a
        dead letter for a bad request, or a forward to the user's partition."""
        from stream_app.agents.score import TOMBSTONE, Outcome

        score = self.score
        source = Source(self.topic, partition, offset, key)
        raw = value or b""
        if value is None:
            return score.reject(raw, TOMBSTONE, source, None)
        max_bytes = score.decoder.max_bytes
        if len(raw) > max_bytes:
            detail = f"{len(raw)} bytes > {max_bytes}"
            return score.reject(raw, Rejection("too_large", None, detail), source, None)
        try:
            request = ErasureRequest.model_validate_json(raw)
        except ValidationError as exc:
            return score.reject(raw, erasure_rejection(exc), source, None)
        uid_bytes = request.user_id.encode()
        expected = partition_for(uid_bytes, score.partitions)
        if key != uid_bytes or partition != expected:
            score.metrics.rerouted.inc()
            return Outcome("rerouted", [Send("erasure", uid_bytes, raw, expected)])
        if isinstance(store, UserCache):
            store.partition = partition  # the marker is written to this user's partition
        old = store.get(request.user_id)
        found = old is not None and MARK not in old.extra
        now = score.wall_clock()
        marker = score.engine.space.new_state(request.user_id)
        marker.extra[MARK] = [
            request.requested_at.timestamp(),
            now,
            self.highwater(partition),
        ]
        store[request.user_id] = marker  # replaces the state; written at the next flush
        score.forget(uid_bytes)
        score.metrics.erasures.labels("found" if found else "unknown").inc()
        log.info(
            "erasure request %s carried out (state found: %s) partition=%s offset=%s",
            request.request_id,
            found,
            partition,
            offset,
        )
        audit = ErasureAudit(
            request_id=request.request_id,
            user_id=request.user_id,
            requested_at=request.requested_at,
            requested_by=request.requested_by,
            erased_at=datetime.fromtimestamp(now, tz=UTC),
            found=found,
            erased=list(ERASED) if found else [],
            not_erased=list(NOT_ERASED),
            partition=partition,
            offset=offset,
        )
        return Outcome(
            "erased", [Send("erasure_audit", uid_bytes, audit.model_dump_json().encode())]
        )

    async def apply(
        self,
        store: MutableMapping[str, UserState],
        batch: Batch,
        send: Sender,
        committer: Committer,
    ) -> None:
        """A batch of requests: tombstone confirmed, then the audit record; the batch's
        offsets are released (and a commit follows at the next flush) only after both."""
        futures: list[asyncio.Future[Any]] = []
        partition = batch.tp.partition
        for rec in batch.records:
            outcome = self.erase(store, partition, rec.offset, rec.key, rec.value)
            if outcome.status == "erased":
                await committer.flush()  # everything before it, and the marker
            futures += [await send(out) for out in outcome.sends]
        committer.add(batch, futures)
        await committer.flush()


def erasure_rejection(exc: ValidationError) -> Rejection:
    """The dead-letter reason of an erasure request pydantic refused."""
    err = exc.errors(include_url=False)[0]
    field_name = ".".join(str(p) for p in err.get("loc", ())) or None
    kind = err.get("type", "")
    reason: DeadLetterReason
    if kind == "json_invalid":
        reason = "invalid_json"
    elif kind == "missing":
        reason = "missing_field"
    elif kind in ("model_type", "model_attributes_type") and field_name is None:
        reason = "not_an_object"
    else:
        reason = "invalid_field"
    return Rejection(reason, field_name, f"erasure request: {err.get('msg', kind)}")
