"""stream_app.faust_fixes against a real broker. While a rebalance has paused every
partition, Faust's fetch must not take records from aiokafka (an empty partition set means
"all" to aiokafka); and Faust's "seek back to committed offsets" must move a partition that
has no committed offset back to where it starts. Otherwise records handed out during a
rebalance, and dropped by Faust, are never fetched again."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from kafka import KafkaProducer
from mode.utils.queues import FlowControlEvent, FlowControlQueue

from stream_app import faust_fixes


class _Thread:
    """Just what ``AIOKafkaConsumerThread.seek_to_committed`` and ``_fetch_records`` use:
    the consumer, the app's settings and tables, Faust's consumer (flow) and ``call_thread``
    (here: run on the current loop)."""

    def __init__(self, consumer: AIOKafkaConsumer, changelogs: set[str]) -> None:
        self._consumer = consumer
        self.consumer = SimpleNamespace(flow_active=True)
        self.app = SimpleNamespace(
            conf=SimpleNamespace(consumer_auto_offset_reset="earliest"),
            tables=SimpleNamespace(changelog_topics=changelogs),
        )

    def _ensure_consumer(self) -> AIOKafkaConsumer:
        return self._consumer

    async def call_thread(self, fun: Callable[..., Any], *args: Any) -> Any:
        return await fun(*args)


@pytest.fixture
def patched() -> Iterator[None]:
    faust_fixes.apply()
    yield


async def _consume_without_commit(bootstrap: str, topics: list[str], n: int) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=f"g-{topics[0]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    got = 0
    while got < n:  # what the rebalance-time fetch does: records handed out, none committed
        batches = await consumer.getmany(timeout_ms=1000)
        got += sum(len(v) for v in batches.values())
    return consumer


def _produce(bootstrap: str, topic: str, n: int) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap.split(","))
    for i in range(n):
        producer.send(topic, key=b"k", value=str(i).encode())
    producer.flush(30)
    producer.close()


def test_no_records_while_every_partition_is_paused(
    patched: None, kafka_bootstrap: str, unique: Callable[[str], str]
) -> None:
    topic = unique("fetchfix")
    _produce(kafka_bootstrap, topic, 5)

    async def go() -> tuple[Any, int, Any]:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            group_id=f"g-{topic}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            thread = _Thread(consumer, set())
            tp = TopicPartition(topic, 0)
            paused: set[Any] = set()  # Faust's active set while a rebalance pauses everything
            during = await AIOKafkaConsumerThread._fetch_records(
                thread, consumer, paused, timeout=3
            )  # type: ignore[arg-type]
            position = await consumer.position(tp)
            after = await AIOKafkaConsumerThread._fetch_records(thread, consumer, {tp}, timeout=10)  # type: ignore[arg-type]
            return during, position, after
        finally:
            await consumer.stop()

    during, position, after = asyncio.run(go())
    # without the fix aiokafka returns all 5 records here and moves the position to 5
    assert during == {}
    assert position == 0
    assert sum(len(v) for v in after.values()) == 5


def test_seek_back_rewinds_a_partition_without_committed_offset(
    patched: None, kafka_bootstrap: str, unique: Callable[[str], str]
) -> None:
    stream, changelog = unique("seekfix"), unique("seekfix-changelog")
    _produce(kafka_bootstrap, stream, 5)
    _produce(kafka_bootstrap, changelog, 3)

    async def go() -> tuple[int, int, Any]:
        consumer = await _consume_without_commit(kafka_bootstrap, [stream, changelog], 8)
        try:
            thread = _Thread(consumer, {changelog})
            committed = await AIOKafkaConsumerThread.seek_to_committed(thread)  # type: ignore[arg-type]
            stream_pos = await consumer.position(TopicPartition(stream, 0))
            changelog_pos = await consumer.position(TopicPartition(changelog, 0))
            return stream_pos, changelog_pos, committed
        finally:
            await consumer.stop()

    stream_pos, changelog_pos, committed = asyncio.run(go())
    assert committed[TopicPartition(stream, 0)] is None
    # without the fix aiokafka leaves the position at 5: those 5 records are lost
    assert stream_pos == 0
    assert changelog_pos == 3  # changelogs are recovery's business: left where they were


def test_seek_back_keeps_committed_offsets(
    patched: None, kafka_bootstrap: str, unique: Callable[[str], str]
) -> None:
    stream = unique("seekfix")
    _produce(kafka_bootstrap, stream, 5)

    async def go() -> int:
        consumer = await _consume_without_commit(kafka_bootstrap, [stream], 5)
        try:
            tp = TopicPartition(stream, 0)
            await consumer.commit({tp: 2})
            await AIOKafkaConsumerThread.seek_to_committed(_Thread(consumer, set()))  # type: ignore[arg-type]
            return int(await consumer.position(tp))
        finally:
            await consumer.stop()

    assert asyncio.run(go()) == 2


def test_resuming_an_active_flow_keeps_the_queued_events(patched: None) -> None:
    flow = FlowControlEvent(initially_suspended=True)
    queue: FlowControlQueue[int] = FlowControlQueue(
        maxsize=10, flow_control=flow, clear_on_resume=True
    )
    flow.resume()
    queue.put_nowait(1)  # an event delivered to an agent while the flow is on
    flow.resume()  # Faust's end of recovery: the flow was never suspended
    assert queue.qsize() == 1  # without the fix: cleared, the event is lost
    flow.suspend()
    flow.resume()  # after a real suspension (a rebalance) the queues are still cleared
    assert queue.qsize() == 0


def test_apply_is_idempotent() -> None:
    faust_fixes.apply()
    faust_fixes.apply()
    assert AIOKafkaConsumerThread.seek_to_committed is faust_fixes._seek_to_committed
    assert AIOKafkaConsumerThread._fetch_records is faust_fixes._fetch_records
    assert FlowControlEvent.resume is faust_fixes._resume
