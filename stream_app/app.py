"""create_app(settings) -> faust.App: topics, the users table, agents, services and views
put together. Each agent lives in stream_app/agents/, the views in stream_app/web.py."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust

from stream_app import log_filters, shutdown, web
from stream_app.agents import lag, learner, model_sync, score
from stream_app.kafka.security import faust_credentials
from stream_app.kafka.send import partition_for
from stream_app.metrics import Metrics
from stream_app.runtime import faust_fixes
from stream_app.runtime.batches import BatchTransport
from stream_app.runtime.committer import WriteFailed
from stream_app.runtime.table import UserStateCodec, UserTable, rocksdb_options
from stream_app.runtime.user_cache import UserCache
from stream_app.settings import Settings
from stream_app.wiring import Base, Deps, Topics, build_deps, build_engine

log = logging.getLogger(__name__)


class ChurnApp(faust.App):
    """A Faust app that carries what create_app wired (``app.deps``)."""

    deps: Deps

    def on_init_dependencies(self) -> Any:
        services = super().on_init_dependencies()
        # Faust's Monitor sensor keeps per-message statistics (for its own /stats view,
        # which is not served) at a few microseconds per message, on every message of
        # every stream. The worker exports its own Prometheus metrics: take it out of the
        # sensor chain (app.monitor still exists for code that calls it directly).
        self.sensors.remove(self.monitor)
        # A no-op sensor keeps the chain non-empty: Faust warns "Missing sensor state" on
        # every rebalance when no sensor returned a state.
        self.sensors.add(faust.Sensor())
        return services

    def _new_transport(self) -> Any:
        """Faust's aiokafka transport, whose consumer hands the clickstream over in batches
        (runtime/batches.py)."""
        return BatchTransport(self.conf.broker_consumer, self)

    async def _consumer_wait_empty(self, consumer: Any, logger: Any) -> None:
        """Faust waits here, on a rebalance and on shutdown, until every batch taken is
        released. The committer releases a batch only after a flush confirmed its writes
        (runtime/committer.py), and on shutdown the flush timer has already stopped: keep
        flushing while Faust waits, so the wait ends and nothing applied is left unwritten.
        A refused write releases everything without offsets and stops the flushing."""
        committer = getattr(self, "deps", None) and self.deps.committer
        if committer is None:
            return await super()._consumer_wait_empty(consumer, logger)
        waiter = asyncio.ensure_future(super()._consumer_wait_empty(consumer, logger))
        while not waiter.done():
            try:
                await committer.flush()
            except WriteFailed:
                log.error("not flushing on %s: a write was refused", "shutdown or rebalance")
                break
            await asyncio.wait([waiter], timeout=0.05)
        return await waiter


def create_app(settings: Settings, metrics: Metrics | None = None) -> ChurnApp:
    faust_fixes.apply()  # faust-streaming 0.15.3 loses events after a rebalance: see module
    if web.require_token_beyond_loopback(settings):  # ConfigError unless safe or opted out
        log.warning("STREAM_APP_API_ALLOW_OPEN: /users and /model answer anyone, no token")
    log_filters.install()  # a benign coordinator error at start reads as INFO: see module
    metrics = metrics or Metrics()
    app = ChurnApp(
        settings.app_id,
        broker=settings.bootstrap_url,
        store=settings.store,
        datadir=settings.data_dir,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_enabled=True,
        # Faust's /table/ and /router/ views answer without a token and tell who is a
        # customer; /users/{id} is the documented, authenticated way.
        web_tables_enabled=False,
        web_router_enabled=False,
        canonical_url=settings.canonical_url,
        # exactly_once has open duplicate/crash bugs in faust-streaming 0.15: at-least-once
        # plus dedup by event_id keeps state exact.
        processing_guarantee="at_least_once",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # A flush writes thousands of states (~3 KB each) at once: 16 KB batches made it
        # hundreds of produce requests, sent one at a time per broker.
        producer_max_batch_size=512 * 1024,
        table_cleanup_interval=3600.0,
        # Standby replicas made the scale-out hang below worse here (0 of 3 runs passed
        # with 1 standby, 2 of 5 without; tests/integration/test_scale_out.py). With the
        # memory store a taken-over partition replays its changelog either way.
        table_standby_replicas=0,
        broker_session_timeout=settings.session_timeout,  # rejoin after a kill: settings.py
        broker_credentials=faust_credentials(settings),  # SASL / SSL: security.py
        Worker=shutdown.bounded_worker(settings.shutdown_timeout),  # a bounded stop
    )

    def raw_topic(name: str, partitions: int, **options: Any) -> Any:
        # Bytes in, bytes out: decoding is ours (ingest.py), so bad input is data, not a crash.
        return app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=partitions,
            **options,
        )

    topics = Topics(
        clickstream=raw_topic(settings.topic_clickstream, settings.topic_partitions),
        dlq=raw_topic(settings.topic_dlq, settings.topic_partitions),
        training=raw_topic(settings.topic_training, 1),
        model=raw_topic(settings.topic_model, 1, compacting=True),
        decisions=raw_topic(settings.topic_decisions, settings.topic_partitions),
        interventions=raw_topic(settings.topic_interventions, settings.topic_partitions),
        erasure=raw_topic(settings.topic_erasure, settings.topic_partitions),
        erasure_audit=raw_topic(settings.topic_erasure_audit, settings.topic_partitions),
    )
    users: Any = app.tables.add(
        UserTable(
            app,
            name="users",
            beacon=app.tables.beacon,
            key_type=str,
            partitions=settings.topic_partitions,
            options=rocksdb_options(settings) if settings.store.startswith("rocksdb") else None,
        )
    )
    # Writes go through UserState's JSON codec (faust's json cannot encode the object).
    users.value_serializer = "userstate"

    codec = UserStateCodec()
    cache = UserCache(
        users,
        encode=codec._dumps,
        decode=codec._loads,
        partition_of=lambda uid: partition_for(uid.encode(), settings.topic_partitions),
        capacity=settings.state_cache_users,
    )

    engine = build_engine(settings)
    cache.space = users.space = engine.space  # packed users drop vectors made again
    metrics.model_version.set(engine.scorer.version)
    metrics.model_ready.set(1 if engine.scorer.ready else 0)
    model_sync.set_bandit_means(engine, metrics)  # the prior's series before any snapshot
    # Every service is built before any is registered: the registers only attach them.
    deps = build_deps(Base(settings, metrics, engine, users, topics, app, cache))
    score.register(app, deps)
    model_sync.register(app, deps)
    learner.register(app, deps)
    lag.register(app, deps)
    web.register(app, deps)
    app.deps = deps
    return app


def wiring(app: faust.App) -> Deps:
    """The objects create_app wired into ``app`` (for tests and tools)."""
    assert isinstance(app, ChurnApp)
    return app.deps
