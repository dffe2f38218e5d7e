"""A CRM-side consumer of churn-stream's interventions, with kafka-python and nothing else.

Run it beside a worker:

    pip install kafka-python
    KAFKA_BOOTSTRAP_SERVERS=localhost:9092 python examples/consume_interventions.py

What it shows (docs/events.md, "Consuming the outputs"):

- a consumer group (``--group``): run several copies and Kafka splits the partitions;
- offsets committed only after the batch is handled: a crash redelivers, never loses;
- dedupe on ``intervention_id``. Redelivery reaches back a bounded way: a worker that
  crashed re-sends the interventions of its last uncommitted events (seconds of traffic,
  the same ids) once it or another worker has taken the partition over (tens of seconds
  to minutes later, or when a stopped worker comes back), and this consumer, after a
  crash, re-reads what it had handled but not committed (one batch). Ids are remembered
  for ``--dedup-window`` (1 h by default) of this process's wall clock; a
  redelivery that arrives later than that is caught by the staleness check or, in a real
  CRM, by a unique key on intervention_id in its database;
- skip stale interventions: ``ts`` is the event time of the score (the user's moment),
  ``decided_at`` the worker's wall clock when it decided. A backfill or a lagging worker
  gives old ``ts`` with a fresh ``decided_at``; a lagging consumer gives both old. Either
  way a message about a moment older than ``--max-age`` (48 h) is skipped, not sent;
- right to erasure downstream: records on ``user.erasure.audit`` say a user was
  forgotten; delete them in the CRM and skip interventions decided for them before it.

Every handled intervention is printed as one JSON line (where a CRM call would go).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import OrderedDict
from datetime import datetime
from typing import Any

from kafka import KafkaConsumer


def _epoch(text: str | None) -> float | None:
    return None if text is None else datetime.fromisoformat(text).timestamp()


class Handler:
    """What to do with each record; no Kafka here, so the rules are easy to follow."""

    def __init__(self, max_age: float, dedup_window: float, dedup_max: int = 1_000_000) -> None:
        self.max_age = max_age
        self.dedup_window = dedup_window
        self.dedup_max = dedup_max
        self.seen: OrderedDict[str, float] = OrderedDict()  # intervention_id -> first seen
        self.erased: dict[str, float] = {}  # user_id -> erased_at
        self.counts = {"sent": 0, "duplicate": 0, "stale": 0, "erased": 0, "invalid": 0}

    def intervention(self, value: bytes, now: float) -> dict[str, Any] | None:
        """The intervention to act on, or None (and a count saying why not)."""
        try:
            msg = json.loads(value)
            iid, user, ts = msg["intervention_id"], msg["user_id"], _epoch(msg["ts"]) or 0.0
            decided = _epoch(msg.get("decided_at")) or ts  # absent before decided_at existed
        except (ValueError, KeyError, TypeError):
            self.counts["invalid"] += 1  # never crash on one bad record
            return None
        self._forget_old(now)
        if iid in self.seen:
            self.counts["duplicate"] += 1
            return None
        self.seen[iid] = now
        if user in self.erased and decided <= self.erased[user]:
            self.counts["erased"] += 1
            return None
        if now - ts > self.max_age:
            self.counts["stale"] += 1
            return None
        self.counts["sent"] += 1
        return dict(msg)

    def audit(self, value: bytes) -> str | None:
        """An erasure audit record: remember the user as erased (and, in a real CRM,
        delete what it holds about them); returns the user id."""
        try:
            msg = json.loads(value)
            user, erased_at = msg["user_id"], _epoch(msg["erased_at"])
        except (ValueError, KeyError, TypeError):
            self.counts["invalid"] += 1
            return None
        assert erased_at is not None
        self.erased[user] = max(erased_at, self.erased.get(user, 0.0))
        return str(user)

    def _forget_old(self, now: float) -> None:
        while self.seen and (
            len(self.seen) > self.dedup_max
            or next(iter(self.seen.values())) < now - self.dedup_window
        ):
            self.seen.popitem(last=False)


def run(consumer: KafkaConsumer, handler: Handler, audit_topic: str, idle_exit: float) -> None:
    """Poll, handle, then commit: a crash between the two redelivers the batch."""
    idle_since = time.monotonic()
    while True:
        batch = consumer.poll(timeout_ms=500)
        if not batch:
            if idle_exit and time.monotonic() - idle_since > idle_exit:
                return
            continue
        idle_since = time.monotonic()
        # Audit records first: an erasure must win over an intervention in the same batch.
        for tp, records in sorted(batch.items(), key=lambda kv: kv[0].topic != audit_topic):
            for record in records:
                if tp.topic == audit_topic:
                    user = handler.audit(record.value)
                    if user is not None:
                        print(json.dumps({"erased": user}), flush=True)
                elif (msg := handler.intervention(record.value, time.time())) is not None:
                    print(json.dumps({"send": msg}), flush=True)  # the CRM call goes here
        consumer.commit()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092")
    )
    parser.add_argument("--group", default="crm-interventions", help="consumer group id")
    parser.add_argument("--topic", default="retention.interventions")
    parser.add_argument("--audit-topic", default="user.erasure.audit")
    parser.add_argument("--max-age", type=float, default=48 * 3600.0, help="seconds")
    parser.add_argument("--dedup-window", type=float, default=3600.0, help="seconds")
    parser.add_argument("--idle-exit", type=float, default=0.0, help="stop after N idle s")
    args = parser.parse_args()
    consumer = KafkaConsumer(
        args.topic,
        args.audit_topic,
        bootstrap_servers=args.bootstrap.split(","),
        group_id=args.group,
        enable_auto_commit=False,  # commit after handling, in run()
        auto_offset_reset="earliest",
    )
    handler = Handler(args.max_age, args.dedup_window)
    try:
        run(consumer, handler, args.audit_topic, args.idle_exit)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
        print(json.dumps({"counts": handler.counts}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
