"""Create the project's topics with the partition counts the worker expects."""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from stream_app.errors import StreamAppError
from stream_app.kafka.security import check_login, kafka_python_options
from stream_app.settings import Settings

log = logging.getLogger(__name__)


# The model topic keeps the latest snapshot forever (compaction, one key), however long
# ago it was published: a worker starting a year later still finds it.
COMPACTED = {"cleanup.policy": "compact"}

# Names of the topics Faust creates for itself (faust-streaming 0.15.3:
# ``Table._changelog_topic_name`` and ``LeaderAssignor._leader_topic_name``); the unit
# tests check them against an app built by create_app.
USERS_TABLE = "users"


def changelog_topic(settings: Settings) -> str:
    """The users table's changelog, compacted, one partition per clickstream partition."""
    return f"{settings.app_id}-{USERS_TABLE}-changelog"


def leader_topic(settings: Settings) -> str:
    """Faust's leader-election topic (one partition; the member assigned it is leader)."""
    return f"{settings.app_id}-__assignor-__leader"


# How long a client command (erase, replay) waits for a TCP connection to a bootstrap
# server: kafka-python's own bootstrap waits 30 s before it says anything.
CONNECT_TIMEOUT = 5.0


def check_reachable(settings: Settings, timeout: float = CONNECT_TIMEOUT) -> None:
    """Fail fast, naming KAFKA_BOOTSTRAP_SERVERS, when no bootstrap server accepts a TCP
    connection (the usual mistake: the default localhost:9092 while Kafka is elsewhere)."""
    errors = []
    for address in settings.kafka_bootstrap_servers.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
            return
        except OSError as exc:
            errors.append(f"{address.strip()}: {exc.strerror or exc}")
    raise StreamAppError(
        f"cannot reach Kafka at {settings.kafka_bootstrap_servers} ({'; '.join(errors)}): "
        "set KAFKA_BOOTSTRAP_SERVERS to your brokers' host:port"
    )


def internal_topics(settings: Settings) -> set[str]:
    """The topics that belong to one app id (Faust's changelog and leader topics): only
    the worker and `stream-app topics` create them, never a client command."""
    return {changelog_topic(settings), leader_topic(settings)}


def topic_specs(settings: Settings) -> dict[str, int]:
    """Topic name -> partitions, Faust's own topics included. The training and model topics
    have one partition: one learner, one ordered history of models."""
    n = settings.topic_partitions
    return {
        settings.topic_clickstream: n,
        settings.topic_dlq: n,
        settings.topic_training: 1,
        settings.topic_model: 1,
        settings.topic_decisions: n,
        settings.topic_interventions: n,
        settings.topic_erasure: n,
        settings.topic_erasure_audit: n,
        changelog_topic(settings): n,
        leader_topic(settings): 1,
    }


def topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """Topic name -> the configs the project sets at creation (others take the broker's
    defaults). Faust would create its changelog and leader topics without
    ``min.insync.replicas`` (it passes no config for the leader topic), so
    :func:`ensure_topics` creates them first, with the same partitions and cleanup policy
    Faust would give them, and Faust finds them in place."""
    common: dict[str, str] = {}
    if settings.topic_min_insync_replicas is not None:
        common["min.insync.replicas"] = str(settings.topic_min_insync_replicas)
    configs = {name: dict(common) for name in topic_specs(settings)}
    for compacted in (settings.topic_model, changelog_topic(settings)):
        configs[compacted].update(COMPACTED)
    return configs


def ensure_topics(
    settings: Settings, timeout_ms: int = 30_000, *, internal: bool = True
) -> dict[str, int]:
    """Create missing topics (existing ones keep their configs: change those with
    ``kafka-configs --alter``); refuse to go on when the clickstream topic exists with
    another partition count (state would be split across the wrong partitions).
    ``internal=False`` (client commands) leaves out the app id's own topics: a client with
    a wrong STREAM_APP_APP_ID must not create internal topics of an app that does not
    exist."""
    specs = topic_specs(settings)
    check_login(settings)  # a refused SASL login: one clear line now, not a timeout later
    if not internal:
        specs = {k: v for k, v in specs.items() if k not in internal_topics(settings)}
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=settings.kafka_bootstrap_servers.split(","),
            request_timeout_ms=timeout_ms,
            client_id=f"{settings.app_id}-admin",
            **kafka_python_options(settings),
        )
    except KafkaError as exc:
        raise StreamAppError(
            f"cannot reach Kafka at {settings.kafka_bootstrap_servers} "
            f"(KAFKA_BOOTSTRAP_SERVERS): {exc}"
        ) from None
    try:
        existing = set(admin.list_topics())
        configs = topic_configs(settings)
        missing = [
            NewTopic(name, parts, settings.topic_replication, topic_configs=configs[name])
            for name, parts in specs.items()
            if name not in existing
        ]
        for topic in missing:
            try:
                admin.create_topics([topic], timeout_ms=timeout_ms)
                log.info("created topic %s (%d partitions)", topic.name, topic.num_partitions)
            except TopicAlreadyExistsError:
                pass
        described = {t["name"]: len(t["partitions"]) for t in admin.describe_topics(list(specs))}
    finally:
        admin.close()
    actual = described.get(settings.topic_clickstream)
    if actual is not None and actual != specs[settings.topic_clickstream]:
        raise StreamAppError(
            f"topic {settings.topic_clickstream} has {actual} partitions but "
            f"STREAM_APP_TOPIC_PARTITIONS={settings.topic_partitions}; set them equal"
        )
    return described


def read_to_end(
    bootstrap: str, topic: str, timeout: float = 30.0, settings: Settings | None = None
) -> list[Any]:
    """Every record of ``topic`` (all partitions, from the start) up to its end offsets at
    the time of the call; StreamAppError when that takes longer than ``timeout``. For
    tools, the benchmark and tests that inspect what the worker wrote; ``settings`` adds
    their Kafka security options (plaintext without)."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap.split(","),
        enable_auto_commit=False,
        group_id=None,
        check_crcs=False,  # kafka-python's crc32c is pure Python: minutes for 100k messages
        max_partition_fetch_bytes=8 << 20,
        **(kafka_python_options(settings) if settings is not None else {}),
    )
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise StreamAppError(f"timed out reading {topic} to its end")
            for msgs in consumer.poll(timeout_ms=500).values():
                out.extend(msgs)
        return out
    finally:
        consumer.close()
