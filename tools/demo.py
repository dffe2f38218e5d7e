"""`make demo`: the whole product in about a minute, on this machine, with no Docker.

1. generate five months of synthetic traffic for 1,500 users (with a few broken lines);
2. evaluate it offline: prequential AUC vs a recency-only score, PNG report;
3. start a local Kafka, run the worker, replay the last week of traffic into it (broken lines
   included) and show what the worker counted, what landed in the dead-letter topic and the
   training examples it produced; then stop everything.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
STREAM_APP = [sys.executable, "-m", "stream_app.cli"]


def step(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def run(args: list[str], env: dict[str, str] | None = None) -> str:
    out = subprocess.run(
        [*STREAM_APP, *args], env=env, check=True, capture_output=True, text=True
    ).stdout
    return out.strip().splitlines()[-1] if out.strip() else ""


def metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as r:
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name.startswith("churn_") and not s.name.endswith(("_created", "_bucket")):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=ROOT / "out" / "demo")
    parser.add_argument("--users", type=int, default=1500)
    parser.add_argument("--days", type=int, default=150)
    args = parser.parse_args()
    out: Path = args.dir
    out.mkdir(parents=True, exist_ok=True)
    events = out / "events.jsonl"

    step(f"1/3 generate {args.users} users x {args.days} days -> {events}")
    print(
        run(
            [
                "generate",
                "--users",
                str(args.users),
                "--days",
                str(args.days),
                "--seed",
                "42",
                "--malformed",
                "0.001",
                "--duplicates",
                "0.002",
                "--out",
                str(events),
            ]
        )
    )

    step(f"2/3 offline evaluation (report in {out / 'report'})")
    summary = json.loads(
        run(["evaluate", str(events), "--quiet", "--report-dir", str(out / "report")])
    )
    print(
        f"  events {summary['events']:,}  users {summary['users']:,}  labels "
        f"{summary['labels']:,} ({summary['positives']:,} churned)"
    )
    print(
        f"  AUC {summary['auc']} vs recency-only {summary['auc_recency']}; on labels scored "
        f"by the learned model {summary['auc_learned']} vs {summary['auc_recency_learned']}"
    )
    print(
        f"  {summary['events_per_second']:,} events/s, "
        f"{summary['memory_per_user_bytes']:,} bytes per user"
    )

    step("3/3 live: local Kafka + worker + replay of the last week")
    spec = importlib.util.spec_from_file_location("localkafka", ROOT / "tools/kafka/localkafka.py")
    assert spec and spec.loader
    lk = importlib.util.module_from_spec(spec)
    sys.modules["localkafka"] = lk  # dataclasses look their module up
    spec.loader.exec_module(lk)
    cluster = lk.start(out / "kafka", brokers=1)
    print(
        f"  Kafka {lk.kafka_version()} ready in {cluster.started_seconds:.1f}s at "
        f"{cluster.bootstrap}"
    )
    lines = events.read_text().splitlines()
    week = out / "last-week.jsonl"
    week.write_text("\n".join(lines[-len(lines) // 13 :]) + "\n")
    port = lk.free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("STREAM_APP_")},
        "KAFKA_BOOTSTRAP_SERVERS": cluster.bootstrap,
        "STREAM_APP_WEB_PORT": str(port),
        "STREAM_APP_DATA_DIR": str(out / "worker-data"),
        "STREAM_APP_APP_ID": "demo",
        "STREAM_APP_HORIZON": "2d",
        "STREAM_APP_SNAPSHOT_INTERVAL": "12h",
    }
    worker_log = out / "worker.log"
    worker = subprocess.Popen(
        [*STREAM_APP, "worker"], env=env, stdout=worker_log.open("wb"), stderr=subprocess.STDOUT
    )
    try:
        sent = json.loads(run(["replay", str(week), "--send-invalid"], env=env))
        print(f"  replayed {sent['sent']:,} messages ({sent['invalid']} invalid on purpose)")
        deadline = time.monotonic() + 120
        seen = 0.0
        while time.monotonic() < deadline:
            time.sleep(2)
            try:
                m = metrics(port)
            except OSError:
                continue
            done = sum(
                v
                for (n, _), v in m.items()
                if n
                in (
                    "churn_events_total",
                    "churn_events_invalid_total",
                    "churn_events_duplicate_total",
                )
            )
            if done >= sent["sent"] or (done and done == seen):
                break
            seen = done
        m = metrics(port)
        print(f"  worker metrics (http://127.0.0.1:{port}/metrics):")
        for (name, labels), value in sorted(m.items()):
            if name.endswith("_total") and value:
                lab = ",".join(f"{k}={v}" for k, v in labels)
                print(f"    {name}{{{lab}}} {value:g}")
        print(f"  worker log: {worker_log}")
    finally:
        worker.terminate()
        worker.wait(30)
        cluster.stop()
    step(f"done: open {out / 'report' / 'summary.md'} for the plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
