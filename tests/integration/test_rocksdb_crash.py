"""kill -9 a worker on the rocksdb:// store mid-replay and restart it on the same data
directory (a warm restart: RocksDB's own files, then the changelog from their persisted
offsets): the final state, live and in the changelog, equals the offline run.

RocksDB's local copy must never run ahead of the changelog. When it did (the write-back
wrote RocksDB before sending), a restarted worker found states newer than the changelog,
skipped the redelivered events as duplicates, and the changelog, which any other worker
recovers from, kept the older states: compare_with_offline counts those as lost events."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.integration.conftest import (
    FAULT_SETTINGS,
    Traffic,
    Worker,
    compare_with_offline,
    offline_run,
    wait_for,
    wait_until_done,
)


def test_kill_9_on_rocksdb_and_a_warm_restart_lose_nothing(
    start_worker: Callable[..., Worker], kafka_bootstrap: str, tmp_path: Path
) -> None:
    traffic = Traffic.generate(tmp_path / "events.jsonl", 600, 30, seed=47, partitions=4)
    first = start_worker(store="rocksdb://", **FAULT_SETTINGS)
    sent = traffic.send(kafka_bootstrap, first.env["STREAM_APP_TOPIC_CLICKSTREAM"])
    wait_for(lambda: first.metric("churn_events_total") >= sent // 3, 240, "a third applied")
    first.kill()
    second = start_worker(like=first, data_dir=first.env["STREAM_APP_DATA_DIR"])
    wait_until_done(second, traffic, 300)
    duplicates = second.metric("churn_events_duplicate_total")
    compared = compare_with_offline(
        second, kafka_bootstrap, traffic, offline_run(traffic, **FAULT_SETTINGS)
    )
    assert compared["users"] > 550
    print(f"\nrocksdb warm restart after kill -9: {compared}, duplicates skipped {duplicates}")
