"""examples/consume_interventions.py against the real broker: it consumes in a group,
commits only what it handled, sends each intervention_id once, skips stale ones and
applies erasure audits."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from schemas.erasure import ErasureAudit
from schemas.outputs import Intervention, Reason

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "consume_interventions.py"


def _intervention(user: str, ts: datetime, decided_at: datetime | None) -> Intervention:
    return Intervention(
        intervention_id=uuid.uuid4().hex,
        decision_id=uuid.uuid4().hex,
        user_id=user,
        ts=ts,
        decided_at=decided_at,
        trigger="silence",
        p=0.42,
        tier="high",
        previous_tier="low",
        action="win_back",
        reasons=[Reason(name="log_days_since_last_event", value=1.1)],
        model_version=3,
        policy_version="test",
    )


def _consume(bootstrap: str, group: str, topics: list[str]) -> tuple[list[Any], dict[str, int]]:
    done = subprocess.run(
        [
            sys.executable,
            str(EXAMPLE),
            "--bootstrap",
            bootstrap,
            "--group",
            group,
            "--topic",
            topics[0],
            "--audit-topic",
            topics[1],
            "--idle-exit",
            "6",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    out = [json.loads(line) for line in done.stdout.splitlines()]
    counts: dict[str, int] = json.loads(done.stderr.strip().splitlines()[-1])["counts"]
    return out, counts


def test_the_example_consumer_sends_once_skips_stale_and_erased_and_commits(
    kafka_bootstrap: str,
) -> None:
    tag = uuid.uuid4().hex[:8]
    topics = [f"interventions-{tag}", f"erasure-{tag}.audit"]
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        from kafka.admin import NewTopic

        admin.create_topics([NewTopic(t, 2, 1) for t in topics])
    finally:
        admin.close()
    now = datetime.now(tz=UTC)
    fresh = _intervention("u-fresh", now - timedelta(minutes=5), now)
    backfill = _intervention("u-old", now - timedelta(days=90), now)  # ts months old
    legacy = _intervention("u-legacy", now - timedelta(minutes=1), None)  # no decided_at
    gone = _intervention("u-gone", now - timedelta(minutes=3), now - timedelta(minutes=2))
    audit = ErasureAudit(
        request_id="r1",
        user_id="u-gone",
        requested_at=now - timedelta(minutes=1),
        erased_at=now - timedelta(seconds=30),
        found=True,
        erased=["user_state"],
        not_erased=["model_weights"],
        partition=0,
        offset=0,
    )
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    producer.send(topics[1], key=b"u-gone", value=audit.model_dump_json().encode())
    producer.flush()
    for msg in (fresh, backfill, legacy, gone, fresh, legacy):  # two redeliveries
        producer.send(topics[0], key=msg.user_id.encode(), value=msg.model_dump_json().encode())
    producer.send(topics[0], key=b"u-bad", value=b"{not json")
    producer.flush()
    producer.close()

    group = f"crm-{tag}"
    out, counts = _consume(kafka_bootstrap, group, topics)
    sent = [o["send"]["intervention_id"] for o in out if "send" in o]
    assert sorted(sent) == sorted([fresh.intervention_id, legacy.intervention_id])
    assert {"erased": "u-gone"} in out
    assert counts == {"sent": 2, "duplicate": 2, "stale": 1, "erased": 1, "invalid": 1}

    # Committed after handling: the group's offsets are at the end of every partition,
    # and the same group started again has nothing left to send.
    check = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group)
    try:
        tps = [TopicPartition(t, p) for t in topics for p in (0, 1)]
        ends = check.end_offsets(tps)
        assert {tp: check.committed(tp) or 0 for tp in tps} == ends
    finally:
        check.close()
    again, counts = _consume(kafka_bootstrap, group, topics)
    assert again == [] and counts["sent"] == 0
