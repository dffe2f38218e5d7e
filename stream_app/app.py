"""create_app(settings) -> faust.App: topics, tables, agents and web views wired here."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import faust
from faust.serializers import codecs

from stream_app.agents.score import ScoreHandler, Send
from stream_app.core.config import EngineConfig
from stream_app.core.engine import Engine
from stream_app.core.features import UserState
from stream_app.ingest import Decoder
from stream_app.metrics import CONTENT_TYPE, Metrics
from stream_app.settings import Settings

log = logging.getLogger(__name__)

_WIRING = "_churn_wiring"


@dataclass(frozen=True)
class Wiring:
    settings: Settings
    metrics: Metrics
    engine: Engine
    handler: ScoreHandler
    users: Any
    topics: dict[str, Any]
    score_agent: Any


class UserStateCodec(codecs.Codec):
    """Table values as JSON (never pickle): the changelog is readable and safe to load."""

    def _dumps(self, obj: Any) -> bytes:
        return json.dumps(obj.to_dict(), separators=(",", ":")).encode()

    def _loads(self, s: bytes) -> Any:
        return UserState.from_dict(json.loads(s))


codecs.register("userstate", UserStateCodec())


class UserTable(faust.Table):  # type: ignore[type-arg]
    """The users table. Faust builds a table's changelog topic with a codec derived from
    value_type (a Record, else json) before we can set ours, so changelog messages come
    back from recovery as plain JSON dicts: turn them back into UserState here."""

    def _to_value(self, v: Any) -> Any:
        return UserState.from_dict(v) if isinstance(v, dict) else v


def create_app(settings: Settings, metrics: Metrics | None = None) -> faust.App:
    metrics = metrics or Metrics()
    app = faust.App(
        settings.app_id,
        broker=settings.bootstrap_url,
        store=settings.store,
        datadir=settings.data_dir,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_enabled=True,
        # exactly_once has open duplicate/crash bugs in faust-streaming 0.15: at-least-once
        # plus dedup by event_id keeps state exact.
        processing_guarantee="at_least_once",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        table_cleanup_interval=3600.0,
        # Standby replicas made the scale-out hang below worse here (0 of 3 runs passed
        # with 1 standby, 2 of 5 without; tests/integration/test_scale_out.py). With the
        # memory store a taken-over partition replays its changelog either way.
        table_standby_replicas=0,
    )

    def raw_topic(name: str, partitions: int) -> Any:
        # Bytes in, bytes out: decoding is ours (ingest.py), so bad input is data, not a crash.
        return app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=partitions,
        )

    clickstream = raw_topic(settings.topic_clickstream, settings.topic_partitions)
    dlq = raw_topic(settings.topic_dlq, settings.topic_partitions)
    training = raw_topic(settings.topic_training, 1)
    users: Any = app.tables.add(
        UserTable(
            app,
            name="users",
            beacon=app.tables.beacon,
            key_type=str,
            partitions=settings.topic_partitions,
        )
    )
    # Writes go through UserState's JSON codec (faust's json cannot encode the object).
    users.value_serializer = "userstate"

    engine = Engine(EngineConfig.from_settings(settings))
    decoder = Decoder.from_settings(settings)
    handler = ScoreHandler(
        engine,
        decoder,
        metrics,
        settings.topic_partitions,
        settings.topic_clickstream,
        settings.dlq_payload_bytes,
    )
    topics = {"dlq": dlq, "clickstream": clickstream, "training": training}
    metrics.model_version.set(engine.scorer.version)
    metrics.model_ready.set(1 if engine.scorer.ready else 0)

    async def send(out: Send) -> None:
        await topics[out.topic].send(key=out.key, value=out.value, partition=out.partition)

    # concurrency stays 1: >1 can commit offsets past unprocessed messages.
    @app.agent(clickstream, name="score", concurrency=1)
    async def score(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            t0 = time.perf_counter()
            try:
                outcome = handler.handle(users, msg.partition, msg.offset, msg.key, msg.value)
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
            metrics.process_seconds.observe(time.perf_counter() - t0)

    async def _assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        handler.reset_clocks()

    app.on_partitions_assigned.connect(_assigned)

    @app.page("/metrics")
    async def metrics_view(web: Any, request: Any) -> Any:
        return web.bytes(metrics.render(), content_type=CONTENT_TYPE.split(";")[0])

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        return web.json(
            {
                "status": "ok",
                "model_version": engine.scorer.version,
                "model_ready": engine.scorer.ready,
                # clickstream partitions this worker owns (empty until the group assigns)
                "partitions": sorted(
                    tp.partition
                    for tp in app.assignor.assigned_actives()
                    if tp.topic == settings.topic_clickstream
                ),
            }
        )

    setattr(app, _WIRING, Wiring(settings, metrics, engine, handler, users, topics, score))  # noqa: B010
    return app


def wiring(app: faust.App) -> Wiring:
    """The objects create_app wired into ``app`` (for tests and tools)."""
    w: Wiring = getattr(app, _WIRING)
    return w
