"""Kafka clients the worker creates beside Faust's own (learner, model sync)."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer

from stream_app.kafka.security import aiokafka_options
from stream_app.settings import Settings


def consumer(settings: Settings, *topics: str, **options: Any) -> AIOKafkaConsumer:
    """An aiokafka consumer on the configured brokers; ``options`` as aiokafka takes them."""
    base: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers.split(","),
        "client_id": f"{settings.app_id}-{options.get('group_id') or 'reader'}",
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        **aiokafka_options(settings),
    }
    base.update(options)
    return AIOKafkaConsumer(*topics, **base)
