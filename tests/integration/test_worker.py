"""The worker against a real broker: events processed, bad input in the dead-letter topic with
its reason, duplicates skipped, misrouted events forwarded and applied once."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kafka import KafkaProducer

from stream_app.kafka.producer import ChurnProducer, InvalidEvent
from tests.integration.conftest import Worker, consume_all, wait_for

NOW = datetime.now(tz=UTC).replace(microsecond=0)


def event(user: str, minutes_ago: float, etype: str = "page_view", **kw: Any) -> dict[str, Any]:
    ts = (NOW - timedelta(minutes=minutes_ago)).isoformat().replace("+00:00", "Z")
    return {"event_id": uuid.uuid4().hex, "user_id": user, "event_type": etype, "ts": ts, **kw}


@pytest.fixture(scope="module")
def worker(start_worker: Callable[..., Worker]) -> Worker:
    return start_worker()


def total_events(worker: Worker) -> float:
    return worker.metric("churn_events_total")


def test_worker_processes_valid_events(worker: Worker, kafka_bootstrap: str) -> None:
    before = total_events(worker)
    with ChurnProducer(kafka_bootstrap, worker.env["STREAM_APP_TOPIC_CLICKSTREAM"]) as prod:
        for i in range(30):
            prod.send(
                event(
                    f"user-{i % 6}",
                    60 - i,
                    "purchase" if i % 10 == 0 else "page_view",
                    **({"revenue": 10.0} if i % 10 == 0 else {}),
                )
            )
    wait_for(lambda: total_events(worker) - before >= 30, 60, "30 events applied")
    assert total_events(worker) - before == 30
    assert worker.metric("churn_events_total", event_type="purchase") >= 3
    assert worker.metric("churn_scores_total") >= 6  # every new user is scored once at least


def test_producer_helper_refuses_bad_events_before_sending(kafka_bootstrap: str) -> None:
    with ChurnProducer(kafka_bootstrap, "never-used") as prod, pytest.raises(InvalidEvent) as err:
        prod.send(event("u", 1, "purchase"))  # no revenue
    assert err.value.reason == "missing_field" and err.value.field == "revenue"


def test_bad_messages_land_in_the_dlq_with_reasons(worker: Worker, kafka_bootstrap: str) -> None:
    topic = worker.env["STREAM_APP_TOPIC_CLICKSTREAM"]
    naive = event("bad-1", 5)
    naive["ts"] = naive["ts"].rstrip("Z")
    bad = [
        (b"bad-0", b"{not json"),
        (b"bad-1", json.dumps(naive).encode()),
        (b"bad-2", json.dumps(event("bad-2", 5, "purchase")).encode()),
        (b"bad-3", b"\xff\xfe garbage"),
        (b"bad-4", b'{"pad": "' + b"x" * 70_000 + b'"}'),
        (b"bad-5", json.dumps(event("bad-5", -24 * 60)).encode()),  # a day in the future
    ]
    invalid_before = worker.metric("churn_events_invalid_total")
    events_before = total_events(worker)
    producer = KafkaProducer(
        bootstrap_servers=kafka_bootstrap.split(","), acks="all", max_request_size=200_000
    )
    for key, value in bad:
        producer.send(topic, key=key, value=value)
    good = event("after-bad", 1)
    producer.send(topic, key=b"after-bad", value=json.dumps(good).encode())
    producer.flush()
    producer.close()

    letters = consume_all(kafka_bootstrap, worker.env["STREAM_APP_TOPIC_DLQ"], len(bad))
    found = {m.key: json.loads(m.value) for m in letters}
    assert {k: v["reason"] for k, v in found.items()} == {
        b"bad-0": "invalid_json",
        b"bad-1": "naive_timestamp",
        b"bad-2": "missing_field",
        b"bad-3": "invalid_utf8",
        b"bad-4": "too_large",
        b"bad-5": "future_timestamp",
    }
    assert found[b"bad-2"]["field"] == "revenue" and found[b"bad-2"]["user_id"] == "bad-2"
    assert found[b"bad-4"]["truncated"] and found[b"bad-4"]["payload_size"] > 70_000
    assert all(v["source_topic"] == topic and v["offset"] >= 0 for v in found.values())
    wait_for(
        lambda: worker.metric("churn_events_invalid_total") - invalid_before >= len(bad),
        30,
        "invalid counter",
    )
    assert worker.metric("churn_events_invalid_total", reason="too_large") >= 1
    # the worker survived and still applies good events
    wait_for(lambda: total_events(worker) - events_before >= 1, 30, "good event after bad ones")
    assert worker.alive()
    # A log an on-call engineer can read: no timer overlap warnings (the flush runs in a
    # plain loop, not a Faust timer), and one dead-letter line per reason, not per letter.
    log = worker.log.read_text()
    assert "is overlapping" not in log
    assert log.count("dead letter invalid_json") <= 1


def test_duplicates_are_applied_once(worker: Worker, kafka_bootstrap: str) -> None:
    before, dup_before = total_events(worker), worker.metric("churn_events_duplicate_total")
    e = event("dup-user", 3)
    with ChurnProducer(kafka_bootstrap, worker.env["STREAM_APP_TOPIC_CLICKSTREAM"]) as prod:
        prod.send(e)
        prod.send(e)
    wait_for(
        lambda: worker.metric("churn_events_duplicate_total") - dup_before >= 1,
        30,
        "duplicate counted",
    )
    assert total_events(worker) - before == 1


def test_misrouted_event_is_forwarded_and_applied_once(
    worker: Worker, kafka_bootstrap: str
) -> None:
    before, rerouted = total_events(worker), worker.metric("churn_events_rerouted_total")
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap.split(","), acks="all")
    producer.send(
        worker.env["STREAM_APP_TOPIC_CLICKSTREAM"],
        key=b"not-the-user",
        value=json.dumps(event("routed-user", 2)).encode(),
    )
    producer.flush()
    producer.close()
    wait_for(lambda: total_events(worker) - before >= 1, 30, "re-routed event applied")
    assert worker.metric("churn_events_rerouted_total") - rerouted == 1
    assert total_events(worker) - before == 1
