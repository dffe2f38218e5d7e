"""The Faust score agent in Faust's test context (no broker): what it sends where.

``Topic.send`` is not stubbed by ``test_context()``, so it is patched to record the target
topic of every send.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest.mock import patch

import faust
import pytest
from faust.transport.drivers.aiokafka import Producer as AIOKafkaProducer

from stream_app.agents.score import partition_for
from stream_app.app import create_app, wiring
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


@pytest.fixture
def app(tmp_path: Path) -> faust.App:
    settings = load_settings(
        topic_partitions=PARTITIONS,
        data_dir=str(tmp_path),
        horizon="1d",
        snapshot_interval="1h",
        allowed_lateness="1h",
    )
    app = create_app(settings)
    app.finalize()
    app.conf.store = "memory://"
    app.flow_control.resume()
    return app


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
    ) -> asyncio.Future[None]:
        if not topic.endswith("-changelog"):
            calls.append((topic, key, value, partition))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        return fut

    # The score agent hands its sends straight to the producer (agents/score.py sender).
    with patch.object(AIOKafkaProducer, "send", new=record):
        yield calls


def run(app: faust.App, messages: list[tuple[bytes | None, bytes, int]]) -> None:
    async def go() -> None:
        async with wiring(app).score_agent.test_context() as agent:
            for key, value, partition in messages:
                await agent.put(key=key, value=value, partition=partition)

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


def test_state_is_written_once_per_user_per_flush_and_acked_only_after(app: faust.App) -> None:
    """Write-back: three events of one user and one of another make two changelog writes
    at the flush, and no message is acked before it (agents/score.py Committer)."""
    writes: list[tuple[str, bytes | None, bytes | None, int | None]] = []

    async def record(self: Any, topic: str, key: Any, value: Any, partition: Any, *a: Any) -> Any:
        writes.append((topic, key, value, partition))
        return asyncio.get_running_loop().create_future()

    u, v = user_on(0), user_on(2)
    msgs = [
        (u.encode(), event(u, "2026-01-05T12:00:00Z"), 0),
        (u.encode(), event(u, "2026-01-05T12:01:00Z"), 0),
        (v.encode(), event(v, "2026-01-05T12:01:30Z"), 2),
        (u.encode(), event(u, "2026-01-05T12:02:00Z", "purchase", revenue=3.0), 0),
    ]
    w = wiring(app)
    committer = w.committer
    assert committer is not None

    async def go() -> None:
        async with w.score_agent.test_context() as agent:
            for key, value, partition in msgs:
                await agent.put(key=key, value=value, partition=partition)
            pending = list(committer.pending)
            assert len(pending) == 4 and not any(e.message.acked for e in pending)
            assert [t for t, *_ in writes if t.endswith("-changelog")] == []
            await committer.flush()
            assert all(e.message.acked for e in pending) and committer.pending == []

    with patch.object(AIOKafkaProducer, "send", new=record):
        asyncio.run(go())
    changelog = [(k, val, p) for t, k, val, p in writes if t.endswith("-changelog")]
    assert sorted((k, p) for k, _, p in changelog) == sorted(
        [(json.dumps(u).encode(), 0), (json.dumps(v).encode(), 2)]
    )
    state_u = json.loads(next(val for k, val, _ in changelog if k == json.dumps(u).encode()))
    assert state_u["et"] == 3 and state_u["pt"] == 1  # the state after all three events
    assert w.metrics.state_writes._value.get() == 2


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
    assert handler is not None
    u = user_on(1)
    store: dict[str, Any] = {}
    handler.handle(store, 1, 0, u.encode(), event(u, "2026-01-05T12:00:00Z"))
    assert u in store
    out = handler.erase(store, 1, 7, u.encode(), erasure_request(u), "user.erasure")
    assert out.status == "erased" and u not in store
    ((send,),) = [out.sends]
    audit = json.loads(send.value)
    assert send.topic == "erasure_audit" and send.key == u.encode()
    assert audit["found"] is True and audit["offset"] == 7 and audit["partition"] == 1
    assert "user_state" in audit["erased"] and "model_weights" in audit["not_erased"]
    again = handler.erase(store, 1, 8, u.encode(), erasure_request(u), "user.erasure")
    assert json.loads(again.sends[0].value)["found"] is False  # idempotent
    assert w.metrics.erasures.labels("found")._value.get() == 1


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
    assert handler is not None
    out = handler.erase({}, 0, 3, b"k", value, "user.erasure")
    assert out.status == "invalid"
    letter = json.loads(out.sends[0].value)
    assert out.sends[0].topic == "dlq"
    assert letter["reason"] == reason and letter["source_topic"] == "user.erasure"


def test_a_misrouted_erasure_is_forwarded_to_its_users_partition(app: faust.App) -> None:
    handler = wiring(app).score
    assert handler is not None
    u = user_on(5)
    out = handler.erase({}, 0, 3, u.encode(), erasure_request(u), "user.erasure")
    assert out.status == "rerouted" and out.sends[0].partition == 5
    assert out.sends[0].topic == "erasure"
