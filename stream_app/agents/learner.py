"""The learner: one per app id, inside the worker that owns the training partition.

It consumes the one-partition training topic in a consumer group of its own
(``<app_id>.learner``): the group hands the partition to exactly one worker. It commits no
offsets: its position is the ``trained_through`` offset stored in every model snapshot, so
on assignment it resumes from the latest snapshot and reads the examples after it. Faust's
stream commits as it acks, which would run ahead of the model state, so this is a plain
aiokafka consumer rather than a Faust agent.

:class:`LearnerHandler` is the synchronous part (no I/O): examples in, snapshots out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import faust
from aiokafka import ConsumerRebalanceListener, TopicPartition
from mode import Service

from schemas.outputs import ModelSnapshot, TrainingExample
from stream_app.agents.model_sync import supersedes
from stream_app.core.config import LearnerConfig, ModelConfig
from stream_app.core.labels import Label
from stream_app.core.learner import Learner
from stream_app.core.model import OnlineModel, check_snapshot
from stream_app.core.policy.chooser import Posterior
from stream_app.errors import SnapshotError
from stream_app.kafka.clients import consumer
from stream_app.kafka.send import Send, sender
from stream_app.metrics import Metrics
from stream_app.settings import Settings
from stream_app.wiring import Base, Deps

log = logging.getLogger(__name__)

PARTITION = "0"  # the training topic's one partition, as trained_through keys it
SNAPSHOT_KEY = b"model"  # one key: compaction keeps only the newest snapshot


def label_from(example: TrainingExample) -> Label:
    return Label(
        example.user_id,
        example.scored_at.timestamp(),
        example.resolved_at.timestamp(),
        example.label,
        example.p,
        dict(example.features),
        example.group if example.group != "none" or not example.treated else "treatment",
        example.model_version,
        train=example.train,
        segment=example.segment,
        action=example.action,
    )


class LearnerHandler:
    """Examples in (with their offsets), snapshots out. Skips what it already learned:
    offsets up to its position, and example ids it saw recently (a score worker that
    crashed after sending an example sends it again)."""

    def __init__(
        self,
        names: list[str],
        schema: str,
        model_config: ModelConfig,
        learner_config: LearnerConfig,
        metrics: Metrics,
        max_interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        train_on_treated: bool = True,
    ) -> None:
        self.names = names
        self.schema = schema
        self.model_config = model_config
        self.learner_config = learner_config
        self.metrics = metrics
        self.max_interval = max_interval
        self.clock = clock
        self.train_on_treated = train_on_treated
        self.learner = self._new_learner()
        self.position = -1  # offset of the last training message handled
        self._last_publish = clock()

    def _new_learner(self) -> Learner:
        c = self.learner_config
        model = OnlineModel.from_config(self.names, self.schema, self.model_config)
        return Learner(
            model,
            c.snapshot_every,
            c.rolling_window,
            c.example_dedup,
            train_on_treated=self.train_on_treated,
        )

    def resume(self, latest: ModelSnapshot | None) -> int:
        """Continue from the newest snapshot (None: from scratch); returns the offset to
        read next. A snapshot of another feature schema (an upgrade changed the features)
        starts a fresh model that keeps counting versions and does not re-read the old
        examples."""
        self.learner = self._new_learner()
        self.position = -1
        if latest is not None:
            self.position = latest.trained_through.get(PARTITION, -1)
            try:
                check_snapshot(latest, self.schema, self.names)
                self.learner.restore(latest)
            except (SnapshotError, ValueError) as exc:
                log.warning("learner: cannot continue snapshot v%d (%s)", latest.version, exc)
                log.warning("learner: starting a fresh model as v%d+", latest.version + 1)
                self.learner.model.version = latest.version
                # The bandit's counts do not depend on the features: keep what was learned.
                self.learner.bandit = Posterior.from_dict(latest.bandit or {})
        self._last_publish = self.clock()
        log.info(
            "learner: resuming at offset %d with model v%d (%d labels)",
            self.position + 1,
            self.learner.model.version,
            self.learner.n,
        )
        return self.position + 1

    def handle(self, offset: int, value: bytes | None) -> list[Send]:
        if offset <= self.position:
            self.metrics.training_skipped.labels("already_learned").inc()
            return []
        self.position = offset
        try:
            example = TrainingExample.model_validate_json(value or b"")
        except ValueError as exc:
            self.metrics.training_skipped.labels("invalid").inc()
            log.warning("learner: invalid training example at offset %d: %s", offset, exc)
            return []
        if set(example.features) != set(self.names):
            self.metrics.training_skipped.labels("schema").inc()
            return []
        learner = self.learner
        if learner.seen_example(example.example_id):
            self.metrics.training_skipped.labels("duplicate").inc()
            return []
        drifts = learner.drifts
        learner.trained_through = {PARTITION: offset}
        label = label_from(example)
        if label.group != "none":
            self.metrics.uplift_examples.labels(label.group, str(label.label)).inc()
        snap = learner.learn(label)
        if learner.trains_on(label):
            self.metrics.model_labels.inc()
        else:
            self.metrics.training_skipped.labels("treated").inc()
        if label.group != "none":
            self._set_uplift()
        if learner.drifts != drifts:
            self.metrics.model_drift.inc()
            log.info("learner: drift detected at example %d (offset %d)", learner.n, offset)
        return self._publish(snap) if snap is not None else []

    def _set_uplift(self) -> None:
        u = self.learner.uplift()
        nan = float("nan")
        for bound, value in (("mid", u.uplift), ("low", u.uplift_low), ("high", u.uplift_high)):
            self.metrics.uplift.labels(bound).set(nan if value is None else value)

    def tick(self) -> list[Send]:
        """The time bound: a snapshot when something was learned since the last one and
        ``max_interval`` seconds passed."""
        if self.learner.since_snapshot and self.clock() - self._last_publish >= self.max_interval:
            return self._publish(self.learner.snapshot())
        return []

    def _publish(self, snap: ModelSnapshot) -> list[Send]:
        self._last_publish = self.clock()
        self.metrics.snapshots_published.inc()
        return [Send("model", SNAPSHOT_KEY, snap.model_dump_json().encode(), 0)]


async def read_latest_snapshot(settings: Settings) -> ModelSnapshot | None:
    """The newest valid snapshot on the model topic (by version; of equal versions the
    later one, as model sync and compaction have it: :func:`supersedes`), or None."""
    tp = TopicPartition(settings.topic_model, 0)
    c = consumer(settings, group_id=None)
    await c.start()
    try:
        c.assign([tp])
        await c.seek_to_beginning(tp)
        end = (await c.end_offsets([tp]))[tp]
        best: ModelSnapshot | None = None
        while end and await c.position(tp) < end:
            batch = await c.getmany(tp, timeout_ms=1000)
            for msg in batch.get(tp, []):
                try:
                    snap = ModelSnapshot.model_validate_json(msg.value or b"")
                except ValueError:
                    log.warning("learner: skipping an invalid snapshot at offset %d", msg.offset)
                    continue
                if supersedes(snap, best):
                    best = snap
        return best
    finally:
        await c.stop()


class LearnerService(Service):
    """Runs the learner while this worker owns the training partition."""

    def __init__(self, deps: Base, handler: LearnerHandler, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.deps = deps
        self.handler = handler
        self.active = False
        # Bumped by every assignment and revoke: a batch fetched under one ownership is
        # never learned under the next (that one resumed from the topic, at its own offset).
        self.epoch = 0
        self._consumer: Any = None
        self._send = sender(deps)

    async def on_start(self) -> None:
        s = self.deps.settings
        self._consumer = consumer(s, group_id=f"{s.app_id}.learner")
        self._consumer.subscribe([s.topic_training], listener=_Rebalance(self))
        await self._consumer.start()

    async def on_stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def assigned(self, tps: set[TopicPartition]) -> None:
        tp = TopicPartition(self.deps.settings.topic_training, 0)
        if tp not in tps:
            return
        latest = await read_latest_snapshot(self.deps.settings)
        start = self.handler.resume(latest)
        first = (await self._consumer.beginning_offsets([tp]))[tp]
        if start < first:
            log.warning(
                "learner: examples %d..%d are gone (topic retention); resuming at %d",
                start,
                first - 1,
                first,
            )
            start = first
        self._consumer.seek(tp, start)
        self.epoch += 1
        self.active = True
        self.deps.metrics.learner_active.set(1)

    def revoked(self) -> None:
        if self.active:
            log.info("learner: training partition revoked; another worker learns now")
        self.epoch += 1
        self.active = False
        self.deps.metrics.learner_active.set(0)

    @Service.task
    async def _learn(self) -> None:
        c = self._consumer
        while not self.should_stop:
            batch = await c.getmany(timeout_ms=500, max_records=1000)
            if not self.active:
                if not batch:
                    await asyncio.sleep(0.1)
                continue
            await self.learn_batch(batch)

    async def learn_batch(self, batch: Mapping[Any, Iterable[Any]]) -> int:
        """Learn from a fetched batch and publish what it yields, one message at a time,
        for as long as this worker owns the training partition under the ownership the
        batch was fetched in; returns the messages learned. Ownership is checked before
        every message and every send: a revoke arrives while a send is awaited, and from
        then on the new owner, resumed from the last published snapshot, learns and
        publishes; this one must not publish a second snapshot of the same version. Nor
        may a batch fetched before a revoke be learned after a re-assignment: the resumed
        handler would take its offsets as learned and skip the ones before them. What was
        learned unpublished is dropped (the next assignment resumes from the topic)."""
        epoch = self.epoch

        def owned() -> bool:
            return self.active and self.epoch == epoch

        learned = 0
        for msgs in batch.values():
            for msg in msgs:
                if not owned():
                    return learned
                for out in self.handler.handle(msg.offset, msg.value):
                    if not owned():
                        return learned
                    await self._send(out)
                learned += 1
        for out in self.handler.tick() if owned() else ():
            if not owned():
                break
            await self._send(out)
        return learned


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, service: LearnerService) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.service.revoked()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.service.assigned(set(assigned))


def new_service(base: Base) -> LearnerService:
    """The learner service of a worker, with a handler configured by the settings."""
    s, engine = base.settings, base.engine
    handler = LearnerHandler(
        engine.space.names,
        engine.space.schema,
        s.as_model_config(),
        s.as_learner_config(),
        base.metrics,
        s.snapshot_max_interval,
        train_on_treated=engine.train_on_treated,
    )
    return LearnerService(base, handler, loop=base.app.loop)


def register(app: faust.App, deps: Deps) -> LearnerService:
    service = deps.learner
    # Faust starts extra services after table recovery; instances are accepted.
    app.service(service)  # type: ignore[arg-type]
    return service
