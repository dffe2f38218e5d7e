"""A worker stops within STREAM_APP_SHUTDOWN_TIMEOUT even when its broker is gone.

Seen before: a worker sent SIGTERM while its only broker was down kept running for 12
minutes at half a core, logging "Unable connect to node" ~1,400 times a second. Here the
broker (a Kafka of this module's own) is stopped under a running worker; the worker must
exit within the bound plus a margin for interpreter exit, with a last log line that says
why, and its log over the whole stretch must stay short."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import _localkafka
from tests.integration.conftest import WorkerPool, wait_for

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("KAFKA_BOOTSTRAP_SERVERS")),
    reason="stops a broker of the local harness, not of an external cluster",
)

BOUND = 8.0  # STREAM_APP_SHUTDOWN_TIMEOUT in this test (the default is 20 s)
DOWN = 20.0  # how long the worker runs without its broker before the SIGTERM
# Interpreter exit after the bound: a few tenths of a second; more under the shared load.
MARGIN = 4.0
MAX_LOG_LINES = 300  # from the broker's stop to the worker's exit


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    started = _localkafka().start(tmp_path_factory.mktemp("kafka"), brokers=1)
    try:
        yield started
    finally:
        started.stop()


def test_sigterm_with_the_broker_up_is_a_clean_stop_well_within_the_bound(
    cluster: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The deadline only cuts a stop that cannot finish: an ordinary one exits 0."""
    pool = WorkerPool(cluster.bootstrap, tmp_path_factory)
    try:
        worker = pool.start(shutdown_timeout=str(BOUND))
        wait_for(lambda: worker.get("/ready"), 60, "the worker ready")
        t0 = time.monotonic()
        worker.proc.send_signal(signal.SIGTERM)
        code = worker.proc.wait(BOUND + MARGIN)
        took = time.monotonic() - t0
    finally:
        pool.stop_all()
    text = worker.log.read_text(errors="replace")
    print(f"\nstop with the broker up: exit {code} after {took:.1f} s")
    assert code == 0, text.splitlines()[-20:]
    assert took < BOUND
    assert "STREAM_APP_SHUTDOWN_TIMEOUT); exiting" not in text


# Runs last in this module: it stops the module's broker for good.
def test_sigterm_with_the_broker_gone_exits_within_the_bound(
    cluster: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    pool = WorkerPool(cluster.bootstrap, tmp_path_factory)
    try:
        worker = pool.start(shutdown_timeout=str(BOUND))
        wait_for(lambda: worker.get("/ready"), 60, "the worker ready")
        lines_before = len(worker.log.read_bytes().splitlines())
        cluster.stop_node(1)
        cpu0, t_down = cpu_seconds(worker.proc.pid), time.monotonic()
        time.sleep(DOWN)
        cpu_while_down = (cpu_seconds(worker.proc.pid) - cpu0) / (time.monotonic() - t_down)
        assert worker.alive(), f"the worker died with its broker; log {worker.log}"
        t0 = time.monotonic()
        worker.proc.send_signal(signal.SIGTERM)
        try:
            code = worker.proc.wait(BOUND + MARGIN)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"still running {BOUND + MARGIN:.0f} s after SIGTERM; log {worker.log}:\n"
                + "\n".join(worker.log.read_text(errors="replace").splitlines()[-20:])
            )
        took = time.monotonic() - t0
    finally:
        pool.stop_all()
    lines = worker.log.read_text(errors="replace").splitlines()
    stretch = len(lines) - lines_before
    print(
        "\nstop with the broker gone: "
        + json.dumps(
            {
                "exit_code": code,
                "stop_s": round(took, 1),
                "bound_s": BOUND,
                "down_s": DOWN,
                "log_lines_while_down_and_stopping": stretch,
                "cpu_cores_while_down": round(cpu_while_down, 2),
                "last_line": lines[-1],
            }
        )
    )
    assert code != 0, "a stop cut short by the bound is not a clean exit"
    assert "STREAM_APP_SHUTDOWN_TIMEOUT" in lines[-1], lines[-20:]
    # The rate limiter rewrites records: they must still format (Faust's formatter too).
    assert "--- Logging error ---" not in "\n".join(lines)
    assert stretch < MAX_LOG_LINES, "\n".join(lines[lines_before : lines_before + 60])
