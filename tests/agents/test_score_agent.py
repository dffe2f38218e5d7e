"""The score service without a broker: what it sends where, and when offsets are released.

Batches are built as the batch consumer (runtime/batches.py) builds them; the producer's
``send`` is patched to record every send and to return a delivery future the test
controls (acknowledged at once unless a test holds it back).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple
from unittest.mock import patch

import faust
import pytest
from faust.transport.drivers.aiokafka import Producer as AIOKafkaProducer
from faust.types import TP

from stream_app.agents.erasure import ErasureHandler
from stream_app.app import create_app, wiring
from stream_app.core import compact
from stream_app.kafka.send import partition_for
from stream_app.runtime.batches import Batch
from stream_app.settings import load_settings

PARTITIONS = 8


def user_on(partition: int, start: int = 0) -> str:
    return next(
        f"u{i}"
        for i in range(start, 10_000)
        if partition_for(f"u{i}".encode(), PARTITIONS) == partition
    )


def event(user: str, ts: str, etype: str = "page_view", eid: str | None = None, **kw: Any) -> bytes:
    return json.dumps(
        {"event_id": eid or f"{user}-{ts}", "user_id": user, "event_type": etype, "ts": ts, **kw}
    ).encode()


def memory_app(tmp_path: Path, **settings: Any) -> faust.App:
    """An app on the memory store, finalized and flowing, without a broker."""
    app = create_app(load_settings(topic_partitions=PARTITIONS, data_dir=str(tmp_path), **settings))
    app.finalize()
    app.conf.store = "memory://"
    app.flow_control.resume()
    return app


@pytest.fixture
def app(tmp_path: Path) -> faust.App:
    return memory_app(tmp_path, horizon="1d", snapshot_interval="1h", allowed_lateness="1h")


class Record(NamedTuple):
    """The fields of an aiokafka ConsumerRecord the service reads."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int = 0


def acked(topic: str, partition: int | None) -> asyncio.Future[Any]:
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    fut.set_result(SimpleNamespace(topic=topic, partition=partition or 0, offset=0))
    return fut


@pytest.fixture
def sent() -> Iterator[list[tuple[str, bytes | None, bytes, int | None]]]:
    calls: list[tuple[str, bytes | None, bytes, int | None]] = []

    async def record(
        self: Any,
        topic: str,
        key: bytes | None,
        value: bytes,
        partition: int | None,
        timestamp: float | None,
        headers: Any,
    ) -> asyncio.Future[Any]:
        if not topic.endswith("-changelog"):
            calls.append((topic, key, value, partition))
        return acked(topic, partition)

    # The service hands its sends straight to the producer (kafka/send.py sender).
    with patch.object(AIOKafkaProducer, "send", new=record):
        yield calls


def batches(
    messages: list[tuple[bytes | None, bytes, int]], topic: str = "clickstream"
) -> list[Batch]:
    """One batch per message, with each partition's offsets counting from 0."""
    offsets: dict[int, int] = {}
    out = []
    for key, value, partition in messages:
        offset = offsets[partition] = offsets.get(partition, -1) + 1
        tp = TP(topic, partition)
        out.append(Batch(tp, [Record(topic, partition, offset, key, value)], generation=0))
    return out


def run(app: faust.App, messages: list[tuple[bytes | None, bytes, int]]) -> None:
    service = wiring(app).score_service

    async def go() -> None:
        service.cache.bind()
        for batch in batches(messages):
            await service.apply(batch)
        await service.committer.flush()

    asyncio.run(go())


def test_valid_event_updates_the_table_and_a_duplicate_does_not(
    app: faust.App, sent: list[Any]
) -> None:
    u = user_on(0)
    raw = event(u, "2026-01-05T12:00:00Z", "purchase", revenue=5.0)
    run(app, [(u.encode(), raw, 0), (u.encode(), raw, 0)])
    w = wiring(app)
    state = w.users.get(u)
    assert state is not None and state.events_total == 1 and state.purchases_total == 1
    assert w.metrics.duplicates._value.get() == 1
    assert sent == []  # nothing to send yet: no dead letter, no label


def test_bad_message_goes_to_the_dlq_with_its_source(app: faust.App, sent: list[Any]) -> None:
    run(app, [(b"k", b"{bad", 0)])
    ((topic, key, value, _),) = sent
    letter = json.loads(value)
    assert topic == "clickstream.dlq" and key == b"k"
    assert letter["reason"] == "invalid_json" and letter["partition"] == 0
    assert letter["source_topic"] == "clickstream" and letter["payload"] == "{bad"


def test_misrouted_event_is_forwarded_not_applied(app: faust.App, sent: list[Any]) -> None:
    u = user_on(3)
    raw = event(u, "2026-01-05T12:00:00Z")
    run(app, [(u.encode(), raw, 0)])  # arrived on partition 0, belongs on 3
    assert sent == [("clickstream", u.encode(), raw, 3)]
    assert wiring(app).users.get(u) is None


def test_label_is_sent_to_the_training_topic(app: faust.App, sent: list[Any]) -> None:
    u, other = user_on(0), user_on(0, start=int(user_on(0)[1:]) + 1)
    run(
        app,
        [
            (u.encode(), event(u, "2026-01-05T12:00:00Z"), 0),
            (other.encode(), event(other, "2026-01-07T12:00:00Z"), 0),  # watermark passes T0 + 1d
        ],
    )
    training = [json.loads(v) for t, _, v, _ in sent if t == "churn.training"]
    mine = [ex for ex in training if ex["user_id"] == u]
    assert mine and mine[0]["label"] == 1
    assert mine[0]["scored_at"].startswith("2026-01-05T12:00:00")
    assert set(mine[0]["features"]) >= {"days_since_last_event", "purchases_7d"}


def test_unknown_fields_are_counted_once_even_when_forwarded(
    app: faust.App, sent: list[Any]
) -> None:
    u = user_on(0)
    raw = event(u, "2026-01-05T12:00:00Z", colour="red")
    run(app, [(b"wrong-key", raw, 0), (u.encode(), raw, 0)])  # forwarded copy arrives back
    w = wiring(app)
    assert w.metrics.rerouted._value.get() == 1
    assert w.metrics.unknown_fields._value.get() == 1
    assert w.users.get(u).events_total == 1


def test_json_nested_ten_thousand_deep_is_a_dead_letter_not_a_crash(
    app: faust.App, sent: list[Any]
) -> None:
    deep = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
    run(app, [(b"k", deep, 0), (b"k2", b"[" * 10_000 + b"]" * 10_000, 1)])
    reasons = [json.loads(v)["reason"] for t, _, v, _ in sent if t == "clickstream.dlq"]
    assert reasons == ["too_deep", "too_deep"]
    assert wiring(app).metrics.invalid.labels("too_deep")._value.get() == 2


def test_a_tombstone_is_its_own_dead_letter_not_invalid_json(
    app: faust.App, sent: list[Any]
) -> None:
    run(app, [(b"k", None, 0), (b"k2", b"", 0)])  # type: ignore[list-item]
    reasons = [json.loads(v)["reason"] for t, _, v, _ in sent if t == "clickstream.dlq"]
    assert reasons == ["tombstone", "invalid_json"]


def test_state_is_written_once_per_user_per_flush_and_offsets_released_only_after(
    app: faust.App,
) -> None:
    """Write-back: three events of one user and one of another make two changelog writes
    at the flush, and no offset is released before the broker acknowledged them."""
    writes: list[tuple[str, bytes | None, bytes | None, int | None]] = []
    held: list[asyncio.Future[Any]] = []

    async def record(self: Any, topic: str, key: Any, value: Any, partition: Any, *a: Any) -> Any:
        writes.append((topic, key, value, partition))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        held.append(fut)
        return fut

    u, v = user_on(0), user_on(2)
    msgs = [
        (u.encode(), event(u, "2026-01-05T12:00:00Z"), 0),
        (u.encode(), event(u, "2026-01-05T12:01:00Z"), 0),
        (v.encode(), event(v, "2026-01-05T12:01:30Z"), 2),
        (u.encode(), event(u, "2026-01-05T12:02:00Z", "purchase", revenue=3.0), 0),
    ]
    w = wiring(app)
    service = w.score_service
    committer = service.committer
    consumer = app.consumer

    async def go() -> None:
        service.cache.bind()
        pending = batches(msgs)
        for batch in pending:
            consumer._unacked_messages.add(batch)
            await service.apply(batch)
        assert not any(b.acked for b in pending)
        assert [t for t, *_ in writes if t.endswith("-changelog")] == []
        flush = asyncio.ensure_future(committer.flush())
        await asyncio.sleep(0.05)
        # The changelog writes are out, but unconfirmed: nothing is committable yet.
        assert len([t for t, *_ in writes if t.endswith("-changelog")]) == 2
        assert not flush.done() and not any(b.acked for b in pending)
        assert consumer._acked.get(TP("clickstream", 0), []) == []
        for fut in held:
            fut.set_result(SimpleNamespace(topic="t", partition=0, offset=0))
        await flush
        assert all(b.acked for b in pending) and committer.batches == []
        assert sorted(consumer._acked[TP("clickstream", 0)]) == [0, 1, 2]
        assert consumer._acked[TP("clickstream", 2)] == [0]
        assert not consumer._unacked_messages

    with patch.object(AIOKafkaProducer, "send", new=record):
        asyncio.run(go())
    changelog = [(k, val, p) for t, k, val, p in writes if t.endswith("-changelog")]
    assert sorted((k, p) for k, _, p in changelog) == sorted(
        [(json.dumps(u).encode(), 0), (json.dumps(v).encode(), 2)]
    )
    state_u = json.loads(next(val for k, val, _ in changelog if k == json.dumps(u).encode()))
    assert state_u["et"] == 3 and state_u["pt"] == 1  # the state after all three events
    assert w.metrics.state_writes._value.get() == 2


def test_a_refused_write_releases_no_offset_and_stops_flushing(app: faust.App) -> None:
    """A send the broker refuses (here: a record too large) fails the flush with
    WriteFailed; the batch is released without its offsets, so Faust can neither commit
    past it nor wait for it forever, and every later flush refuses too."""
    from aiokafka.errors import MessageSizeTooLargeError

    from stream_app.runtime.committer import WriteFailed

    async def refuse(self: Any, topic: str, key: Any, value: Any, partition: Any, *a: Any) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if topic.endswith("-changelog"):
            fut.set_exception(MessageSizeTooLargeError())
        else:
            fut.set_result(SimpleNamespace(topic=topic, partition=0, offset=0))
        return fut

    u = user_on(0)
    service = wiring(app).score_service
    consumer = app.consumer

    async def go() -> None:
        service.cache.bind()
        (batch,) = batches([(u.encode(), event(u, "2026-01-05T12:00:00Z"), 0)])
        consumer._unacked_messages.add(batch)
        await service.apply(batch)
        with pytest.raises(WriteFailed, match="MessageSizeTooLargeError"):
            await service.committer.flush()
        assert batch.acked and not consumer._unacked_messages  # wait_empty can end
        assert consumer._acked.get(TP("clickstream", 0), []) == []  # nothing committable
        with pytest.raises(WriteFailed):
            await service.committer.flush()

    with patch.object(AIOKafkaProducer, "send", new=refuse):
        asyncio.run(go())
    assert wiring(app).metrics.write_failures._value.get() == 1


def erasure_request(user: str, **kw: Any) -> bytes:
    return json.dumps(
        {
            "request_id": "r-1",
            "user_id": user,
            "requested_at": "2026-02-01T00:00:00Z",
            **kw,
        }
    ).encode()


def test_an_erasure_removes_the_user_and_returns_its_audit(app: faust.App) -> None:
    w = wiring(app)
    handler = w.score
    u = user_on(1)
    store: dict[str, Any] = {}
    handler.handle(store, 1, 0, u.encode(), event(u, "2026-01-05T12:00:00Z"))
    assert u in store
    erasures = ErasureHandler(handler, "user.erasure")
    out = erasures.erase(store, 1, 7, u.encode(), erasure_request(u))
    # What stays is the erasure marker: no events, no features, no open examples.
    marker = store[u]
    assert out.status == "erased" and "erased" in marker.extra
    assert marker.events_total == 0 and marker.pending == [] and set(marker.extra) == {"erased"}
    ((send,),) = [out.sends]
    audit = json.loads(send.value)
    assert send.topic == "erasure_audit" and send.key == u.encode()
    assert audit["found"] is True and audit["offset"] == 7 and audit["partition"] == 1
    assert "user_state" in audit["erased"] and "model_weights" in audit["not_erased"]
    again = erasures.erase(store, 1, 8, u.encode(), erasure_request(u))
    assert json.loads(again.sends[0].value)["found"] is False  # idempotent
    assert w.metrics.erasures.labels("found")._value.get() == 1


def ms(ts: str) -> int:
    return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)


def test_an_erased_users_older_events_are_dropped_and_later_ones_start_a_new_user(
    app: faust.App,
) -> None:
    """Kafka orders no two topics: events the user sent before the erasure can be read
    after it. The marker drops those (below the clickstream's high watermark when the
    erasure was applied, or written before the request) and lets later ones start anew."""
    w = wiring(app)
    handler = w.score
    u = user_on(1)
    store: dict[str, Any] = {}
    erasures = ErasureHandler(handler, "user.erasure", highwater=lambda partition: 40)
    erasures.erase(store, 1, 0, u.encode(), erasure_request(u))  # requested 2026-02-01
    backlog = [
        (30, event(u, "2026-01-10T00:00:00Z"), ms("2026-01-31T23:00:00Z")),  # below the mark
        (41, event(u, "2026-01-11T00:00:00Z"), ms("2026-01-31T23:30:00Z")),  # sent before
    ]
    for offset, raw, created in backlog:
        out = handler.handle(store, 1, offset, u.encode(), raw, created)
        assert out.status == "erased"
    assert store[u].events_total == 0
    assert w.metrics.erased_events._value.get() == 2
    later = handler.handle(
        store, 1, 42, u.encode(), event(u, "2026-02-02T00:00:00Z"), ms("2026-02-02T00:00:01Z")
    )
    assert later.status == "applied"
    assert store[u].events_total == 1 and "erased" not in store[u].extra


def test_an_expired_marker_drops_nothing_and_is_swept_at_assignment(app: faust.App) -> None:
    w = wiring(app)
    handler = w.score
    u, v = user_on(1), user_on(1, start=int(user_on(1)[1:]) + 1)
    now = [1_770_000_000.0]
    handler.wall_clock = lambda: now[0]
    store: dict[str, Any] = {}
    erasures = ErasureHandler(handler, "user.erasure", highwater=lambda partition: 100)
    erasures.erase(store, 1, 0, u.encode(), erasure_request(u))
    erasures.erase(store, 1, 1, v.encode(), erasure_request(v))
    now[0] += handler.marker_ttl + 1
    out = handler.handle(store, 1, 5, u.encode(), event(u, "2026-01-10T00:00:00Z"), 1)
    assert out.status == "applied" and store[u].events_total == 1
    handler.reset_clocks()
    handler.clock_for(store, 1)  # a partition assignment rebuilds: expired markers go
    assert v not in store and u in store


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "tombstone"),
        (b"{nope", "invalid_json"),
        (b"[1]", "not_an_object"),
        (json.dumps({"request_id": "r"}).encode(), "missing_field"),
        (erasure_request("u\x01x"), "invalid_field"),
        (erasure_request("u1", colour="red"), "invalid_field"),
        (b'{"a":' * 10_000 + b"1" + b"}" * 10_000, "invalid_json"),
    ],
)
def test_a_bad_erasure_request_is_a_dead_letter_naming_the_problem(
    app: faust.App, value: bytes | None, reason: str
) -> None:
    handler = wiring(app).score
    out = ErasureHandler(handler, "user.erasure").erase({}, 0, 3, b"k", value)
    assert out.status == "invalid"
    letter = json.loads(out.sends[0].value)
    assert out.sends[0].topic == "dlq"
    assert letter["reason"] == reason and letter["source_topic"] == "user.erasure"


def test_a_misrouted_erasure_is_forwarded_to_its_users_partition(app: faust.App) -> None:
    handler = wiring(app).score
    u = user_on(5)
    out = ErasureHandler(handler, "user.erasure").erase({}, 0, 3, u.encode(), erasure_request(u))
    assert out.status == "rerouted" and out.sends[0].partition == 5
    assert out.sends[0].topic == "erasure"


def test_a_quiet_partition_advances_its_stream_time_and_fires_silence_deadlines(
    app: faust.App,
) -> None:
    """STREAM_APP_IDLE_ADVANCE: with no event to move the stream time, a user's silence
    deadline fires once the wall-clock-based stream time passes it, and not before."""
    w = wiring(app)
    handler = w.score
    u = user_on(4)
    store: dict[str, Any] = {}
    handler.handle(store, 4, 0, u.encode(), event(u, "2026-01-05T12:00:00Z"))
    t0 = datetime.fromisoformat("2026-01-05T12:00:00+00:00").timestamp()
    assert handler.advance_idle(store, 4, t0 + 3600) == []  # no deadline passed yet
    handler.advance_idle(store, 4, t0 + 2 * 86400)  # the 1-day rescore deadline (+ lateness)
    assert w.metrics.scores.labels("silence")._value.get() >= 1
    assert handler.clocks[4].stream_time == t0 + 2 * 86400
    assert handler.advance_idle(store, 4, t0) == []  # never backwards
    assert handler.clocks[4].stream_time == t0 + 2 * 86400


def test_dead_letters_are_logged_once_per_reason_then_summed_up(
    app: faust.App, caplog: pytest.LogCaptureFixture
) -> None:
    """One WARNING per new reason (with topic, partition, offset), then one summary line
    per interval for the rest; the counter and the dead-letter topic keep every letter."""
    handler = wiring(app).score
    now = [1_770_000_000.0]
    handler.wall_clock = lambda: now[0]
    store: dict[str, Any] = {}
    letters = []
    with caplog.at_level(logging.WARNING, logger="stream_app.agents.score"):
        for offset in range(40):
            letters += handler.handle(store, 0, offset, b"k", b"{bad").sends
        letters += handler.handle(store, 0, 40, b"k", b"[1]").sends
        now[0] += 11
        handler.letters.flush(now[0])
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert lines[0].startswith("dead letter invalid_json") and "offset=0" in lines[0]
    assert lines[1].startswith("dead letter not_an_object")
    assert lines[2].startswith("dead letters in the last 11 s: invalid_json 39")
    assert wiring(app).metrics.invalid.labels("invalid_json")._value.get() == 40
    assert [out.topic for out in letters] == ["dlq"] * 41


def test_memory_store_packs_users_at_rest_and_unpacks_them_when_touched(
    tmp_path: Path, sent: list[Any]
) -> None:
    """memory:// beyond STREAM_APP_STATE_CACHE_USERS: after a flush, users not changed since
    are kept as compact bytes; the next event or lookup turns one back into an object
    with nothing lost."""
    app = memory_app(tmp_path, state_cache_users=1)
    u, v = user_on(0), user_on(2)
    run(app, [(u.encode(), event(u, "2026-01-05T12:00:00Z"), 0)])
    run(app, [(v.encode(), event(v, "2026-01-05T12:00:30Z", "purchase", revenue=2.0), 2)])
    cache = wiring(app).cache
    assert cache is not None
    data = cache.table.data.data
    # u was flushed and untouched since: packed; v was flushed by this last flush while
    # still counted hot, and both are clean now, so both are bytes.
    assert isinstance(data[u], bytes) and isinstance(data[v], bytes)
    assert cache.lookup(v).purchases_total == 1  # a read leaves it packed
    assert isinstance(data[v], bytes)
    # (offsets count from 0 in each run: the first record is a redelivery of offset 0)
    again = event(u, "2026-01-05T12:00:00Z")
    run(app, [(u.encode(), again, 0), (u.encode(), event(u, "2026-01-05T12:10:00Z"), 0)])
    assert isinstance(data[v], bytes)
    state = cache.lookup(u)
    assert state.events_total == 2 and state.offset == 1
    assert wiring(app).metrics.duplicates._value.get() == 1
    assert cache.users_in(2)[v].purchases_total == 1
    # A partition's deadline rebuild reads its packed users one at a time, and leaves
    # them packed
    handler = wiring(app).score
    handler.reset_clocks()
    clock = handler.clock_for(cache, 2)
    assert len(clock) == 1 and isinstance(data[v], bytes)
    # ... and packs back a deadline the rebuild changed (here: one stored stale)
    due = cache.lookup(v).due
    stale = cache.lookup(v)
    stale.due = float("inf")
    data[v] = compact.pack(stale, cache.space)
    handler.reset_clocks()
    handler.clock_for(cache, 2)
    assert isinstance(data[v], bytes) and cache.lookup(v).due == due < float("inf")


def test_packing_is_spread_over_flushes(
    tmp_path: Path, sent: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """At most PACK_PER_FLUSH users are packed a flush (packing runs on the score loop):
    the rest stay objects until the next flushes."""
    from stream_app.runtime import user_cache

    monkeypatch.setattr(user_cache, "PACK_PER_FLUSH", 1)
    app = memory_app(tmp_path, state_cache_users=0)
    u, v = user_on(0), user_on(2)
    run(
        app,
        [
            (u.encode(), event(u, "2026-01-05T12:00:00Z"), 0),
            (v.encode(), event(v, "2026-01-05T12:00:30Z"), 2),
        ],
    )
    cache = wiring(app).cache
    data = cache.table.data.data
    # the flush that wrote them packed one of the two (both clean once written), not both
    assert sum(isinstance(data[x], bytes) for x in (u, v)) == 1
    cache._pack_clean()  # what the next flush does once its writes are confirmed
    assert isinstance(data[u], bytes) and isinstance(data[v], bytes)
