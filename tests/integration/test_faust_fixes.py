"""stream_app.runtime.faust_fixes against a real broker. While a rebalance has paused every
partition, Faust's fetch must not take records from aiokafka (an empty partition set means
"all" to aiokafka); and Faust's "seek back to committed offsets" must move a partition that
has no committed offset back to where it starts. Otherwise records handed out during a
rebalance, and dropped by Faust, are never fetched again.

Each fix is tested twice: with the patches applied (the right behaviour) and after
``faust_fixes.remove()`` (the defect, asserted exactly). The second test is the automated
proof that each patch is still needed on the pinned versions: if an upgrade fixes a defect
upstream, it fails and says so."""

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

from stream_app.runtime import faust_fixes


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


@pytest.fixture
def unpatched() -> Iterator[None]:
    """Faust as released: the patches removed for one test, then put back."""
    faust_fixes.remove()
    try:
        yield
    finally:
        faust_fixes.apply()


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


def _fetch_while_paused(bootstrap: str, topic: str) -> tuple[Any, int, Any]:
    """What Faust's fetch returns while a rebalance has paused every partition, the
    partition's position after it, and what a fetch returns once it is active again."""
    _produce(bootstrap, topic, 5)

    async def go() -> tuple[Any, int, Any]:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
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
            after = await AIOKafkaConsumerThread._fetch_records(thread, consumer, {tp}, timeout=5)  # type: ignore[arg-type]
            return during, position, after
        finally:
            await consumer.stop()

    return asyncio.run(go())


def test_no_records_while_every_partition_is_paused(
    patched: None, kafka_bootstrap: str, unique: Callable[[str], str]
) -> None:
    during, position, after = _fetch_while_paused(kafka_bootstrap, unique("fetchfix"))
    assert during == {}
    assert position == 0
    assert sum(len(v) for v in after.values()) == 5


def test_without_fix_1_a_paused_fetch_hands_out_every_record(
    unpatched: None, kafka_bootstrap: str, unique: Callable[[str], str]
) -> None:
    during, position, after = _fetch_while_paused(kafka_bootstrap, unique("fetchbug"))
    # aiokafka reads the empty set as "all": the 5 records go out while paused and the
    # position moves past them; Faust drops them, and nothing is left to fetch
    assert sum(len(v) for v in during.values()) == 5
    assert position == 5
    assert after == {}


def _seek_back(bootstrap: str, stream: str, changelog: str) -> tuple[int, int, Any]:
    """Faust's "seek back to committed offsets" after 5 stream and 3 changelog records
    were handed out and none committed: the two positions after it, and what it returned."""
    _produce(bootstrap, stream, 5)
    _produce(bootstrap, changelog, 3)

    async def go() -> tuple[int, int, Any]:
        consumer = await _consume_without_commit(bootstrap, [stream, changelog], 8)
        try:
            thread = _Thread(consumer, {changelog})
            committed = await AIOKafkaConsumerThread.seek_to_committed(thread)  # type: ignore[arg-type]
            stream_pos = await consumer.position(TopicPartition(stream, 0))
            changelog_pos = await consumer.position(TopicPartition(changelog, 0))
            return stream_pos, changelog_pos, committed
        finally:
            await consumer.stop()

    return asyncio.run(go())


def test_seek_back_rewinds_a_partition_without_committed_offset(
    patched: None, kafka_bootstrap: str, unique: Callable[[str], str]
) -> None:
    stream, changelog = unique("seekfix"), unique("seekfix-changelog")
    stream_pos, changelog_pos, committed = _seek_back(kafka_bootstrap, stream, changelog)
    assert committed[TopicPartition(stream, 0)] is None
    assert stream_pos == 0
    assert changelog_pos == 3  # changelogs are recovery's business: left where they were


def test_without_fix_2_seek_back_leaves_an_uncommitted_partition_past_its_records(
    unpatched: None, kafka_bootstrap: str, unique: Callable[[str], str]
) -> None:
    stream, changelog = unique("seekbug"), unique("seekbug-changelog")
    stream_pos, changelog_pos, committed = _seek_back(kafka_bootstrap, stream, changelog)
    assert committed[TopicPartition(stream, 0)] is None
    assert stream_pos == 5  # the 5 records handed out and dropped are never fetched again
    assert changelog_pos == 3


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


def _queued_after_resumes() -> tuple[int, int]:
    """Events left in an agent's queue after Faust's end-of-recovery resume of a flow that
    is on, and after a resume that follows a real suspension."""
    flow = FlowControlEvent(initially_suspended=True)
    queue: FlowControlQueue[int] = FlowControlQueue(
        maxsize=10, flow_control=flow, clear_on_resume=True
    )
    flow.resume()
    queue.put_nowait(1)  # an event delivered to an agent while the flow is on
    flow.resume()  # Faust's end of recovery: the flow was never suspended
    kept = queue.qsize()
    flow.suspend()
    flow.resume()  # after a real suspension (a rebalance) the queues are cleared
    return kept, queue.qsize()


def test_resuming_an_active_flow_keeps_the_queued_events(patched: None) -> None:
    assert _queued_after_resumes() == (1, 0)


def test_without_fix_3_resuming_an_active_flow_drops_the_queued_event(unpatched: None) -> None:
    assert _queued_after_resumes() == (0, 0)


def test_apply_is_idempotent() -> None:
    faust_fixes.apply()
    faust_fixes.apply()
    assert AIOKafkaConsumerThread.seek_to_committed is faust_fixes._seek_to_committed
    assert AIOKafkaConsumerThread._fetch_records is faust_fixes._fetch_records
    assert FlowControlEvent.resume is faust_fixes._resume


def test_remove_restores_faust_as_released() -> None:
    faust_fixes.remove()
    try:
        assert AIOKafkaConsumerThread.seek_to_committed is faust_fixes._original_seek_to_committed
        assert AIOKafkaConsumerThread._fetch_records is faust_fixes._original_fetch_records
        assert FlowControlEvent.resume is faust_fixes._original_resume
    finally:
        faust_fixes.apply()
