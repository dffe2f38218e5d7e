"""The HTTP API with two workers in one group: /users/{id} answers from either worker
(routed to the owner of the user's partition), needs the bearer token when one is set,
and says 404 for an unknown user; /model needs the token too; /metrics, /health and /ready
need none and name no user; Faust's own table views are not served."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from stream_app.kafka.producer import ChurnProducer
from stream_app.kafka.send import partition_for
from tests.integration.conftest import Worker, wait_for

TOKEN = "s3cret-" + uuid.uuid4().hex


def owned(worker: Worker) -> set[int]:
    return set(json.loads(worker.get("/health") or "{}").get("partitions", []))


def test_users_endpoint_from_either_of_two_workers_with_a_token(
    start_worker: Callable[..., Worker], kafka_bootstrap: str
) -> None:
    first = start_worker(api_token=TOKEN)
    second = start_worker(like=first)
    wait_for(
        lambda: owned(first) and owned(second) and len(owned(first) | owned(second)) == 4,
        120,
        "both workers to own partitions",
    )
    assert not owned(first) & owned(second)
    wait_for(lambda: all(w.request("/ready")[0] == 200 for w in (first, second)), 60, "/ready")
    now = datetime.now(tz=UTC).replace(microsecond=0)
    tag = uuid.uuid4().hex[:8]  # user ids no other text on the page could contain by chance
    users = [f"api-{tag}-{i}" for i in range(24)]
    with ChurnProducer(kafka_bootstrap, first.env["STREAM_APP_TOPIC_CLICKSTREAM"]) as prod:
        for i, user in enumerate(users):
            ts = (now - timedelta(minutes=60 - i)).isoformat().replace("+00:00", "Z")
            prod.send(
                {
                    "event_id": uuid.uuid4().hex,
                    "user_id": user,
                    "event_type": "purchase",
                    "ts": ts,
                    "revenue": 12.5,
                }
            )

    def applied() -> float:
        return first.metric("churn_events_total") + second.metric("churn_events_total")

    wait_for(lambda: applied() >= len(users), 90, "events applied on both workers")
    parts = {partition_for(u.encode(), 4) for u in users}
    assert parts & owned(first) and parts & owned(second)  # users live on both workers

    for user in users:
        answers = [w.request(f"/users/{user}", TOKEN) for w in (first, second)]
        (s1, b1), (s2, b2) = answers
        assert s1 == s2 == 200, answers
        assert b1 == b2  # the same answer, whichever worker was asked
        assert b1["user_id"] == user and 0.0 <= b1["p"] <= 1.0
        assert b1["features"]["has_purchased"] == 1.0
        assert b1["last_event_at"] is not None and b1["model_version"] == 0

    for worker in (first, second):
        status, body = worker.request(f"/users/{users[0]}")
        assert status == 401 and "token" in body["error"]
        assert worker.request(f"/users/{users[0]}", "wrong")[0] == 401
        status, body = worker.request("/users/nobody-" + uuid.uuid4().hex, TOKEN)
        assert status == 404 and body["error"] == "unknown user"
        # Faust's own table and router views are off: not served at all, token or not
        assert worker.fetch(f"/table/users/{users[0]}/", TOKEN)[0] == 404
        assert worker.fetch("/router/", TOKEN)[0] == 404
        # the model is learned from users' behaviour: token required
        status, body = worker.request("/model")
        assert status == 401 and "token" in body["error"]
        assert worker.request("/model", "wrong")[0] == 401
        status, body = worker.request("/model", TOKEN)
        assert status == 200 and body["version"] == 0

    # probes and scrapers need no token, and what they read names no user
    for worker in (first, second):
        for path in ("/metrics", "/health", "/ready"):
            status, text = worker.fetch(path)
            assert status == 200, (path, status, text[:300])
            assert len(text) > 20, (path, text)
            leaked = [user for user in users if user in text]
            assert not leaked, f"{path} names users {leaked[:3]}"
        assert tag not in worker.fetch("/metrics")[1]
