"""The score agent: decode, route, dedupe, run the engine, say what to send.

``ScoreHandler.handle`` is synchronous and does no I/O: it returns the messages to send, so
the Faust agent (:func:`register`) stays a thin loop and this stays testable without a
broker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import faust
from faust.types import TP
from kafka.partitioner.default import murmur2
from pydantic import ValidationError

from schemas.erasure import ERASED, NOT_ERASED, ErasureAudit, ErasureRequest
from schemas.events import EventView
from schemas.outputs import DeadLetterReason, TrainingExample
from stream_app.agents.user_cache import UserCache
from stream_app.core.engine import Engine, StepResult
from stream_app.core.features import UserState
from stream_app.core.labels import Label
from stream_app.core.policy import (
    DecisionOut,
    PartitionGuard,
    decision_message,
    intervention_message,
)
from stream_app.core.timers import PartitionClock
from stream_app.ingest import Decoder, Rejection, Source, dead_letter
from stream_app.metrics import Metrics
from stream_app.wiring import Deps, Topics

log = logging.getLogger(__name__)


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default (murmur2) partitioner picks for ``key``; what Java,
    kafka-python and aiokafka producers do for a keyed message."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True, slots=True)
class Send:
    topic: str  # role in wiring.Topics: dlq, clickstream (re-route), training, model, decisions...
    key: bytes | None
    value: bytes
    partition: int | None = None


@dataclass(slots=True)
class Outcome:
    status: str  # applied | duplicate | late | invalid | rerouted
    sends: list[Send] = field(default_factory=list)


_NO_HINTS = frozenset({"too_large", "invalid_utf8", "too_deep", "tombstone"})
TOMBSTONE = Rejection("tombstone", None, "null message value (a tombstone): not an event")


def label_message(label: Label) -> TrainingExample:
    return TrainingExample(
        example_id=label.example_id,
        user_id=label.user_id,
        scored_at=datetime.fromtimestamp(label.scored_at, tz=UTC),
        resolved_at=datetime.fromtimestamp(label.resolved_at, tz=UTC),
        label=1 if label.label else 0,
        p=label.p,
        features=label.features,
        treated=label.treated,
        group=label.group,
        model_version=label.model_version,
        train=label.train,
    )


class ScoreHandler:
    def __init__(
        self,
        engine: Engine,
        decoder: Decoder,
        metrics: Metrics,
        partitions: int,
        topic: str,
        dlq_payload_bytes: int,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.decoder = decoder
        self.metrics = metrics
        self.partitions = partitions
        self.topic = topic
        self.dlq_payload_bytes = dlq_payload_bytes
        self.wall_clock = wall_clock
        self.clocks: dict[int, PartitionClock] = {}
        # Policy budget and breaker per partition: kept when clocks are rebuilt, so a
        # rebalance in this process does not refill a spent budget.
        self.guards: dict[int, PartitionGuard] = {}
        self._partition_of: dict[bytes, int] = {}
        self._gauges: dict[int, tuple[Any, Any, Any]] = {}
        self._events_by_type: dict[str, Any] = {}
        self._scores_by_trigger: dict[str, Any] = {}

    def reset_clocks(self) -> None:
        """Partitions were reassigned: derived timer state is rebuilt lazily per partition."""
        self.clocks.clear()

    def clock_for(self, store: MutableMapping[str, UserState], partition: int) -> PartitionClock:
        clock = self.clocks.get(partition)
        if clock is None:
            clock = self.engine.new_clock(self.partitions)
            if clock.guard is not None:
                clock.guard = self.guards.setdefault(partition, clock.guard)
            if isinstance(store, UserCache):
                mine = store.users_in(partition)
            else:
                mine = {
                    uid: st
                    for uid, st in store.items()
                    if partition_for(uid.encode(), self.partitions) == partition
                }
            n = self.engine.rebuild(mine, clock)
            log.info("partition %d: rebuilt %d user deadlines from the table", partition, n)
            self.clocks[partition] = clock
        return clock

    def handle(
        self,
        store: MutableMapping[str, UserState],
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
    ) -> Outcome:
        raw = value or b""
        if value is None:
            return self._reject(raw, TOMBSTONE, self._source(partition, offset, key), None)
        decoded = self.decoder.decode(raw)
        if decoded.rejection is not None:
            source = self._source(partition, offset, key)
            return self._reject(raw, decoded.rejection, source, None)
        event = decoded.event
        assert event is not None
        uid_bytes = event.user_id.encode()
        expected = self._partition_of.get(uid_bytes)
        if expected is None:  # murmur2 in pure Python: once per user, not per event
            if len(self._partition_of) >= 100_000:  # bounded: a large state is on disk
                self._partition_of.clear()
            expected = self._partition_of[uid_bytes] = partition_for(uid_bytes, self.partitions)
        if key != uid_bytes or partition != expected:
            # Never apply a user's event on another partition's state: forward it.
            self.metrics.rerouted.inc()
            return Outcome("rerouted", [Send("clickstream", uid_bytes, raw, expected)])
        if decoded.unknown_fields:  # counted once, where the event is applied
            self.metrics.unknown_fields.inc(len(decoded.unknown_fields))
        if isinstance(store, UserCache):
            store.partition = partition  # every user this event touches lives here
        clock = self.clock_for(store, partition)
        result = self.engine.process(store, clock, event, decoded.ts, offset)
        if result.status == "late":
            return self._reject(
                raw,
                Rejection(
                    "late_event",
                    "ts",
                    "event time is older than the partition watermark "
                    f"(stream time - {self.engine.config.allowed_lateness:.0f}s)",
                ),
                self._source(partition, offset, key),
                event,
            )
        if result.status == "duplicate":
            self.metrics.duplicates.inc()
            return Outcome("duplicate")
        counter = self._events_by_type.get(event.event_type)
        if counter is None:
            counter = self._events_by_type[event.event_type] = self.metrics.events.labels(
                event.event_type
            )
        counter.inc()
        timers = self.engine.advance(store, clock)
        if timers is not None:
            result.extend(timers)
        self._observe(partition, clock, result)
        sends = [
            Send("training", lab.user_id.encode(), label_message(lab).model_dump_json().encode())
            for lab in result.labels
        ]
        for out in result.decisions:
            sends += self._decided(out)
        if clock.guard is not None:
            self._breaker(partition, clock.guard)
        return Outcome("applied", sends)

    def erase(
        self,
        store: MutableMapping[str, UserState],
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        topic: str,
    ) -> Outcome:
        """An erasure request (schemas/erasure.py) from ``topic``: forget the user's state
        (open training examples, timers and policy state live in it) and return the audit
        record to publish once the tombstone is written. Bad requests are dead letters."""
        source = Source(topic, partition, offset, key)
        raw = value or b""
        if value is None:
            return self._reject(raw, TOMBSTONE, source, None)
        if len(raw) > self.decoder.max_bytes:
            detail = f"{len(raw)} bytes > {self.decoder.max_bytes}"
            return self._reject(raw, Rejection("too_large", None, detail), source, None)
        try:
            request = ErasureRequest.model_validate_json(raw)
        except ValidationError as exc:
            return self._reject(raw, erasure_rejection(exc), source, None)
        uid_bytes = request.user_id.encode()
        expected = partition_for(uid_bytes, self.partitions)
        if key != uid_bytes or partition != expected:
            self.metrics.rerouted.inc()
            return Outcome("rerouted", [Send("erasure", uid_bytes, raw, expected)])
        if isinstance(store, UserCache):
            found = store.erase(request.user_id)
        else:
            found = store.pop(request.user_id, None) is not None
        self._partition_of.pop(uid_bytes, None)
        self.metrics.erasures.labels("found" if found else "unknown").inc()
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
            erased_at=datetime.fromtimestamp(self.wall_clock(), tz=UTC),
            found=found,
            erased=list(ERASED) if found else [],
            not_erased=list(NOT_ERASED),
            partition=partition,
            offset=offset,
        )
        return Outcome(
            "erased", [Send("erasure_audit", uid_bytes, audit.model_dump_json().encode())]
        )

    def _decided(self, out: DecisionOut) -> list[Send]:
        """The audit record always; the intervention for treatment only (keyed by user)."""
        m = self.metrics
        key = out.user_id.encode()
        sends = [Send("decisions", key, decision_message(out).model_dump_json().encode())]
        if out.suppressed_by is not None:
            m.suppressed.labels(out.suppressed_by).inc()
            if out.suppressed_by == "budget":
                m.budget_exhausted.inc()
            return sends
        m.interventions.labels(out.action, out.tier, out.group).inc()
        intervention = intervention_message(out)
        if intervention is not None:
            sends.append(Send("interventions", key, intervention.model_dump_json().encode()))
        return sends

    def _breaker(self, partition: int, guard: PartitionGuard) -> None:
        change = guard.pop_change()
        if change is None:
            return
        self.metrics.circuit_open.labels(str(partition)).set(1 if change.opened else 0)
        log.warning(
            "partition %d: circuit breaker %s: %s",
            partition,
            "OPEN, interventions held back" if change.opened else "closed",
            change.reason,
        )

    def _source(self, partition: int, offset: int, key: bytes | None) -> Source:
        return Source(self.topic, partition, offset, key)

    def publish_gauges(self) -> None:
        """Per-partition gauges (stream time, event lag, deadlines), set at each write-back
        flush rather than per event."""
        m = self.metrics
        now = self.wall_clock()
        for partition, clock in list(self.clocks.items()):
            gauges = self._gauges.get(partition)
            if gauges is None:  # labelled children looked up once
                part = str(partition)
                gauges = self._gauges[partition] = (
                    m.stream_time.labels(part),
                    m.watermark_lag.labels(part),
                    m.timers.labels(part),
                )
            gauges[0].set(clock.stream_time)
            gauges[1].set(now - clock.stream_time)
            gauges[2].set(len(clock))

    def _observe(self, partition: int, clock: PartitionClock, result: StepResult) -> None:
        m = self.metrics
        for s in result.scores:
            scores = self._scores_by_trigger.get(s.trigger)
            if scores is None:
                scores = self._scores_by_trigger[s.trigger] = m.scores.labels(s.trigger)
            scores.inc()
            m.risk.observe(s.p)
        for lab in result.labels:
            m.labels.labels(str(lab.label)).inc()

    def _reject(
        self, raw: bytes, rejection: Rejection, source: Source, event: EventView | None
    ) -> Outcome:
        self.metrics.invalid.labels(rejection.reason).inc()
        hints = None
        if event is None and rejection.reason not in _NO_HINTS:
            try:
                parsed = json.loads(raw)
                hints = parsed if isinstance(parsed, dict) else None
            except (ValueError, RecursionError):
                hints = None
        letter = dead_letter(
            raw,
            rejection,
            source,
            self.dlq_payload_bytes,
            self.wall_clock(),
            event=event,
            hints=hints,
        )
        log.warning(
            "dead letter %s field=%s topic=%s partition=%s offset=%s",
            rejection.reason,
            rejection.field,
            source.topic,
            source.partition,
            source.offset,
        )
        return Outcome("invalid", [Send("dlq", source.key, letter.model_dump_json().encode())])


class Committer:
    """Makes a batch of applied events durable, then acks them.

    Events are applied to the write-back cache (user_cache.py) and their outputs sent at
    once; their messages stay unacked. ``flush`` writes every dirty user once to the
    changelog and only then acks the batch's messages, so Faust never commits an offset
    whose effects are not in the producer ahead of the commit (Faust flushes the producer
    before it commits). It runs every ``interval`` seconds (a timer, also while the stream
    is idle, and so during a rebalance, whose ``wait_empty`` waits for these acks) and
    whenever ``max_events`` wait."""

    def __init__(
        self,
        cache: UserCache,
        send_changelog: Callable[[str, int, bytes | None], Awaitable[Any]],
        metrics: Metrics,
        interval: float,
        max_events: int,
        after_flush: Callable[[], None] = lambda: None,
    ) -> None:
        self.after_flush = after_flush
        self.cache = cache
        self.send_changelog = send_changelog
        self.metrics = metrics
        self.interval = interval
        self.max_events = max_events
        self.pending: list[Any] = []  # events applied since the last flush, unacked
        self.last = time.monotonic()
        self._lock = asyncio.Lock()

    def due(self) -> bool:
        return bool(self.pending or self.cache.dirty) and (
            len(self.pending) >= self.max_events or time.monotonic() - self.last >= self.interval
        )

    async def flush(self, after_writes: Callable[[], Awaitable[Any]] | None = None) -> None:
        """Write dirty users, then ``after_writes`` (sends that must follow the state, like
        an erasure's audit record), then ack."""
        async with self._lock:
            self.last = time.monotonic()
            events, self.pending = self.pending, []
            rows = self.cache.take_dirty()
            for uid, partition, payload in rows:
                await self.send_changelog(uid, partition, payload)
            if after_writes is not None:
                await after_writes()
            for event in events:
                event.ack()
            if rows:
                self.metrics.state_writes.inc(len(rows))
            self.metrics.flushes.inc()
            self.after_flush()


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


def sender(deps: Deps) -> Callable[[Send], Awaitable[Any]]:
    """Send one handler output to the topic of its role, straight to the producer (the
    message is in the producer's buffer when this returns; Faust flushes the producer
    before it commits offsets)."""
    app, topics = deps.app, deps.topics
    names = {role: topics.by_name(role).get_topic_name() for role in Topics.roles()}

    async def send(out: Send) -> Any:
        return await app.producer.send(
            names[out.topic], out.key, out.value, out.partition, None, None
        )

    return send


def changelog_sender(deps: Deps) -> Callable[[str, int, bytes | None], Awaitable[Any]]:
    """Write one user's state (or a tombstone) to the users table's changelog partition."""
    app, table = deps.app, deps.users
    topic = table.changelog_topic.get_topic_name()
    # Keys encoded as the table encodes them (recovery decodes them with the table's codec).
    dumps_key, key_type, key_serializer = (
        app.serializers.dumps_key,
        table.key_type,
        table.key_serializer,
    )

    def store_offsets(tp: TP, offset: int) -> None:  # rocksdb: where recovery resumes
        table.data.set_persisted_offset(tp, offset)

    def persisted(fut: Any) -> None:
        if not fut.cancelled() and fut.exception() is None:
            meta = fut.result()
            store_offsets(TP(meta.topic, meta.partition), meta.offset)

    async def send(user_id: str, partition: int, payload: bytes | None) -> Any:
        key = dumps_key(key_type, user_id, serializer=key_serializer)
        fut = await app.producer.send(topic, key, payload, partition, None, None)
        fut.add_done_callback(persisted)
        return fut

    return send


def register(app: faust.App, deps: Deps) -> Any:
    """The score agent on the clickstream topic; returns the Faust agent."""
    settings = deps.settings
    handler = ScoreHandler(
        deps.engine,
        Decoder.from_settings(settings),
        deps.metrics,
        settings.topic_partitions,
        settings.topic_clickstream,
        settings.dlq_payload_bytes,
    )
    metrics, send = deps.metrics, sender(deps)
    cache = deps.cache
    assert cache is not None, "create_app builds the cache before the agents"
    committer = Committer(
        cache,
        changelog_sender(deps),
        metrics,
        settings.state_flush_interval,
        settings.state_flush_events,
        after_flush=handler.publish_gauges,
    )

    # concurrency stays 1: >1 can commit offsets past unprocessed messages. Nothing may be
    # awaited before the stream is iterated: awaiting the model sync there left some
    # partitions unfetched after a restart in 2 of 4 runs (test_restart.py); the worker
    # loads the newest model before Faust starts instead (agents/model_sync.preload).
    # One agent reads the clickstream and the erasure topic (co-partitioned: same partition
    # count, same key), so a user's erasure is applied in order with their events.
    erasure_topic = settings.topic_erasure
    channel = app.topic(
        settings.topic_clickstream,
        erasure_topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.topic_partitions,
    )

    async def erase(event: Any) -> None:
        msg = event.message
        outcome = handler.erase(cache, msg.partition, msg.offset, msg.key, msg.value, erasure_topic)
        committer.pending.append(event)
        if outcome.status != "erased":
            for out in outcome.sends:
                await send(out)
            return

        async def audit() -> None:
            for out in outcome.sends:
                await send(out)

        # The tombstone, then the audit, then the ack; then commit at once, so no event
        # applied before the erasure is redelivered after it (and re-creates the user).
        await committer.flush(after_writes=audit)
        await app.consumer.commit()

    @app.agent(channel, name="score", concurrency=1)
    async def score(stream: Any) -> None:
        cache.bind()
        handle, pending = handler.handle, committer
        async for event in stream.noack().events():
            msg = event.message
            if msg.topic == erasure_topic:
                await erase(event)
                continue
            t0 = time.perf_counter()
            try:
                outcome = handle(cache, msg.partition, msg.offset, msg.key, msg.value)
            except Exception:
                log.exception(
                    "unexpected error topic=%s partition=%s offset=%s",
                    msg.topic,
                    msg.partition,
                    msg.offset,
                )
                raise
            for out in outcome.sends:
                await send(out)
            pending.pending.append(event)
            metrics.process_seconds.observe(time.perf_counter() - t0)
            if len(pending.pending) >= pending.max_events:
                await committer.flush()

    @app.timer(interval=max(settings.state_flush_interval / 2, 0.01))  # type: ignore[untyped-decorator]
    async def flush_state() -> None:
        if committer.due():
            await committer.flush()

    async def _assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        handler.reset_clocks()

    app.on_partitions_assigned.connect(_assigned)
    deps.score, deps.score_agent, deps.committer = handler, score, committer
    return score
