"""Two workers in one consumer group share the partitions; every event is applied exactly
once across them, including the ones that arrive while the second worker joins: the
applied counts add up to the events sent, and every user's final state (changelog and
/users/{id}) equals the offline evaluator's over the same events."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from stream_app.kafka.producer import ChurnProducer
from tests.integration.conftest import (
    Traffic,
    Worker,
    compare_with_offline,
    offline_run,
    wait_for,
)


def test_two_workers_share_the_load(
    start_worker: Callable[..., Worker], kafka_bootstrap: str, tmp_path: Path
) -> None:
    first = start_worker()
    now = datetime.now(tz=UTC).replace(microsecond=0)

    def batch(n: int, offset: int) -> list[dict[str, str]]:
        return [
            {
                "event_id": uuid.uuid4().hex,
                "user_id": f"scale-{i % 40}",
                "event_type": "page_view",
                "ts": (now - timedelta(seconds=600 - offset - i))
                .isoformat()
                .replace("+00:00", "Z"),
            }
            for i in range(n)
        ]

    topic = first.env["STREAM_APP_TOPIC_CLICKSTREAM"]
    events = batch(100, 0) + batch(100, 100)
    with ChurnProducer(kafka_bootstrap, topic) as prod:
        for e in events[:100]:
            prod.send(e)
        second = start_worker(like=first)  # joins: the group rebalances
        wait_for(
            lambda: (h := second.get("/health")) and json.loads(h)["partitions"],
            120,
            "the second worker to own partitions",
        )
        owned = set(json.loads(second.get("/health") or "{}")["partitions"])
        assert owned and owned.isdisjoint(json.loads(first.get("/health") or "{}")["partitions"])
        for e in events[100:]:
            prod.send(e)

    def applied() -> float:
        return first.metric("churn_events_total") + second.metric("churn_events_total")

    def dupes() -> float:
        return first.metric("churn_events_duplicate_total") + second.metric(
            "churn_events_duplicate_total"
        )

    try:
        wait_for(
            lambda: applied() >= 200 and second.metric("churn_events_total") > 0,
            120,
            "200 events applied across two workers",
        )
    except AssertionError:
        raise AssertionError(
            f"applied {first.metric('churn_events_total')} + "
            f"{second.metric('churn_events_total')}, duplicates {dupes()}, "
            f"invalid {first.metric('churn_events_invalid_total')} + "
            f"{second.metric('churn_events_invalid_total')}"
        ) from None
    assert applied() == 200  # redeliveries around the rebalance were deduplicated
    assert first.alive() and second.alive()
    assert (
        first.metric("churn_events_rerouted_total") + second.metric("churn_events_rerouted_total")
        == 0
    )
    # the same events through the offline evaluator: every user's state must match
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    traffic = Traffic(path, 4, len(events), {}, {})
    compared = compare_with_offline(second, kafka_bootstrap, traffic, offline_run(traffic))
    assert compared == {"users": 40, "events": 200}
    print(f"\nscale-out: {compared}, redeliveries skipped as duplicates: {dupes():.0f}")
