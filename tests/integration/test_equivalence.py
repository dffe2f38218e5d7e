"""Same input, same result: the Faust worker and the offline evaluator run the same core, so a
sorted file produces the same training examples (features, p, label) in both; with the
live learner on, the same labels and features, and a prequential AUC no worse than 0.01
below the offline one."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from stream_app.cli import main
from stream_app.core.learner import roc_auc
from stream_app.kafka.producer import ChurnProducer, replay
from stream_app.kafka.send import partition_for
from stream_app.offline import EvaluateOptions, evaluate
from stream_app.settings import load_settings
from tests.integration.conftest import Worker, consume_all, wait_for

# Short horizon and intervals so a 12-day file resolves plenty of labels; a huge
# min_labels_ready keeps both drivers on the cold-start prior, so p must match exactly.
ENGINE = {
    "horizon": "2d",
    "snapshot_interval": "12h",
    "rescore_after": "1d,3d",
    "allowed_lateness": "1h",
    "min_labels_ready": "1000000000",
}
# The learner on, with the offline cadence only (no wall-clock snapshots): the live model
# differs from the offline one only by the order examples arrive in and by when each
# worker reads a snapshot.
LEARNING = {
    **ENGINE,
    "min_labels_ready": "150",
    "snapshot_every": "50",
    "rolling_window": "300",
    "snapshot_max_interval": "1h",
}


# The prior gives about 0.04 after a day of silence and 0.063 after three: an entry of
# 0.05 flags the three-day silences of a 12-day file (judging p itself: a few days of
# traffic say little about a user's usual rate).
POLICY = """
[spike]
risk = "p"
entry = 0.05
prior_entry = 0.05
jump = 0.02
rearm_below = 0.03
[holdout]
share = 0.3
"""
# The bandit draws each action from the decision id: both drivers must choose the same.
BANDIT_POLICY = 'chooser = "bandit"\n' + POLICY


@pytest.mark.parametrize("policy", [POLICY, BANDIT_POLICY], ids=["rules", "bandit"])
def test_worker_and_offline_driver_agree(
    start_worker: Callable[..., Worker], kafka_bootstrap: str, tmp_path: Path, policy: str
) -> None:
    offline, live = run_both(
        start_worker, kafka_bootstrap, tmp_path, ENGINE, 60, 12, True, policy=policy
    )
    assert live == offline  # user, scored_at, label and p


def test_live_learning_matches_the_offline_evaluation(
    start_worker: Callable[..., Worker], kafka_bootstrap: str, tmp_path: Path
) -> None:
    # (decisions follow p, which differs with the model in use: not compared here)
    # Paced like live traffic: a worker that applies a burst of 14,595 events in under a
    # second scores nearly all of them before the learner's first snapshot reaches it.
    offline, live = run_both(start_worker, kafka_bootstrap, tmp_path, LEARNING, 300, 20, rate=1500)
    assert [r[:3] for r in live] == [r[:3] for r in offline]  # user, scored_at, label
    labels = [r[2] for r in offline]
    auc_offline = roc_auc(labels, [r[3] for r in offline])
    auc_live = roc_auc(labels, [r[3] for r in live])
    print(
        f"prequential AUC on {len(labels)} labels: offline {auc_offline:.4f}, live {auc_live:.4f}"
    )
    assert sum(labels) > 50 and len(labels) - sum(labels) > 50
    # One-sided: the live model must not rank worse. With batches, the training examples
    # reach the learner in another interleaving of partitions than offline; paced, live
    # measured 0.6218-0.6226 against offline 0.6118 in 4 runs (no pacing: 0.565, a backlog
    # scored before the first snapshot arrived).
    assert auc_live >= auc_offline - 0.01
    assert any(r[4] > 0 for r in live) and any(r[4] > 0 for r in offline)  # both learned


def run_both(
    start_worker: Callable[..., Worker],
    kafka_bootstrap: str,
    tmp_path: Path,
    engine: dict[str, str],
    users: int,
    days: int,
    same_decisions: bool = False,
    rate: float = 0.0,
    policy: str = POLICY,
) -> tuple[list[tuple[str, float, int, float, int]], list[tuple[str, float, int, float, int]]]:
    """The final training examples of both drivers, sorted: (user, scored_at, label, p,
    model_version); asserts their feature vectors are identical."""
    path = tmp_path / "events.jsonl"
    args = ["generate", "--users", str(users), "--days", str(days), "--seed", "11"]
    assert main([*args, "--start", "2026-03-01T00:00:00Z", "--out", str(path)]) == 0
    # A policy that flags on short files too (with the prior, the default entry needs two
    # weeks of silence), with a real holdout.
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(policy)
    engine = {**engine, "policy_file": str(policy_file)}
    settings = load_settings(**engine, eval_warmup=0)
    preds, decided = tmp_path / "pred.jsonl", tmp_path / "decisions.jsonl"
    run = evaluate(
        path,
        settings,
        EvaluateOptions(predictions_out=preds, keep_labels=True, decisions_out=decided),
    )
    offline = [json.loads(x) for x in preds.read_text().splitlines()]
    offline_features = {
        (lab.user_id, round(lab.scored_at, 3)): lab.features for lab in run.resolved
    }

    # No users kept as objects between flushes: every user is packed at rest after each
    # flush (core/compact.py) and unpacked by its next event, and must still agree.
    worker = start_worker(**engine, state_cache_users="0")
    partitions = int(worker.env["STREAM_APP_TOPIC_PARTITIONS"])
    with ChurnProducer(kafka_bootstrap, worker.env["STREAM_APP_TOPIC_CLICKSTREAM"]) as prod:
        sent = replay(path, prod, rate=rate)["sent"]
    wait_for(lambda: worker.metric("churn_events_total") >= sent, 120, f"{sent} events applied")

    # A label is final on a partition once that partition's watermark passed its horizon.
    last: dict[int, float] = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        p = partition_for(row["user_id"].encode(), partitions)
        last[p] = max(last.get(p, 0.0), datetime.fromisoformat(row["ts"]).timestamp())
    horizon, lateness = settings.horizon, settings.allowed_lateness

    def final(user: str, scored_at: float) -> bool:
        return scored_at + horizon < last[partition_for(user.encode(), partitions)] - lateness

    def ts(text: str) -> float:
        return datetime.fromisoformat(text).timestamp()

    versions = {(lab.user_id, round(lab.scored_at, 3)): lab.model_version for lab in run.resolved}
    expected = sorted(
        (r["user_id"], key[1], r["label"], r["p"], versions[key])
        for r in offline
        if final(r["user_id"], ts(r["ts"]))
        for key in [(r["user_id"], round(ts(r["ts"]), 3))]
    )
    assert len(expected) > 100 and any(e[2] == 1 for e in expected)

    def finals(msgs: list[Any]) -> list[tuple[str, float, int, float, int]]:
        rows = (json.loads(x.value) for x in msgs)
        return sorted(
            (m["user_id"], round(ts(m["scored_at"]), 3), m["label"], m["p"], m["model_version"])
            for m in rows
            if final(m["user_id"], ts(m["scored_at"]))
        )

    # The topic also holds examples that are not final on every partition: read until all
    # the final ones are there (or the timeout), then compare.
    seen: list[int] = [0, 0]  # messages looked at, final ones among them

    def all_final_arrived(msgs: list[Any]) -> bool:
        for x in msgs[seen[0] :]:
            m = json.loads(x.value)
            seen[1] += final(m["user_id"], ts(m["scored_at"]))
        seen[0] = len(msgs)
        return seen[1] >= len(expected)

    msgs = consume_all(
        kafka_bootstrap, worker.env["STREAM_APP_TOPIC_TRAINING"], timeout=90, done=all_final_arrived
    )
    live = finals(msgs)
    # the feature vectors the learner trains on are the same, value for value
    compared = 0
    for x in msgs:
        m = json.loads(x.value)
        key = (m["user_id"], round(ts(m["scored_at"]), 3))
        if final(m["user_id"], ts(m["scored_at"])):
            assert m["features"] == offline_features[key], key
            compared += 1
    assert compared == len(expected)
    if not same_decisions:
        return expected, live

    # The same decisions, by id: every one whose time the partition's watermark passed
    # (a silence deadline fires only then).
    def decided_here(d: dict[str, Any]) -> bool:
        at = ts(d["ts"])
        return at < last[partition_for(d["user_id"].encode(), partitions)] - lateness

    offline_ids = sorted(
        (d["decision_id"], d["action"])
        for d in map(json.loads, decided.read_text().splitlines())
        if decided_here(d)
    )
    assert len(offline_ids) > 5
    live_ids: list[tuple[str, str]] = []

    def all_decisions(msgs: list[Any]) -> bool:
        live_ids[:] = sorted(
            (d["decision_id"], d["action"])
            for d in (json.loads(m.value) for m in msgs)
            if decided_here(d)
        )
        return len(live_ids) >= len(offline_ids)

    consume_all(
        kafka_bootstrap,
        worker.env["STREAM_APP_TOPIC_DECISIONS"],
        timeout=60,
        done=all_decisions,
    )
    assert live_ids == offline_ids
    return expected, live
