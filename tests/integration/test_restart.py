"""State survives a restart: the users table comes back from its changelog, so an event
redelivered after the restart is still recognised as a duplicate."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from stream_app.kafka.producer import ChurnProducer
from tests.integration.conftest import Worker, wait_for


def test_dedup_and_state_survive_a_worker_restart(
    start_worker: Callable[..., Worker], kafka_bootstrap: str
) -> None:
    first = start_worker()
    topic = first.env["STREAM_APP_TOPIC_CLICKSTREAM"]
    now = datetime.now(tz=UTC).replace(microsecond=0)
    events = [
        {
            "event_id": uuid.uuid4().hex,
            "user_id": f"restart-{i % 3}",
            "event_type": "page_view",
            "ts": (now - timedelta(minutes=30 - i)).isoformat().replace("+00:00", "Z"),
        }
        for i in range(9)
    ]
    with ChurnProducer(kafka_bootstrap, topic) as prod:
        for e in events:
            prod.send(e)
    wait_for(lambda: first.metric("churn_events_total") >= 9, 60, "9 events applied")
    first.stop()

    second = start_worker(like=first)
    with ChurnProducer(kafka_bootstrap, topic) as prod:
        for e in events[:3]:  # at-least-once: a producer retry after the restart
            prod.send(e)
        prod.send({**events[0], "event_id": uuid.uuid4().hex})  # and one new event
    wait_for(
        lambda: (
            second.metric("churn_events_duplicate_total") >= 3
            and second.metric("churn_events_total") >= 1
        ),
        90,
        "3 duplicates and 1 new event on the restarted worker",
    )
    # Offsets the first worker had not committed yet are redelivered too (at-least-once),
    # so there may be more than 3 duplicates; none of them is applied a second time.
    assert second.metric("churn_events_total") == 1
    assert second.metric("churn_events_duplicate_total") >= 3
