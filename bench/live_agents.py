"""The yardsticks of `make bench-live`, each run as its own process on one core.

- ``ceiling``: an aiokafka consumer doing ``json.loads`` only: what reading and decoding
  the topic costs, with no framework.
- ``floor``: a Faust agent that only counts messages: Faust's own per-message cost.
- ``naive``: the straightforward Faust version of the job, written the obvious way:
  ``json.loads``, a per-user table update (which writes the changelog), and a River
  logistic regression's ``predict_proba_one`` per event.

Each consumes ``--n`` messages of ``--topic`` from a fresh consumer group and prints one
JSON line: {"events": n, "seconds": first message to last processed, "events_per_second"}.
Not part of the product; kept to measure the product against.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
import uuid
from typing import Any


def _report(n: int, t0: float, t1: float, out: str | None) -> None:
    line = json.dumps(
        {"events": n, "seconds": round(t1 - t0, 4), "events_per_second": round(n / (t1 - t0))}
    )
    if out:
        with open(out, "w") as f:
            f.write(line + "\n")
    print(line, flush=True)


async def _ceiling(args: argparse.Namespace) -> None:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        args.topic,
        bootstrap_servers=args.bootstrap,
        group_id=f"bench-ceiling-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=True,
    )
    await consumer.start()
    n, t0, loads = 0, 0.0, json.loads
    try:
        while n < args.n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for records in batch.values():
                if not n and records:
                    t0 = time.perf_counter()
                for rec in records:
                    loads(rec.value)
                n += len(records)
    finally:
        t1 = time.perf_counter()
        await consumer.stop()
    _report(n, t0, t1, args.out)


def _faust_app(args: argparse.Namespace, name: str) -> Any:
    import faust

    os.makedirs(args.datadir, exist_ok=True)
    app = faust.App(
        f"bench-{name}-{uuid.uuid4().hex[:8]}",
        broker=f"kafka://{args.bootstrap}",
        store="memory://",
        datadir=os.path.join(args.datadir, name),
        web_enabled=False,
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        topic_partitions=args.partitions,
    )
    topic = app.topic(args.topic, key_type=bytes, value_type=bytes, value_serializer="raw")
    return app, topic


def _run_faust(app: Any) -> None:
    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn", "--without-web"]
    app.main()


def _floor(args: argparse.Namespace) -> None:
    app, topic = _faust_app(args, "floor")
    state = {"n": 0, "t0": 0.0}

    @app.agent(topic)
    async def count(stream: Any) -> None:
        async for _ in stream:
            if not state["n"]:
                state["t0"] = time.perf_counter()
            state["n"] += 1
            if state["n"] == args.n:
                _report(args.n, state["t0"], time.perf_counter(), args.out)
                os._exit(0)

    _run_faust(app)


def _naive(args: argparse.Namespace) -> None:
    from river import linear_model

    app, topic = _faust_app(args, "naive")
    users = app.Table("users", default=dict, partitions=args.partitions)
    model = linear_model.LogisticRegression()
    # A few steps so the model has weights: a prediction from an untouched model is cheap.
    for i in range(50):
        model.learn_one({"events": i, "purchases": i % 3, "gap_hours": 1.0}, i % 2 == 0)
    state = {"n": 0, "t0": 0.0}

    @app.agent(topic)
    async def score(stream: Any) -> None:
        async for event in stream.events():
            if not state["n"]:
                state["t0"] = time.perf_counter()
            doc = json.loads(event.value)
            uid = doc["user_id"]
            ts = doc["ts"]
            user = users[uid]
            user["events"] = user.get("events", 0) + 1
            if doc["event_type"] == "purchase":
                user["purchases"] = user.get("purchases", 0) + 1
            prev = user.get("last_ts")
            user["last_ts"] = ts
            features = {
                "events": math.log1p(user["events"]),
                "purchases": user.get("purchases", 0),
                "gap_hours": 0.0 if prev is None else 1.0,
            }
            user["p"] = model.predict_proba_one(features)[True]
            users[uid] = user
            state["n"] += 1
            if state["n"] == args.n:
                _report(args.n, state["t0"], time.perf_counter(), args.out)
                os._exit(0)

    _run_faust(app)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=["ceiling", "floor", "naive"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--datadir", default="out/bench-live/agents")
    parser.add_argument("--out", help="also write the JSON line here")
    args = parser.parse_args()
    if args.kind == "ceiling":
        asyncio.run(_ceiling(args))
    elif args.kind == "floor":
        _floor(args)
    else:
        _naive(args)


if __name__ == "__main__":
    main()
