"""Run the real worker (``stream-app worker``) as a subprocess against the real broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import _localkafka

free_port = _localkafka().free_port


def wait_for(cond: Callable[[], Any], timeout: float, what: str, every: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


class Worker:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.port = int(env["STREAM_APP_WEB_PORT"])
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stream_app.cli", "worker"],
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )

    def get(self, path: str) -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return str(r.read().decode())
        except OSError:
            return None

    def request(self, path: str, token: str | None = None) -> tuple[int, Any]:
        """(HTTP status, parsed JSON body) of a GET, with a bearer token if given."""
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}")
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310 (http, loopback)
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a counter/gauge's samples matching ``labels`` (0 when absent)."""
        text = self.get("/metrics") or ""
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    total += sample.value
        return total

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no final commit."""
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def start_worker(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Worker]]:
    workers: list[Worker] = []

    def start(like: Worker | None = None, **settings: str) -> Worker:
        """A new worker; ``like=w`` starts one with w's settings (same app id and topics:
        a restart, or a second member of the consumer group)."""
        tag = uuid.uuid4().hex[:8]
        tmp = tmp_path_factory.mktemp(f"worker-{tag}")
        if like is not None:
            env = {
                **like.env,
                "STREAM_APP_WEB_PORT": str(free_port()),
                "STREAM_APP_DATA_DIR": str(tmp / "data"),
            }
            env.update({f"STREAM_APP_{k.upper()}": v for k, v in settings.items()})
            return _launch(Worker(env, tmp / "worker.log"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_APP_")}
        env.update(
            {
                "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
                "STREAM_APP_APP_ID": f"it-{tag}",
                "STREAM_APP_TOPIC_CLICKSTREAM": f"clickstream-{tag}",
                "STREAM_APP_TOPIC_DLQ": f"clickstream-{tag}.dlq",
                "STREAM_APP_TOPIC_TRAINING": f"training-{tag}",
                "STREAM_APP_TOPIC_MODEL": f"model-{tag}",
                "STREAM_APP_TOPIC_DECISIONS": f"decisions-{tag}",
                "STREAM_APP_TOPIC_INTERVENTIONS": f"interventions-{tag}",
                "STREAM_APP_TOPIC_ERASURE": f"erasure-{tag}",
                "STREAM_APP_TOPIC_ERASURE_AUDIT": f"erasure-{tag}.audit",
                "STREAM_APP_TOPIC_PARTITIONS": "4",
                "STREAM_APP_DATA_DIR": str(tmp / "data"),
                "STREAM_APP_WEB_PORT": str(free_port()),
                "STREAM_APP_LOG_LEVEL": os.environ.get("IT_WORKER_LOG_LEVEL", "info"),
            }
        )
        env.update({f"STREAM_APP_{k.upper()}": v for k, v in settings.items()})
        return _launch(Worker(env, tmp / "worker.log"))

    def _launch(worker: Worker) -> Worker:
        workers.append(worker)
        try:
            wait_for(lambda: not worker.alive() or worker.get("/health"), 60, "worker /health")
            assert worker.alive(), (
                f"worker exited; log: {worker.log}\n{worker.log.read_text()[-3000:]}"
            )
        except BaseException:
            worker.stop()
            raise
        return worker

    yield start
    for w in workers:
        w.stop()


def consume_all(
    bootstrap: str,
    topic: str,
    expect: int = 0,
    timeout: float = 60.0,
    done: Callable[[list[Any]], bool] | None = None,
) -> list[Any]:
    """Read a topic from the beginning until ``done(messages)`` (default: ``expect``
    messages arrived) or the timeout."""
    finished = done or (lambda msgs: len(msgs) >= expect)
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap.split(","),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=1000,
    )
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while not finished(out) and time.monotonic() < deadline:
            for msg in consumer:
                out.append(msg)
                if finished(out):
                    break
    finally:
        consumer.close()
    return out


def read_to_end(bootstrap: str, topic: str, timeout: float = 30.0) -> list[Any]:
    """Every message of ``topic`` up to its end offsets at the time of the call."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap.split(","), enable_auto_commit=False, group_id=None
    )
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out reading {topic} to its end")
            for msgs in consumer.poll(timeout_ms=500).values():
                out.extend(msgs)
        return out
    finally:
        consumer.close()
