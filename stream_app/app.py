"""create_app(settings) -> faust.App: topics, the users table, agents, services and views
put together. Each agent lives in stream_app/agents/, the views in stream_app/web.py."""

from __future__ import annotations

import json
from typing import Any

import faust
from faust.serializers import codecs

from stream_app import faust_fixes, web
from stream_app.agents import lag, learner, model_sync, score
from stream_app.core.engine import Engine
from stream_app.core.features import UserState
from stream_app.metrics import Metrics
from stream_app.settings import Settings
from stream_app.wiring import Deps, Topics


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


class ChurnApp(faust.App):
    """A Faust app that carries what create_app wired (``app.deps``)."""

    deps: Deps


def create_app(settings: Settings, metrics: Metrics | None = None) -> ChurnApp:
    faust_fixes.apply()  # faust-streaming 0.15.3 loses events after a rebalance: see module
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
        table_cleanup_interval=3600.0,
        # Standby replicas made the scale-out hang below worse here (0 of 3 runs passed
        # with 1 standby, 2 of 5 without; tests/integration/test_scale_out.py). With the
        # memory store a taken-over partition replays its changelog either way.
        table_standby_replicas=0,
        broker_session_timeout=settings.session_timeout,  # rejoin after a kill: settings.py
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
    )
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

    engine = Engine.from_settings(settings)
    metrics.model_version.set(engine.scorer.version)
    metrics.model_ready.set(1 if engine.scorer.ready else 0)
    deps = Deps(settings, metrics, engine, users, topics)
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
