"""What handlers ask to send, and the senders that hand it to the producer.

A handler returns :class:`Send` values; a sender returns the record's delivery future, which
the committer (runtime/committer.py) awaits before any offset that caused it is committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kafka.partitioner.default import murmur2

if TYPE_CHECKING:
    from stream_app.wiring import Base

Sender = Callable[["Send"], Awaitable["asyncio.Future[Any]"]]
ChangelogSender = Callable[[str, int, bytes | None], Awaitable["asyncio.Future[Any]"]]


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default (murmur2) partitioner picks for ``key``; what Java,
    kafka-python and aiokafka producers do for a keyed message."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True, slots=True)
class Send:
    topic: str  # role in wiring.Topics: dlq, clickstream (re-route), training, model, decisions...
    key: bytes | None
    value: bytes
    partition: int | None = None


def sender(deps: Base) -> Sender:
    """Send one handler output to the topic of its role; returns its delivery future."""
    from stream_app.wiring import Topics

    app, topics = deps.app, deps.topics
    names = {role: topics.by_name(role).get_topic_name() for role in Topics.roles()}

    async def send(out: Send) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = await app.producer.send(
            names[out.topic], out.key, out.value, out.partition, None, None
        )
        return fut

    return send


def changelog_sender(deps: Base) -> ChangelogSender:
    """Write one user's state (or a tombstone) to the users table's changelog partition;
    returns its delivery future."""
    app, table = deps.app, deps.users
    topic = table.changelog_topic.get_topic_name()
    # Keys encoded as the table encodes them (recovery decodes them with the table's codec).
    dumps_key, key_type, key_serializer = (
        app.serializers.dumps_key,
        table.key_type,
        table.key_serializer,
    )

    async def send(user_id: str, partition: int, payload: bytes | None) -> asyncio.Future[Any]:
        key = dumps_key(key_type, user_id, serializer=key_serializer)
        fut: asyncio.Future[Any] = await app.producer.send(
            topic, key, payload, partition, None, None
        )
        return fut

    return send
