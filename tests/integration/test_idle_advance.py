"""STREAM_APP_IDLE_ADVANCE on a live worker: a partition that is caught up and quiet moves
its stream time from the wall clock, so a user's silence deadline fires without another
event; without the setting, the same traffic fires none."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from stream_app.kafka.producer import ChurnProducer
from tests.integration.conftest import Worker, wait_for


@pytest.mark.parametrize("idle", ["0", "2s"])
def test_a_quiet_partition_fires_silence_deadlines_only_when_asked(
    idle: str, start_worker: Callable[..., Worker], kafka_bootstrap: str
) -> None:
    # A 10-second rescore deadline, so the wall clock passes it within the test. (Events
    # older than the wall clock minus the idle window and the lateness would be late_event
    # letters with the setting on: that is its cost, docs in README.)
    worker = start_worker(idle_advance=idle, rescore_after="10s", allowed_lateness="5s")
    wait_for(lambda: worker.request("/ready")[0] == 200, 90, "/ready")
    start = datetime.now(tz=UTC)
    with ChurnProducer(kafka_bootstrap, worker.env["STREAM_APP_TOPIC_CLICKSTREAM"]) as prod:
        for i in range(5):
            for n in range(8):
                ts = (start + timedelta(milliseconds=i)).isoformat().replace("+00:00", "Z")
                prod.send(
                    {
                        "event_id": uuid.uuid4().hex,
                        "user_id": f"quiet-{n}",
                        "event_type": "page_view",
                        "ts": ts,
                    }
                )
    wait_for(lambda: worker.metric("churn_events_total") >= 40, 60, "the events applied")
    if idle == "0":
        time.sleep(20)  # past the deadline and the window: nothing must fire without events
        assert worker.metric("churn_scores_total", trigger="silence") == 0
    else:
        wait_for(
            lambda: worker.metric("churn_scores_total", trigger="silence") >= 8,
            40,
            "a silence score for each quiet user",
        )
