"""The live system learns: the worker that owns the training partition learns, publishes
snapshots to the model topic, and every worker scores with them; a learner killed
mid-stream resumes from its last snapshot without skipping or repeating an example."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stream_app.cli import main
from stream_app.kafka.producer import ChurnProducer, replay
from tests.integration.conftest import SHORT_LEARNING, Worker, read_to_end, wait_for

# Short horizon and intervals so three weeks of traffic resolve thousands of labels.
LEARNING = SHORT_LEARNING


def generate(path: Path, users: int, days: int, seed: int) -> Path:
    args = ["generate", "--users", str(users), "--days", str(days), "--seed", str(seed)]
    assert main([*args, "--start", "2026-02-01T00:00:00Z", "--out", str(path)]) == 0
    return path


def model(worker: Worker) -> dict[str, Any]:
    return json.loads(worker.get("/model") or "{}")


def snapshots(bootstrap: str, worker: Worker) -> list[dict[str, Any]]:
    return [
        json.loads(m.value) for m in read_to_end(bootstrap, worker.env["STREAM_APP_TOPIC_MODEL"])
    ]


def test_the_worker_learns_and_scores_with_the_learned_model(
    start_worker: Callable[..., Worker], kafka_bootstrap: str, tmp_path: Path
) -> None:
    events = generate(tmp_path / "events.jsonl", 800, 24, 21)
    worker = start_worker(**LEARNING)
    # Paced: unpaced, the worker scores the whole file before the first snapshot arrives,
    # and no example would carry a learned model's version.
    with ChurnProducer(kafka_bootstrap, worker.env["STREAM_APP_TOPIC_CLICKSTREAM"]) as prod:
        sent = replay(events, prod, rate=4000)["sent"]
    wait_for(lambda: worker.metric("churn_events_total") >= sent, 240, f"{sent} events applied")
    wait_for(lambda: model(worker).get("ready"), 60, "/model ready")

    m = model(worker)
    assert m["version"] > 0 and m["ready"] and m["n_labels"] >= 200
    assert "days_since_last_event" in m["weights"] and len(m["weights"]) > 20
    assert 0.5 < m["metrics"]["rolling_auc"] <= 1.0
    assert worker.metric("churn_model_version") == m["version"]
    assert worker.metric("churn_model_ready") == 1
    assert worker.metric("churn_learner_active") == 1
    assert worker.metric("churn_model_labels_total") >= 200
    assert worker.metric("churn_model_rolling_auc") > 0.5
    assert worker.metric("churn_model_rejected_total") == 0

    # Training examples scored after the hand-over carry the learned model's version.
    examples = [
        json.loads(x.value)
        for x in read_to_end(kafka_bootstrap, worker.env["STREAM_APP_TOPIC_TRAINING"])
    ]
    versions = {ex["model_version"] for ex in examples}
    assert 0 in versions and max(versions) > 0
    ready_versions = {s["version"] for s in snapshots(kafka_bootstrap, worker) if s["ready"]}
    assert {v for v in versions if v > 0} <= ready_versions

    # The user endpoint scores with the model in use, with its reason codes.
    user = examples[-1]["user_id"]
    body = json.loads(worker.get(f"/users/{user}") or "{}")
    assert body["user_id"] == user and body["model_version"] == model(worker)["version"]
    assert 0.0 <= body["p"] <= 1.0 and body["tier"] in ("low", "mid", "high")
    assert set(body["features"]) >= {"days_since_last_event", "purchases_7d"}
    assert all(set(r) == {"name", "value"} and r["value"] > 0 for r in body["reasons"])
    assert worker.get("/users/nobody-like-this") is None  # 404 (urllib raises, get -> None)


@pytest.mark.slow
def test_a_learner_killed_mid_stream_neither_skips_nor_repeats_an_example(
    start_worker: Callable[..., Worker], kafka_bootstrap: str, tmp_path: Path
) -> None:
    events = generate(tmp_path / "events.jsonl", 600, 24, 22)
    lines = events.read_text().splitlines()
    halves = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    halves[0].write_text("\n".join(lines[: len(lines) // 2]) + "\n")
    halves[1].write_text("\n".join(lines[len(lines) // 2 :]) + "\n")
    first = start_worker(**LEARNING)
    topic = first.env["STREAM_APP_TOPIC_CLICKSTREAM"]
    with ChurnProducer(kafka_bootstrap, topic) as prod:
        replay(halves[0], prod)
    wait_for(
        lambda: first.metric("churn_model_snapshots_published_total") >= 3,
        180,
        "three snapshots from the first learner",
    )
    first.kill()  # SIGKILL: no clean shutdown, whatever it learned since its last snapshot
    learned_first = max(s["n_labels"] for s in snapshots(kafka_bootstrap, first))
    with ChurnProducer(kafka_bootstrap, topic) as prod:
        replay(halves[1], prod)
    # The new member joins once the killed one's session expired (about a minute).
    second = start_worker(like=first)
    training = second.env["STREAM_APP_TOPIC_TRAINING"]

    def caught_up() -> bool:
        # Examples keep arriving while the second worker replays the second half (and the
        # first worker's uncommitted events); done when the newest snapshot includes the
        # last example and the second learner has learned.
        if not second.metric("churn_model_labels_total"):
            return False
        examples = read_to_end(kafka_bootstrap, training)
        newest = max(snapshots(kafka_bootstrap, second), key=lambda s: s["version"])
        return bool(examples) and newest["trained_through"].get("0") == examples[-1].offset

    wait_for(caught_up, 300, "the restarted learner to learn every example", every=3)
    examples = read_to_end(kafka_bootstrap, training)
    rows = [json.loads(x.value) for x in examples]
    distinct = {r["example_id"] for r in rows if r["train"]}  # the ones meant for learning
    newest = max(snapshots(kafka_bootstrap, second), key=lambda s: s["version"])
    # Every distinct example learned once: none skipped (n >= distinct), none twice.
    assert newest["n_labels"] == len(distinct)
    assert newest["learner"]["labels"] == len({r["example_id"] for r in rows})  # all judged
    assert newest["n_labels"] > learned_first > 0  # the second learner carried on
    assert second.metric("churn_learner_active") == 1
