"""Consumer lag: clickstream messages the app's consumer group has not committed yet.

Every ``LAG_INTERVAL`` seconds each worker compares the group's committed offsets with the
partitions' end offsets, for the clickstream partitions it owns, so summing the gauge over
all workers gives the group's lag once. Event-time lag (``churn_event_lag_seconds``) cannot
tell a worker that falls behind from a quiet partition; this can.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any

import faust
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from mode import Service

from stream_app.kafka.clients import consumer
from stream_app.kafka.security import aiokafka_options
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
        # Stall watchdog: per owned partition, (committed offset, monotonic time it last
        # moved). faust-streaming 0.15.3 can leave a partition kept through a rebalance
        # unfetched (stream_app/runtime/faust_fixes.py patches the causes found; this catches any
        # other): owned, behind, and no commit for STREAM_APP_STALL_TIMEOUT.
        self._progress: dict[int, tuple[int, float]] = {}
        self._stalled: set[int] = set()

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
            self.watch(lags, committed, time.monotonic())
        for p, lag in lags.items():
            gauge.labels(str(p)).set(lag)
        for p in self._reported - set(lags):  # moved to another worker: it reports them now
            gauge.remove(str(p))
        self._reported = set(lags)
        return lags

    def watch(self, lags: dict[int, int], committed: dict[int, int], now: float) -> set[int]:
        """Update the stall watchdog; returns the partitions stalled now. A partition is
        stalled when it has lag and its committed offset has not moved for
        ``stall_timeout`` seconds while the group is not rebalancing."""
        timeout = self.deps.settings.stall_timeout
        if getattr(self.app, "rebalancing", False):
            self._progress.clear()  # the clock restarts after every rebalance
            return set()
        stalled: set[int] = set()
        for p, lag in lags.items():
            offset = committed.get(p, -1)
            seen = self._progress.get(p)
            if seen is None or seen[0] != offset or lag == 0:
                self._progress[p] = (offset, now)
                continue
            if now - seen[1] >= timeout:
                stalled.add(p)
        for p in set(self._progress) - set(lags):
            del self._progress[p]
        gauge = self.deps.metrics.partition_stalled
        for p in stalled - self._stalled:
            log.error(
                "partition %d: assigned to this worker, %d messages behind, and no offset "
                "committed for %.0f s: the consumer is stuck%s",
                p,
                lags[p],
                timeout,
                "; stopping the worker so that it restarts and fetches again"
                if self.deps.settings.stall_exit
                else "",
            )
        for p in set(lags) | self._stalled:
            gauge.labels(str(p)).set(1 if p in stalled else 0)
        self._stalled = stalled
        if stalled and self.deps.settings.stall_exit:
            os.kill(os.getpid(), signal.SIGTERM)  # graceful: state flushed, offsets committed
        return stalled


def register(app: faust.App, deps: Deps) -> LagService:
    service = LagService(app, deps, loop=app.loop)
    # Faust starts extra services after table recovery; instances are accepted.
    app.service(service)  # type: ignore[arg-type]
    return service
