"""Every metric the Grafana dashboard, the alert rules and the Prometheus config query is a
series a running worker exports, once traffic has made its labelled series exist."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path

from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from stream_app.cli import main
from stream_app.kafka.producer import ChurnProducer, replay
from tests import promql
from tests.integration.conftest import SHORT_LEARNING, Worker, wait_for

# Short horizon and intervals: labels, snapshots and uplift examples within three weeks.
SETTINGS = SHORT_LEARNING
# A touchy breaker (its gauge only exists once it changed) and a small budget, so spikes are
# suppressed; a large holdout, so both groups have resolved examples; treated examples
# skipped by the learner (churn_training_skipped_total gets a series). The thresholds judge
# p: with a 2-day horizon the default "left" risk flags almost nobody in three weeks.
POLICY = """
train_on_treated = false
[spike]
risk = "p"
entry = 0.3
prior_entry = 0.3
[holdout]
share = 0.4
[breaker]
window = "1d"
open_share = 0.05
close_share = 0.02
min_scored = 20
[limits]
budget = 40
"""


def exported(worker: Worker) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(worker.get("/metrics") or ""):
        names |= {s.name for s in family.samples}
    return names


def test_every_metric_the_deploy_files_use_is_exported(
    start_worker: Callable[..., Worker], kafka_bootstrap: str, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    worker = start_worker(**SETTINGS, policy_file=str(policy))
    events = tmp_path / "events.jsonl"
    args = ["generate", "--users", "300", "--days", "21", "--seed", "11", "--malformed", "0.01"]
    assert main([*args, "--start", "2026-02-01T00:00:00Z", "--out", str(events)]) == 0
    with ChurnProducer(kafka_bootstrap, worker.env["STREAM_APP_TOPIC_CLICKSTREAM"]) as prod:
        # Paced: the worker applies the whole file in about a second, before the learner's
        # first snapshot; with the cold-start prior alone a three-week file flags nobody,
        # and the policy's metrics would have no series.
        sent = replay(events, prod, rate=1500, skip_invalid=False)["sent"]
    bad_snapshot = KafkaProducer(bootstrap_servers=kafka_bootstrap.split(","))
    bad_snapshot.send(worker.env["STREAM_APP_TOPIC_MODEL"], key=b"model", value=b"{not json")
    bad_snapshot.close()

    def consumed() -> bool:
        names = ("churn_events_total", "churn_events_invalid_total", "churn_events_duplicate_total")
        return sum(worker.metric(n) for n in names) >= sent

    wait_for(consumed, 180, f"{sent} messages consumed")
    wanted = set(promql.all_names()) - promql.PROMETHEUS_OWN
    # The lag gauge is set every 10 s; the learner's last snapshot within 2 s.
    with contextlib.suppress(AssertionError):  # the missing ones are named below
        wait_for(lambda: wanted <= exported(worker), 30, "every queried metric to have a series")
    missing = wanted - exported(worker)
    assert not missing, json.dumps({n: sorted(promql.all_names()[n]) for n in missing})
    # The series are real measurements, not just registered names: once everything is
    # consumed and committed, the group's lag is zero on every partition this worker owns.
    partitions = int(worker.env["STREAM_APP_TOPIC_PARTITIONS"])
    lag = [f'churn_consumer_lag_messages{{partition="{p}"}} 0.0' for p in range(partitions)]
    wait_for(lambda: all(x in (worker.get("/metrics") or "") for x in lag), 30, "lag 0")
    assert worker.metric("churn_model_rejected_total", reason="invalid") == 1
    assert worker.metric("churn_interventions_total", group="holdout") > 0
    assert worker.metric("churn_decisions_suppressed_total") > 0
