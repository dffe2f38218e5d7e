"""Large state on RocksDB: a worker with STREAM_APP_STORE=rocksdb:// tracks many users
(LARGE_STATE_USERS; `make test-large` runs 1,000,000) with resident memory that does not
grow with the states, which live on disk; only the deadline index (one heap entry per user) stays in
memory. The same worker restarted on its data directory is ready again without replaying
the changelog from the start: its recovery (Faust's own log tables of where reading starts
and where the changelog ends) reads at most 1% of the records the changelog holds."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaProducer

from tests.integration.conftest import Worker, wait_for

# make test runs 100,000 users (about a minute); `make test-large` runs the million.
USERS = int(os.environ.get("LARGE_STATE_USERS", "100000"))


def rss(worker: Worker) -> int:
    status = Path(f"/proc/{worker.proc.pid}/status").read_text()
    return 1024 * next(int(x.split()[1]) for x in status.splitlines() if x.startswith("VmRSS"))


def recovery_table(log: str, title: str) -> dict[int, int]:
    """partition -> offset from the last log table Faust's recovery printed under
    ``title`` ("Highwater - Active", "Reading Starts At - Active")."""
    at = log.rfind(title)
    rows: dict[int, int] = {}
    for line in log[at:].splitlines()[1:] if at >= 0 else []:
        cells = [c.strip() for c in re.split(r"[|\u2502]", line)[1:-1]]
        if len(cells) == 3 and cells[1].isdigit():
            rows[int(cells[1])] = int(cells[2])
        elif rows:
            break
    return rows


def handled(worker: Worker) -> float:
    return worker.metric("churn_events_total") + worker.metric("churn_events_duplicate_total")


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_a_million_users_on_rocksdb_in_bounded_memory(
    start_worker: Callable[..., Worker], kafka_bootstrap: str
) -> None:
    worker = start_worker(store="rocksdb://", state_cache_users="20000", log_level="warning")
    wait_for(lambda: worker.request("/ready")[0] == 200, 90, "/ready")
    topic = worker.env["STREAM_APP_TOPIC_CLICKSTREAM"]
    producer = KafkaProducer(
        bootstrap_servers=kafka_bootstrap.split(","), linger_ms=50, batch_size=1 << 20
    )
    t0 = 1_767_225_600  # 2026-01-01: one event per user, one second apart
    for i in range(USERS):
        uid = f"big-{i:07d}"
        ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0 + i // 50))
        value = json.dumps(
            {"event_id": f"e{i}", "user_id": uid, "event_type": "page_view", "ts": ts}
        ).encode()
        producer.send(topic, key=uid.encode(), value=value)
    producer.flush()
    producer.close()

    samples: list[tuple[float, int]] = []
    marks = [USERS // 4, USERS // 2, 3 * USERS // 4, USERS]
    deadline = time.monotonic() + 1800
    while marks:
        n = handled(worker)
        if n >= marks[0]:
            samples.append((n, rss(worker)))
            marks.pop(0)
            continue
        assert worker.alive() and time.monotonic() < deadline, f"stuck at {n} of {USERS}"
        time.sleep(1.0)
    # From half-way on: by then RocksDB's memtables (2 x 8 MiB per partition) are full
    # and flush to disk, so what still grows is what stays in memory per user.
    (n1, r1), (n4, r4) = samples[1], samples[-1]
    per_user = (r4 - r1) / (n4 - n1)
    print(
        f"\nrocksdb: {USERS} users, RSS {r1 / 2**20:.0f} -> {r4 / 2**20:.0f} MiB, "
        f"{per_user:.0f} bytes per added user; samples {samples}"
    )
    # The state (about 1.5 KB of JSON a user) is on disk; what stays in memory per user is
    # the deadline index entry and the bounded caches, a few hundred bytes (249 at 1M).
    # The memory store grows by about 8.5 KB per user on the same measure (bench-live).
    assert per_user < 1000, f"{per_user:.0f} bytes of resident memory per added user"

    status, body = worker.request(f"/users/big-{USERS - 1:07d}")
    assert status == 200 and body["user_id"] == f"big-{USERS - 1:07d}"

    # Restart on the same data directory: RocksDB keeps the states and the changelog
    # offset it holds, so recovery reads only what came after.
    worker.stop()
    started = time.monotonic()
    # (log level info: the recovery tables are info lines)
    again = start_worker(like=worker, data_dir=worker.env["STREAM_APP_DATA_DIR"], log_level="info")
    wait_for(lambda: again.request("/ready")[0] == 200, 600, "/ready after restart")
    warm = time.monotonic() - started
    log = again.log.read_text(errors="replace")
    ends = recovery_table(log, "Highwater - Active")
    starts = recovery_table(log, "Reading Starts At - Active")
    assert set(ends) == set(starts) == {0, 1, 2, 3}, (ends, starts, again.log)
    held = sum(end + 1 for end in ends.values())  # changelog records (offsets from 0)
    replayed = sum(max(0, ends[p] - starts[p]) for p in ends)
    print(
        f"rocksdb warm restart with {USERS} users: ready in {warm:.1f}s, "
        f"{replayed} of {held} changelog records read (start {starts}, end {ends})"
    )
    assert held >= USERS  # every user's state is in the changelog...
    assert replayed <= held // 100  # ...and the restart read (almost) none of it
    status, body = again.request(f"/users/big-{0:07d}")
    assert status == 200
