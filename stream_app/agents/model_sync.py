"""Model sync: every worker reads the model topic from the start and hot-swaps its scorer.

Every worker needs every snapshot, so this is a plain consumer outside the consumer group
(assigned the topic's one partition), not a Faust agent. :class:`ModelSync` judges one
message and swaps the engine's model; :class:`ModelSyncService` feeds it from Kafka.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust
from aiokafka import TopicPartition
from kafka import KafkaConsumer
from kafka import TopicPartition as KafkaTopicPartition
from mode import Service

from schemas.outputs import ModelSnapshot
from stream_app.core.engine import Engine
from stream_app.core.model import check_snapshot
from stream_app.errors import SnapshotError
from stream_app.kafka.clients import consumer
from stream_app.kafka.security import kafka_python_options
from stream_app.metrics import Metrics
from stream_app.settings import Settings
from stream_app.wiring import Base, Deps

log = logging.getLogger(__name__)


def supersedes(snap: ModelSnapshot, current: ModelSnapshot | None) -> bool:
    """Whether ``snap``, read after ``current`` on the model topic, replaces it: a higher
    version, or the same version published later. Two snapshots of one version come from
    two learners that overlapped in a rebalance; the later one is the one compaction keeps
    (one key) and the one a learner resumes from, so every worker scores with it too."""
    return current is None or snap.version >= current.version


class ModelSync:
    """Validates snapshots and hands scoring to each newer one; a bad one is counted and
    logged, and the model in use keeps scoring. Offsets already judged (the service reads
    the topic again from its start after the preload did) are skipped quietly."""

    def __init__(self, engine: Engine, metrics: Metrics) -> None:
        self.engine = engine
        self.metrics = metrics
        self.latest: ModelSnapshot | None = None  # newest accepted (ready or not)
        self.read_through = -1  # highest offset judged

    @property
    def version(self) -> int:
        return self.latest.version if self.latest is not None else 0

    def handle(self, offset: int, value: bytes | None) -> str:
        """``accepted``, ``reread`` (an offset judged before: nothing to do), ``current``
        (the snapshot in use, published again) or ``rejected:<reason>`` with reason
        ``invalid``, ``schema`` or ``stale``."""
        if offset <= self.read_through:
            log.debug("model snapshot at offset %d: judged before, skipped", offset)
            return "reread"
        self.read_through = offset
        if not value:
            return self._reject(offset, "invalid", "empty message or tombstone")
        try:
            snap = ModelSnapshot.model_validate_json(value)
        except ValueError as exc:
            return self._reject(offset, "invalid", _first_line(exc))
        try:
            check_snapshot(snap, self.engine.space.schema, self.engine.space.names)
        except SnapshotError as exc:
            return self._reject(offset, "schema", str(exc))
        if snap == self.latest:
            return "current"
        if not supersedes(snap, self.latest):
            assert self.latest is not None
            return self._reject(
                offset, "stale", f"version {snap.version} is older than {self.latest.version}"
            )
        if self.latest is not None and snap.version == self.latest.version:
            log.warning(
                "model snapshot v%d at offset %d differs from the v%d in use (two learners "
                "overlapped in a rebalance): taking the later one, as the learner does",
                snap.version,
                offset,
                snap.version,
            )
        self.latest = snap
        scorer = self.engine.use_snapshot(snap)
        m = self.metrics
        set_bandit_means(self.engine, m)
        m.model_version.set(scorer.version)
        m.model_ready.set(1 if scorer.ready else 0)
        m.model_snapshot_time.set(snap.created_at.timestamp())
        for key, gauge in (
            ("rolling_auc", m.model_rolling_auc),
            ("challenger_auc", m.model_challenger_auc),
            ("prior_auc", m.model_prior_auc),
            ("rolling_logloss", m.model_rolling_logloss),
        ):
            if key in snap.metrics:  # the gauge is named after the key: churn_model_<key>
                gauge.set(snap.metrics[key])
        log.info(
            "model snapshot v%d at offset %d: %s (%d labels)",
            snap.version,
            offset,
            "scoring with it" if scorer.ready else "not ready, the cold-start prior scores",
            snap.n_labels,
        )
        return "accepted"

    def _reject(self, offset: int, reason: str, detail: str) -> str:
        self.metrics.model_rejected.labels(reason).inc()
        log.warning(
            "model snapshot at offset %d rejected (%s): %s; v%d keeps scoring",
            offset,
            reason,
            detail,
            self.engine.scorer.version,
        )
        return f"rejected:{reason}"


def set_bandit_means(engine: Engine, metrics: Metrics) -> None:
    """The posterior mean gauge from the counts the policy chooses with (at start: the
    prior only). Segments come from the policy file's few facts, so the label set stays
    small; a segment once seen stays in every later snapshot."""
    if engine.policy is None:
        return
    for segment, action, mean in engine.policy.bandit_means():
        metrics.bandit_mean.labels(segment, action).set(mean)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return " ".join(text[:3])[:300]


def preload(settings: Settings, sync: ModelSync, timeout_ms: int = 30_000) -> int:
    """Read the model topic to its end before the worker starts consuming, so the first
    events after a start are scored by the newest model; returns the messages read. Uses a
    blocking kafka-python consumer: it runs before the event loop."""
    tp = KafkaTopicPartition(settings.topic_model, 0)
    reader = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers.split(","),
        client_id=f"{settings.app_id}-model-preload",
        enable_auto_commit=False,
        group_id=None,
        request_timeout_ms=timeout_ms,
        **kafka_python_options(settings),
    )
    try:
        if tp.topic not in reader.topics():
            return 0
        reader.assign([tp])
        reader.seek_to_beginning(tp)
        end = reader.end_offsets([tp])[tp]
        n = 0
        while reader.position(tp) < end:
            for msgs in reader.poll(timeout_ms=1000).values():
                for msg in msgs:
                    sync.handle(msg.offset, msg.value)
                    n += 1
        return n
    finally:
        reader.close()


class ModelSyncService(Service):
    """Reads the model topic from its beginning for as long as the worker runs.
    ``caught_up`` is set once everything published before start-up was read."""

    def __init__(self, deps: Base, sync: ModelSync, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.deps = deps
        self.sync = sync
        self.caught_up = asyncio.Event()
        self._consumer: Any = None

    async def on_start(self) -> None:
        s = self.deps.settings
        self._consumer = consumer(s, group_id=None)
        await self._consumer.start()

    async def on_stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    @Service.task
    async def _read(self) -> None:
        tp = TopicPartition(self.deps.settings.topic_model, 0)
        c = self._consumer
        c.assign([tp])
        await c.seek_to_beginning(tp)
        end = (await c.end_offsets([tp]))[tp]
        if end == 0:
            self.caught_up.set()
        while not self.should_stop:
            batch = await c.getmany(tp, timeout_ms=1000)
            for msg in batch.get(tp, []):
                self.sync.handle(msg.offset, msg.value)
                if msg.offset + 1 >= end:
                    self.caught_up.set()


def new_service(base: Base) -> ModelSyncService:
    """The model sync of a worker (``.sync``) and the service that feeds it."""
    sync = ModelSync(base.engine, base.metrics)
    return ModelSyncService(base, sync, loop=base.app.loop)


def register(app: faust.App, deps: Deps) -> ModelSyncService:
    service = deps.model_service
    # Faust starts extra services after table recovery; instances are accepted.
    app.service(service)  # type: ignore[arg-type]
    return service
