"""Against a broker that takes only SCRAM-SHA-512 logins on its SASL_PLAINTEXT listener (one
Kafka of this module's own, users created at format time):

- with the right credentials, `stream-app topics`, `replay`, `worker` (scores, serves /ready,
  its learner publishes a model) and `erase` (the worker carries it out) all work;
- with a wrong password, each command fails fast with one line naming the SASL settings,
  no traceback, and a non-zero status (the worker does not start, so neither does its
  learner);
- over SASL_SSL (the same logins over TLS, a CA the harness made), the worker scores and
  learns and the CLI works."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stream_app.cli import main as cli_main
from stream_app.settings import load_settings
from tests.conftest import _localkafka
from tests.integration.conftest import (
    FAULT_SETTINGS,
    SHORT_LEARNING,
    Worker,
    WorkerPool,
    read_to_end,
    wait_for,
)

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("KAFKA_BOOTSTRAP_SERVERS")),
    reason="needs the local harness's SASL listener",
)

USER, PASSWORD = "churn", "churn-secret-42"
SASL = {
    "kafka_security_protocol": "SASL_PLAINTEXT",
    "kafka_sasl_mechanism": "SCRAM-SHA-512",
    "kafka_sasl_username": USER,
}
# A refused login must be reported well before the clients' own 30 s timeouts.
FAIL_FAST_S = 20.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    started = _localkafka().start(
        tmp_path_factory.mktemp("kafka-sasl"), brokers=1, sasl_users={USER: PASSWORD}
    )
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def pool(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerPool]:
    workers = WorkerPool(cluster.sasl_bootstrap, tmp_path_factory)
    yield workers
    workers.stop_all()


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short file whose labels resolve within it (2-day horizon over 10 days)."""
    path = tmp_path_factory.mktemp("sasl-events") / "events.jsonl"
    args = ["generate", "--users", "300", "--days", "10", "--seed", "5", "--out", str(path)]
    assert cli_main([*args, "--start", "2026-02-01T00:00:00Z"]) == 0
    return path


@pytest.fixture(scope="module")
def worker(pool: WorkerPool) -> Worker:
    return pool.start(kafka_sasl_password=PASSWORD, **SASL, **SHORT_LEARNING, **FAULT_SETTINGS)


def cli(
    env: dict[str, str], *args: str, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream_app.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def with_password(env: dict[str, str], password: str) -> dict[str, str]:
    return {**env, "STREAM_APP_KAFKA_SASL_PASSWORD": password}


def test_every_command_works_with_the_right_credentials(
    worker: Worker, cluster: Any, events: Path
) -> None:
    env = worker.env
    topics = cli(env, "topics")
    assert topics.returncode == 0, topics.stderr
    assert json.loads(topics.stdout)[env["STREAM_APP_TOPIC_CLICKSTREAM"]] == 4

    wait_for(lambda: worker.request("/ready")[0] == 200, 90, "/ready over SASL")
    replay = cli(env, "replay", str(events))
    assert replay.returncode == 0, replay.stderr
    sent = json.loads(replay.stdout.strip().splitlines()[-1])["sent"]
    assert sent == len(events.read_text().splitlines())

    def taken() -> float:
        names = ("churn_events_total", "churn_events_duplicate_total", "churn_events_invalid_total")
        return sum(worker.metric(n) for n in names)

    wait_for(lambda: taken() >= sent, 180, "the worker to take every event", every=1)
    wait_for(
        lambda: worker.metric("churn_model_snapshots_published_total") > 0,
        90,
        "the learner to publish a model over SASL",
    )
    labels = worker.metric("churn_model_labels_total")
    assert labels > 0

    user = json.loads(events.read_text().splitlines()[0])["user_id"]
    assert worker.request(f"/users/{user}")[0] == 200
    erase = cli(env, "erase", user, "--requested-by", "sasl-test")
    assert erase.returncode == 0, erase.stderr
    request_id = json.loads(erase.stdout)["request_id"]
    settings = load_settings(
        kafka_bootstrap_servers=cluster.sasl_bootstrap,
        kafka_sasl_password=PASSWORD,
        **SASL,
    )

    def audited() -> bool:
        msgs = read_to_end(
            cluster.sasl_bootstrap, env["STREAM_APP_TOPIC_ERASURE_AUDIT"], settings=settings
        )
        return any(json.loads(m.value)["request_id"] == request_id for m in msgs)

    wait_for(audited, 60, "the erasure's audit record", every=1)
    assert worker.request(f"/users/{user}")[0] == 404
    print(
        f"\nSASL/SCRAM-SHA-512: {sent} events replayed and taken, {labels:.0f} labels learned, "
        f"{worker.metric('churn_model_snapshots_published_total'):.0f} snapshot(s), "
        "one user erased and audited"
    )


@pytest.mark.parametrize(
    "args",
    [["topics"], ["replay", "EVENTS"], ["erase", "u000001"], ["worker"]],
    ids=["topics", "replay", "erase", "worker"],
)
def test_a_wrong_password_fails_fast_with_one_line_naming_the_settings(
    worker: Worker, events: Path, args: list[str]
) -> None:
    env = with_password(worker.env, "not-the-password")
    argv = [str(events) if a == "EVENTS" else a for a in args]
    t0 = time.monotonic()
    proc = cli(env, *argv, timeout=60)
    took = time.monotonic() - t0
    output = (proc.stdout + proc.stderr).strip()
    print(f"\n{args[0]}: exit {proc.returncode} after {took:.1f} s: {output}")
    assert proc.returncode != 0
    assert "Traceback" not in output
    assert len(output.splitlines()) == 1, output
    assert "STREAM_APP_KAFKA_SASL_PASSWORD" in output and "SCRAM-SHA-512" in output
    assert took < FAIL_FAST_S, f"{took:.1f} s to report a refused login"
    assert worker.alive()  # the running worker is not disturbed


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the harness makes its CA with openssl")
def test_the_same_over_tls_sasl_ssl(
    cluster: Any, events: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """SASL_SSL: the same logins over TLS, the brokers' CA from STREAM_APP_KAFKA_SSL_CAFILE;
    the worker scores and learns, `topics` and `replay` work, a wrong password is refused."""
    tls = WorkerPool(cluster.sasl_ssl_bootstrap, tmp_path_factory)
    try:
        worker = tls.start(
            kafka_sasl_password=PASSWORD,
            **{**SASL, "kafka_security_protocol": "SASL_SSL"},
            kafka_ssl_cafile=str(cluster.ca_file),
            **SHORT_LEARNING,
            **FAULT_SETTINGS,
        )
        env = worker.env
        wait_for(lambda: worker.request("/ready")[0] == 200, 90, "/ready over SASL_SSL")
        assert cli(env, "topics").returncode == 0
        replay = cli(env, "replay", str(events))
        assert replay.returncode == 0, replay.stderr
        sent = json.loads(replay.stdout.strip().splitlines()[-1])["sent"]
        wait_for(
            lambda: worker.metric("churn_events_total") >= sent * 0.95,
            180,
            "the worker to apply the events over SASL_SSL",
            every=1,
        )
        wait_for(
            lambda: worker.metric("churn_model_snapshots_published_total") > 0,
            90,
            "the learner to publish a model over SASL_SSL",
        )
        refused = cli(with_password(env, "not-the-password"), "topics", timeout=60)
        assert refused.returncode != 0
        assert "SASL_SSL login" in refused.stderr and "Traceback" not in refused.stderr
    finally:
        tls.stop_all()
