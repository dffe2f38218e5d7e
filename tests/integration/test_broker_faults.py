"""Broker faults in the middle of a replay, each on a Kafka of its own:

- the only broker is killed and started again on the same port and data directory: the
  worker (never restarted) reconnects by itself and finishes;
- one of three brokers is killed for good, with replication factor 3 and
  min.insync.replicas=2 on every topic the worker creates (Faust's changelog and leader
  topics included, checked on the broker): processing goes on with two brokers.

Both times the final per-user state equals the offline evaluator's (nothing lost, nothing
counted twice) and a decision sent twice keeps its id."""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from tests.integration.conftest import (
    LEARNING_SETTINGS,
    Traffic,
    Worker,
    WorkerPool,
    assert_ids_deterministic,
    compare_with_offline,
    offline_run,
    wait_for,
    wait_until_done,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        bool(os.environ.get("KAFKA_BOOTSTRAP_SERVERS")),
        reason="kills and restarts brokers of the local harness, not of an external cluster",
    ),
]


class StallMeter:
    """Samples the worker's applied-events counter every 0.2 s in a thread: how fast it
    applied events before, during and after a fault (figures only)."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.samples.append((time.monotonic(), self.worker.metric("churn_events_total")))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def rate(self, start: float, end: float) -> float:
        """Events applied per second between two instants (from the nearest samples)."""
        inside = [(t, v) for t, v in self.samples if start <= t <= end]
        if len(inside) < 2 or inside[-1][0] == inside[0][0]:
            return float("nan")
        return round((inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0]), 1)

    def back_to_speed(self, since: float, speed: float, fraction: float = 0.5) -> float | None:
        """Seconds from ``since`` until the worker applies events at ``fraction`` of
        ``speed`` again (over one second), None if it never did while sampled."""
        for i, (t, v) in enumerate(self.samples):
            if t <= since:
                continue
            later = [(u, w) for u, w in self.samples[i:] if u <= t + 1.0]
            if len(later) > 1 and (later[-1][1] - v) / (later[-1][0] - t) >= fraction * speed:
                return round(t - since, 1)
        return None


def finish_and_compare(
    worker: Worker, bootstrap: str, traffic: Traffic, meter: StallMeter
) -> dict[str, Any]:
    wait_until_done(worker, traffic, 300)
    meter.stop()
    compared = compare_with_offline(
        worker, bootstrap, traffic, offline_run(traffic, **LEARNING_SETTINGS)
    )
    ids = assert_ids_deterministic(bootstrap, worker.env)
    assert ids["decisions_total"] > 0 and ids["interventions_total"] > 0, ids
    return {**compared, **ids}


@pytest.mark.parametrize("cluster", [1], indirect=True)
def test_the_worker_rides_out_a_broker_restart(
    cluster: Any, pool: WorkerPool, tmp_path: Path
) -> None:
    traffic = Traffic.generate(tmp_path / "events.jsonl", 1000, 10, seed=44, partitions=4)
    worker = pool.start(**LEARNING_SETTINGS)
    sent = traffic.send(cluster.bootstrap, worker.env["STREAM_APP_TOPIC_CLICKSTREAM"])
    wait_for(lambda: worker.metric("churn_events_total") >= sent // 5, 120, "a fifth applied")

    meter = StallMeter(worker)
    time.sleep(3)
    assert worker.metric("churn_events_total") < sent * 0.8, "too late for a mid-replay fault"
    t_kill = time.monotonic()
    cluster.kill_node(1)  # kill -9: no controlled shutdown
    time.sleep(5)
    assert worker.alive(), f"the worker died with the broker; log {worker.log}"
    t_restart = time.monotonic()
    up = cluster.start_node(1)  # same port, same data directory
    t_up = time.monotonic()

    result = finish_and_compare(worker, cluster.bootstrap, traffic, meter)
    speed = meter.rate(t_kill - 3, t_kill)
    assert worker.alive()
    # the same process throughout: its counter saw every event, and applied each exactly
    # once (redeliveries after the reconnect went to churn_events_duplicate_total)
    assert worker.metric("churn_events_total") == result["events"]
    result["duplicates_skipped"] = int(worker.metric("churn_events_duplicate_total"))
    print(
        "\nbroker restart: "
        + json.dumps(
            {
                **result,
                "broker_down_s": round(t_up - t_kill, 1),
                "broker_start_s": round(up, 1),
                "applied_per_s_before": speed,
                "applied_per_s_while_down": meter.rate(t_kill, t_restart),
                "applied_per_s_while_starting": meter.rate(t_restart, t_up),
                "up_to_half_speed_s": meter.back_to_speed(t_up, speed),
            }
        )
    )


def topic_settings(bootstrap: str) -> dict[str, tuple[int, str, str]]:
    """Every topic of the cluster -> (replicas, min.insync.replicas, where that value comes
    from: DYNAMIC_TOPIC_CONFIG for a topic's own config, else a broker default)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","))
    try:
        topics = {t["name"]: t for t in admin.describe_topics()}
        resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in topics]
        configs = admin.describe_configs(resources, config_filter="all")["topic"]
    finally:
        admin.close()
    out: dict[str, tuple[int, str, str]] = {}
    for name, topic in topics.items():
        entry = configs[name]["min.insync.replicas"]
        replicas = {len(p["replica_nodes"]) for p in topic["partitions"]}
        assert len(replicas) == 1, (name, replicas)
        out[name] = (replicas.pop(), entry["value"], entry["config_source"])
    return out


@pytest.mark.parametrize("cluster", [3], indirect=True)
def test_one_of_three_brokers_dies_and_processing_goes_on(
    cluster: Any, pool: WorkerPool, tmp_path: Path
) -> None:
    traffic = Traffic.generate(tmp_path / "events.jsonl", 1000, 10, seed=45, partitions=4)
    worker = pool.start(topic_replication="3", topic_min_insync_replicas="2", **LEARNING_SETTINGS)
    sent = traffic.send(cluster.bootstrap, worker.env["STREAM_APP_TOPIC_CLICKSTREAM"])
    wait_for(lambda: worker.metric("churn_events_total") >= sent // 5, 120, "a fifth applied")

    # kill the broker that leads most of the partitions the worker reads and writes
    admin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap.split(","))
    leaders = Counter(p["leader_id"] for t in admin.describe_topics() for p in t["partitions"])
    admin.close()
    victim = leaders.most_common(1)[0][0]
    meter = StallMeter(worker)
    time.sleep(3)
    assert worker.metric("churn_events_total") < sent * 0.8, "too late for a mid-replay fault"
    t_kill = time.monotonic()
    cluster.kill_node(victim)

    result = finish_and_compare(worker, cluster.bootstrap, traffic, meter)
    speed = meter.rate(t_kill - 3, t_kill)
    assert worker.alive()

    # Every topic on the cluster (the app's, Faust's changelog and leader topics, the
    # learner's and the model's) has 3 replicas and its own min.insync.replicas=2: a topic
    # config, not only the harness's broker default.
    found = topic_settings(cluster.bootstrap)
    app_id = worker.env["STREAM_APP_APP_ID"]
    assert f"{app_id}-users-changelog" in found and f"{app_id}-__assignor-__leader" in found
    offsets = found.pop("__consumer_offsets")  # the broker's own: its config sets both
    assert offsets[:2] == (3, "2"), offsets
    wrong = {n: got for n, got in found.items() if got != (3, "2", "DYNAMIC_TOPIC_CONFIG")}
    assert not wrong, f"topics without RF 3 and a topic-level min.insync.replicas=2: {wrong}"
    print(
        "\none of three brokers killed: "
        + json.dumps(
            {
                **result,
                "killed_node": victim,
                "leaders_before": dict(leaders),
                "applied_per_s_before": speed,
                "applied_per_s_first_5s_after": meter.rate(t_kill, t_kill + 5),
                "kill_to_half_speed_s": meter.back_to_speed(t_kill, speed),
                "topics_checked": len(found),
            }
        )
    )
