"""kill -9 a worker in the middle of a replay of 100k+ events and restart it: the final
per-user state equals the offline evaluator's over the same events (nothing lost, nothing
counted twice), redelivered events are duplicates and never late_event dead letters, and a
decision emitted twice carries the same id."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from stream_app.agents.score import partition_for
from stream_app.cli import main
from stream_app.offline import EvaluateOptions, Replay
from stream_app.producer import ChurnProducer, replay
from stream_app.settings import load_settings
from tests.integration.conftest import Worker, read_to_end, wait_for

# The file is replayed far faster than real time, so the partitions' stream times run
# ahead of each other; a day of allowed lateness keeps the comparison about crashes.
SETTINGS = {"allowed_lateness": "1d"}


@pytest.mark.slow
def test_kill_9_mid_replay_loses_nothing_and_counts_nothing_twice(
    start_worker: Callable[..., Worker], kafka_bootstrap: str, tmp_path: Path
) -> None:
    events = tmp_path / "events.jsonl"
    args = ["generate", "--users", "1500", "--days", "40", "--seed", "41"]
    assert main([*args, "--start", "2026-02-01T00:00:00Z", "--out", str(events)]) == 0
    first = start_worker(**SETTINGS)
    env = first.env
    with ChurnProducer(kafka_bootstrap, env["STREAM_APP_TOPIC_CLICKSTREAM"]) as prod:
        sent = replay(events, prod)["sent"]
    assert sent >= 100_000
    wait_for(lambda: first.metric("churn_events_total") >= sent // 3, 240, "a third applied")
    first.kill()
    second = start_worker(like=first)

    # Done when every partition's stream time reached its last event in the file and
    # the counters hold still (the changelog writes follow the applied events).
    last: dict[str, float] = {}
    for line in events.read_text().splitlines():
        row = json.loads(line)
        part = str(partition_for(row["user_id"].encode(), 4))
        last[part] = max(last.get(part, 0.0), datetime.fromisoformat(row["ts"]).timestamp())

    def caught_up() -> bool:
        return all(
            second.metric("churn_stream_time_seconds", partition=p) >= t for p, t in last.items()
        )

    wait_for(caught_up, 400, "the restarted worker to reach the end of every partition", every=2)
    counted: list[float] = []

    def still() -> bool:
        counted.append(second.metric("churn_events_total"))
        return len(counted) > 2 and counted[-1] == counted[-3]

    wait_for(still, 60, "the counters to hold still", every=2)
    assert second.metric("churn_events_duplicate_total") > 0  # redeliveries happened
    # Redelivery is not lateness: no event sent once became a late_event letter.
    assert second.metric("churn_events_invalid_total", reason="late_event") == 0
    letters = read_to_end(kafka_bootstrap, env["STREAM_APP_TOPIC_DLQ"])
    assert not [m for m in letters if json.loads(m.value)["reason"] == "late_event"]

    # The live state of every user equals the offline evaluator's over the same events:
    # each user's features as of their partition's final stream time (decayed sums, counts,
    # recency, tenure: any event lost or applied twice shows).
    offline = Replay(events, load_settings(**SETTINGS), EvaluateOptions(), ordered=False)
    for _ in offline:
        pass
    space = offline.engine.space
    compared = 0
    for uid, state in sorted(offline.store.items()):
        status, body = second.request(f"/users/{uid}")
        assert status == 200, (uid, body)
        # (the same instant as the live answer: the state is what is compared)
        expected = state.features(datetime.fromisoformat(body["as_of"]).timestamp(), space)
        wrong = {
            name: (body["features"].get(name), value)
            for name, value in expected.items()
            if body["features"].get(name) != pytest.approx(value, rel=1e-9, abs=1e-12)
        }
        assert not wrong, (uid, body["as_of"], last, wrong)
        compared += 1
    assert compared == len(offline.store) > 1400  # (users with at least one event)

    # A decision sent before and again after the crash carries the same id.
    decisions = [
        json.loads(m.value) for m in read_to_end(kafka_bootstrap, env["STREAM_APP_TOPIC_DECISIONS"])
    ]
    by_trigger: dict[tuple[str, str, str], set[str]] = {}
    for d in decisions:
        by_trigger.setdefault((d["user_id"], d["trigger"], d["ts"]), set()).add(d["decision_id"])
    assert all(len(ids) == 1 for ids in by_trigger.values())
    repeated = Counter(d["decision_id"] for d in decisions)
    print(f"{sum(n > 1 for n in repeated.values())} decisions emitted twice, same id")
