"""Create the project's topics with the partition counts the worker expects."""

from __future__ import annotations

import logging

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from stream_app.errors import StreamAppError
from stream_app.security import kafka_python_options
from stream_app.settings import Settings

log = logging.getLogger(__name__)


# The model topic keeps the latest snapshot forever (compaction, one key), however long
# ago it was published: a worker starting a year later still finds it.
COMPACTED = {"cleanup.policy": "compact"}


def topic_specs(settings: Settings) -> dict[str, int]:
    """Topic name -> partitions. The training and model topics have one partition: one
    learner, one ordered history of models."""
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
    }


def topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """Topic configs the project sets at creation (others take the broker's defaults)."""
    return {settings.topic_model: COMPACTED}


def ensure_topics(settings: Settings, timeout_ms: int = 30_000) -> dict[str, int]:
    """Create missing topics; refuse to go on when the clickstream topic exists with another
    partition count (state would be split across the wrong partitions)."""
    specs = topic_specs(settings)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=settings.kafka_bootstrap_servers.split(","),
            request_timeout_ms=timeout_ms,
            client_id=f"{settings.app_id}-admin",
            **kafka_python_options(settings),
        )
    except KafkaError as exc:
        raise StreamAppError(
            f"cannot reach Kafka at {settings.kafka_bootstrap_servers}: {exc}"
        ) from None
    try:
        existing = set(admin.list_topics())
        configs = topic_configs(settings)
        missing = [
            NewTopic(name, parts, settings.topic_replication, topic_configs=configs.get(name, {}))
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
