"""Same input, same result: the Faust worker and the offline evaluator run the same core, so a
sorted file produces the same training examples (features, p, label) in both."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from stream_app.agents.score import partition_for
from stream_app.cli import main
from stream_app.offline import EvaluateOptions, evaluate
from stream_app.producer import ChurnProducer, replay
from stream_app.settings import load_settings
from tests.integration.conftest import Worker, consume_all, wait_for

# Short horizon and intervals so a 12-day file resolves plenty of labels; a huge
# min_labels_ready keeps both drivers on the cold-start prior (the live learner is a
# separate process whose timing is not part of the contract).
ENGINE = {
    "horizon": "2d",
    "snapshot_interval": "12h",
    "rescore_after": "1d,3d",
    "allowed_lateness": "1h",
    "min_labels_ready": "1000000000",
}


def test_worker_and_offline_driver_agree(
    start_worker: Callable[..., Worker], kafka_bootstrap: str, tmp_path: Path
) -> None:
    path = tmp_path / "events.jsonl"
    assert (
        main(
            [
                "generate",
                "--users",
                "60",
                "--days",
                "12",
                "--seed",
                "11",
                "--start",
                "2026-03-01T00:00:00Z",
                "--out",
                str(path),
            ]
        )
        == 0
    )
    settings = load_settings(**ENGINE, eval_warmup=0)
    preds = tmp_path / "pred.jsonl"
    run = evaluate(path, settings, EvaluateOptions(predictions_out=preds, keep_labels=True))
    offline = [json.loads(x) for x in preds.read_text().splitlines()]
    offline_features = {
        (lab.user_id, round(lab.scored_at, 3)): lab.features for lab in run.resolved
    }

    worker = start_worker(**ENGINE)
    partitions = int(worker.env["STREAM_APP_TOPIC_PARTITIONS"])
    with ChurnProducer(kafka_bootstrap, worker.env["STREAM_APP_TOPIC_CLICKSTREAM"]) as prod:
        sent = replay(path, prod)["sent"]
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

    expected = sorted(
        (r["user_id"], round(ts(r["ts"]), 3), r["label"], r["p"])
        for r in offline
        if final(r["user_id"], ts(r["ts"]))
    )
    assert len(expected) > 100 and any(e[2] == 1 for e in expected)

    def finals(msgs: list[Any]) -> list[tuple[str, float, int, float]]:
        rows = (json.loads(x.value) for x in msgs)
        return sorted(
            (m["user_id"], round(ts(m["scored_at"]), 3), m["label"], m["p"])
            for m in rows
            if final(m["user_id"], ts(m["scored_at"]))
        )

    # The topic also holds examples that are not final on every partition: read until all
    # the final ones are there (or the timeout), then compare.
    msgs = consume_all(
        kafka_bootstrap,
        worker.env["STREAM_APP_TOPIC_TRAINING"],
        timeout=90,
        done=lambda m: len(finals(m)) >= len(expected),
    )
    assert finals(msgs) == expected
    # and the feature vectors the learner trains on are the same, value for value
    compared = 0
    for x in msgs:
        m = json.loads(x.value)
        key = (m["user_id"], round(ts(m["scored_at"]), 3))
        if final(m["user_id"], ts(m["scored_at"])):
            assert m["features"] == offline_features[key], key
            compared += 1
    assert compared == len(expected)
