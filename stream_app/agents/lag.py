"""Consumer lag: clickstream messages the app's consumer group has not committed yet.

Every ``LAG_INTERVAL`` seconds each worker compares the group's committed offsets with the
partitions' end offsets, for the clickstream partitions it owns, so summing the gauge over
all workers gives the group's lag once. Event-time lag (``churn_event_lag_seconds``) cannot
tell a worker that falls behind from a quiet partition; this can.
"""

from __future__ import annotations

import logging
from typing import Any

import faust
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from mode import Service

from stream_app.clients import consumer
from stream_app.security import aiokafka_options
from stream_app.wiring import Deps

log = logging.getLogger(__name__)

LAG_INTERVAL = 10.0  # seconds; Prometheus scrapes every 15 s


def lag_by_partition(
    owned: set[int],
    end: dict[int, int],
    committed: dict[int, int],
    beginning: dict[int, int],
) -> dict[int, int]:
    """Messages after the committed offset of each owned partition; a partition with no
    commit yet lags by everything it retains."""
    out = {}
    for p in sorted(owned):
        if p not in end:
            continue
        start = committed.get(p, beginning.get(p, 0))
        out[p] = max(0, end[p] - start)
    return out


class LagService(Service):
    """Sets ``churn_consumer_lag_messages{partition}`` for the partitions this worker owns."""

    def __init__(self, app: faust.App, deps: Deps, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.app = app
        self.deps = deps
        self._admin: Any = None
        self._consumer: Any = None
        self._reported: set[int] = set()

    async def on_start(self) -> None:
        s = self.deps.settings
        self._admin = AIOKafkaAdminClient(
            bootstrap_servers=s.kafka_bootstrap_servers.split(","),
            client_id=f"{s.app_id}-lag",
            **aiokafka_options(s),
        )
        await self._admin.start()
        self._consumer = consumer(s, group_id=None)
        await self._consumer.start()

    async def on_stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
        if self._admin is not None:
            await self._admin.close()

    def owned(self) -> set[int]:
        topic = self.deps.settings.topic_clickstream
        return {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == topic}

    @Service.timer(LAG_INTERVAL)
    async def _measure(self) -> None:
        try:
            await self.measure()
        except Exception as exc:  # monitoring must never stop the worker
            log.warning("consumer lag: not measured this time (%s)", exc)

    async def measure(self) -> dict[int, int]:
        s, gauge = self.deps.settings, self.deps.metrics.consumer_lag
        owned = self.owned()
        tps = [TopicPartition(s.topic_clickstream, p) for p in sorted(owned)]
        lags: dict[int, int] = {}
        if tps:
            offsets = await self._admin.list_consumer_group_offsets(s.app_id, partitions=tps)
            committed = {tp.partition: o.offset for tp, o in offsets.items() if o.offset >= 0}
            end = {tp.partition: o for tp, o in (await self._consumer.end_offsets(tps)).items()}
            first = await self._consumer.beginning_offsets(tps)
            beginning = {tp.partition: o for tp, o in first.items()}
            lags = lag_by_partition(owned, end, committed, beginning)
        for p, lag in lags.items():
            gauge.labels(str(p)).set(lag)
        for p in self._reported - set(lags):  # moved to another worker: it reports them now
            gauge.remove(str(p))
        self._reported = set(lags)
        return lags


def register(app: faust.App, deps: Deps) -> LagService:
    service = LagService(app, deps, loop=app.loop)
    # Faust starts extra services after table recovery; instances are accepted.
    app.service(service)  # type: ignore[arg-type]
    return service
