"""The score service: decode, route, dedupe, run the engine, say what to send.

``ScoreHandler.handle`` is synchronous and does no I/O: it returns the messages to send, so
it is testable without a broker. :class:`ScoreService` (whose tasks :func:`register`
starts) runs it over whole clickstream batches taken beneath Faust's Stream API
(runtime/batches.py), sends what it returns, and hands each batch to the committer
(runtime/committer.py), which releases its offsets only once the broker confirmed every
record the batch caused.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.types import TP

from schemas.events import EventView
from stream_app.agents import erasure
from stream_app.core.driver import step
from stream_app.core.engine import Engine, StepResult
from stream_app.core.features import UserState
from stream_app.core.labels import label_message
from stream_app.core.policy import (
    DecisionOut,
    PartitionGuard,
    decision_message,
    intervention_message,
)
from stream_app.core.timers import PartitionClock
from stream_app.ingest import Decoder, Rejection, Source, dead_letter
from stream_app.kafka.send import Send, changelog_sender, partition_for, sender
from stream_app.metrics import Metrics
from stream_app.runtime.batches import Batch, BatchConsumer, BatchSink
from stream_app.runtime.committer import Committer, WriteFailed
from stream_app.runtime.user_cache import UserCache
from stream_app.wiring import Base, Deps

log = logging.getLogger(__name__)

__all__ = ["Outcome", "ScoreHandler", "Send", "partition_for", "register"]


@dataclass(slots=True)
class Outcome:
    status: str  # applied | duplicate | late | invalid | rerouted | erased
    sends: list[Send] = field(default_factory=list)


_NO_HINTS = frozenset({"too_large", "invalid_utf8", "too_deep", "tombstone"})
TOMBSTONE = Rejection("tombstone", None, "null message value (a tombstone): not an event")


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
        marker_ttl: float = 30 * 86400.0,
    ) -> None:
        self.engine = engine
        self.decoder = decoder
        self.metrics = metrics
        self.partitions = partitions
        self.topic = topic
        self.dlq_payload_bytes = dlq_payload_bytes
        self.wall_clock = wall_clock
        self.clocks: dict[int, PartitionClock] = {}
        self.letters = LetterLog()
        self.marker_ttl = marker_ttl  # how long an erasure marker drops the user's events
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
                mine = store.partition_users(partition)  # one at a time (packed users)
            else:
                mine = (
                    (uid, st)
                    for uid, st in list(store.items())
                    if partition_for(uid.encode(), self.partitions) == partition
                )
            n = self.engine.rebuild(self.sweep_markers(store, mine), clock)
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
        created_ms: int | None = None,
    ) -> Outcome:
        """One clickstream record (``created_ms``: its Kafka CreateTime, which an erasure
        marker compares with the request's time)."""
        raw = value or b""
        if value is None:
            return self.reject(raw, TOMBSTONE, self._source(partition, offset, key), None)
        decoded = self.decoder.decode(raw)
        if decoded.rejection is not None:
            source = self._source(partition, offset, key)
            return self.reject(raw, decoded.rejection, source, None)
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
        state = store.get(event.user_id)
        if state is not None and erasure.MARK in state.extra:
            # An erased user: drop what the erasure covers (sent before it, possibly read
            # after it: Kafka orders no two topics); later events start a new user.
            if erasure.covers(state, offset, created_ms, self.wall_clock(), self.marker_ttl):
                self.metrics.erased_events.inc()
                return Outcome("erased")
            del state.extra[erasure.MARK]
        results = step(self.engine, store, clock, event, decoded.ts, offset)
        result = next(results)
        if result.status == "late":
            return self.reject(
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
        for timers in results:  # the sweep of the deadlines this event's time passed
            result.extend(timers)
        return Outcome("applied", self._outputs(partition, clock, result))

    def handle_batch(
        self, store: MutableMapping[str, UserState], partition: int, records: Sequence[Any]
    ) -> list[Send]:
        """:meth:`handle` over one partition's records (aiokafka ``ConsumerRecord``), in
        offset order; what they ask to send, in that order."""
        sends: list[Send] = []
        handle = self.handle
        for rec in records:
            out = handle(store, partition, rec.offset, rec.key, rec.value, rec.timestamp)
            if out.sends:
                sends += out.sends
        return sends

    def sweep_markers(
        self, store: MutableMapping[str, UserState], states: Iterable[tuple[str, UserState]]
    ) -> Iterator[tuple[str, UserState]]:
        """``states`` without erasure markers (they have no deadlines); expired markers are
        deleted (a tombstone at the next flush)."""
        now, ttl = self.wall_clock(), self.marker_ttl
        for uid, state in states:
            if erasure.MARK not in state.extra:
                yield uid, state
            elif erasure.expired(state, now, ttl):
                del store[uid]

    def advance_idle(
        self, store: MutableMapping[str, UserState], partition: int, until: float
    ) -> list[Send]:
        """Move a quiet partition's stream time up to ``until`` (wall-clock based: see
        STREAM_APP_IDLE_ADVANCE) and fire the deadlines it passes; what that sends."""
        if isinstance(store, UserCache):
            store.partition = partition
        clock = self.clock_for(store, partition)
        if not until > clock.stream_time:
            return []
        clock.stream_time = until
        result = self.engine.advance(store, clock)
        return [] if result is None else self._outputs(partition, clock, result)

    def _outputs(self, partition: int, clock: PartitionClock, result: StepResult) -> list[Send]:
        """Metrics of a step, and its messages: training examples, decisions, interventions."""
        self._observe(partition, clock, result)
        sends = [
            Send("training", lab.user_id.encode(), label_message(lab).model_dump_json().encode())
            for lab in result.labels
        ]
        for out in result.decisions:
            sends += self._decided(out)
        if clock.guard is not None:
            self._breaker(partition, clock.guard)
        return sends

    def forget(self, user_id: bytes) -> None:
        """Drop what the handler caches of an erased user."""
        self._partition_of.pop(user_id, None)

    def _decided(self, out: DecisionOut) -> list[Send]:
        """The audit record always; the intervention for treatment only (keyed by user)."""
        m = self.metrics
        key = out.user_id.encode()
        now = self.wall_clock()
        decision = decision_message(out, decided_at=now)
        sends = [Send("decisions", key, decision.model_dump_json().encode())]
        if out.suppressed_by is not None:
            m.suppressed.labels(out.suppressed_by).inc()
            if out.suppressed_by == "budget":
                m.budget_exhausted.inc()
            return sends
        m.interventions.labels(out.action, out.tier, out.group).inc()
        intervention = intervention_message(out, decided_at=now)
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

    def reject(
        self, raw: bytes, rejection: Rejection, source: Source, event: EventView | None
    ) -> Outcome:
        """A dead letter for ``raw``, counted, and logged through :class:`LetterLog`."""
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
        self.letters.note(rejection, source, self.wall_clock())
        return Outcome("invalid", [Send("dlq", source.key, letter.model_dump_json().encode())])


class LetterLog:
    """Dead letters in the log without one line each: the first of each reason is logged
    with its topic, partition and offset at WARNING; the rest are counted and summed up in
    one line at most every ``every`` seconds. ``churn_events_invalid_total`` stays exact
    (the DLQ topic holds every letter)."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self.seen: set[str] = set()
        self.pending: Counter[str] = Counter()
        self.since = 0.0

    def note(self, rejection: Rejection, source: Source, now: float) -> None:
        reason = rejection.reason
        if reason not in self.seen:
            self.seen.add(reason)
            log.warning(
                "dead letter %s field=%s topic=%s partition=%s offset=%s (later %s letters "
                "are summed up every %.0f s; all are on the dead-letter topic)",
                reason,
                rejection.field,
                source.topic,
                source.partition,
                source.offset,
                reason,
                self.every,
            )
            self.since = self.since or now
            return
        self.pending[reason] += 1
        self.flush(now)

    def flush(self, now: float) -> None:
        if not self.pending or now - self.since < self.every:
            return
        counts = ", ".join(f"{r} {n}" for r, n in self.pending.most_common())
        log.warning("dead letters in the last %.0f s: %s", now - self.since, counts)
        self.pending.clear()
        self.since = now


class ScoreService:
    """The score loop of one worker: its partitions' batches, in the order fetched (each
    partition's records in offset order), applied through :class:`ScoreHandler`; their
    sends go out at once and the committer releases their offsets once all are
    confirmed."""

    def __init__(self, app: faust.App, base: Base) -> None:
        settings, metrics, cache = base.settings, base.metrics, base.cache
        self.app, self.cache, self.metrics = app, cache, metrics
        self.handler = ScoreHandler(
            base.engine,
            Decoder.from_settings(settings),
            metrics,
            settings.topic_partitions,
            settings.topic_clickstream,
            settings.dlq_payload_bytes,
            marker_ttl=settings.erasure_marker_ttl,
        )
        clickstream = settings.topic_clickstream

        def highwater(partition: int) -> int | None:
            hw = app.consumer.highwater(TP(clickstream, partition))
            return None if hw is None else int(hw)

        self.erasures = erasure.ErasureHandler(self.handler, settings.topic_erasure, highwater)
        self.send = sender(base)
        self.committer = Committer(
            cache,
            changelog_sender(base),
            lambda: app.consumer,
            metrics,
            settings.state_flush_interval,
            settings.state_flush_events,
            after_flush=self.handler.publish_gauges,
        )
        self.sink = BatchSink(
            frozenset({settings.topic_clickstream, settings.topic_erasure}),
            max_records=settings.batch_max_records,
        )
        self.flush_every = max(settings.state_flush_interval / 2, 0.01)
        self.idle_advance = settings.idle_advance  # 0: off
        self.clickstream = settings.topic_clickstream
        self.last_applied: dict[int, float] = {}  # partition -> wall clock of its last batch

    async def apply(self, batch: Batch) -> None:
        """Apply one batch and send what it caused; flush early when enough wait."""
        tp, committer = batch.tp, self.committer
        if tp.topic == self.erasures.topic:
            await self.erasures.apply(self.cache, batch, self.send, committer)
            return
        t0 = time.perf_counter()
        self.last_applied[tp.partition] = self.handler.wall_clock()
        try:
            sends = self.handler.handle_batch(self.cache, tp.partition, batch.records)
        except Exception:
            log.exception(
                "unexpected error topic=%s partition=%s offsets=%s..%s",
                tp.topic,
                tp.partition,
                batch.records[0].offset,
                batch.records[-1].offset,
            )
            raise
        send = self.send
        committer.add(batch, [await send(out) for out in sends])
        n = len(batch.records)
        m = self.metrics
        m.process_seconds.observe((time.perf_counter() - t0) / n)
        m.batch_size.observe(n)
        created = batch.records[0].timestamp
        if created is not None and created > 0:
            m.produce_to_apply.observe(max(0.0, self.handler.wall_clock() - created / 1000.0))
        if committer.events >= committer.max_events:
            await committer.flush()

    async def run(self) -> None:
        """Take batches until the worker stops; a refused write or an unexpected error
        stops the worker (nothing after it is committed)."""
        app = self.app
        self.cache.bind()
        queue, consumer = self.sink.queue, app.consumer
        assert isinstance(consumer, BatchConsumer)
        try:
            while True:
                batch = await queue.get()
                if not consumer.flow_active or batch.generation != app.consumer_generation_id:
                    self.committer.drop(batch)  # a rebalance: fetched again from the commit
                    continue
                await self.apply(batch)
        except Exception as exc:
            await app.crash(exc)
            if not isinstance(exc, WriteFailed):
                raise

    async def flush_on_time(self) -> None:
        """Flush on time also while no batch comes (a quiet stream, a rebalance)."""
        handler, committer = self.handler, self.committer
        while True:
            await asyncio.sleep(self.flush_every)
            handler.letters.flush(handler.wall_clock())
            if self.idle_advance > 0:
                await self.advance_quiet_partitions()
            if committer.due():
                try:
                    await committer.flush()
                except WriteFailed as exc:
                    await self.app.crash(exc)
                    return

    async def advance_quiet_partitions(self) -> None:
        """STREAM_APP_IDLE_ADVANCE: a partition that is caught up (nothing fetched and
        waiting, its read position at the high watermark) and got no batch for that long
        moves its stream time to the wall clock minus that long, so silence deadlines fire
        in a quiet night too. Live and replay then differ: replay has no wall clock."""
        consumer = self.app.consumer
        assert isinstance(consumer, BatchConsumer)
        if not consumer.flow_active or not self.sink.queue.empty():
            return
        now, idle = self.handler.wall_clock(), self.idle_advance
        sends: list[Send] = []
        for tp in consumer.assignment():
            if tp.topic != self.clickstream:
                continue
            if now - self.last_applied.get(tp.partition, -math.inf) < idle:
                continue
            highwater = consumer.highwater(tp)
            read = consumer._read_offset.get(tp)  # the last offset fetched (runtime/batches)
            if highwater and (read is None or read + 1 < highwater):
                continue  # records wait in Kafka: not quiet, only behind
            sends += self.handler.advance_idle(self.cache, tp.partition, now - idle)
        if sends:
            self.committer.add(None, [await self.send(out) for out in sends])


def register(app: faust.App, deps: Deps) -> ScoreService:
    """The score service (built with ``deps``) on the clickstream and erasure topics."""
    settings, service = deps.settings, deps.score_service
    # Both topics are read as batches beneath Faust's Stream API (runtime/batches.py); the
    # conductor must still subscribe to them (and count them as acking topics).
    app.batch_sink = service.sink  # type: ignore[attr-defined]
    app.topics.add(
        app.topic(
            settings.topic_clickstream,
            settings.topic_erasure,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.topic_partitions,
        )
    )

    async def _assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        service.handler.reset_clocks()

    app.on_partitions_assigned.connect(_assigned)
    app.task(service.run)
    app.task(service.flush_on_time)
    return service
