"""A worker killed without leaving its group (SIGKILL, OOM kill) and started again gets its
partitions back quickly: the group waits for the dead member only for the session timeout."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from tests.integration.conftest import Worker, wait_for


def test_a_killed_worker_rejoins_within_the_session_timeout(
    start_worker: Callable[..., Worker],
) -> None:
    first = start_worker(session_timeout="10")
    wait_for(lambda: (h := first.get("/health")) and json.loads(h)["partitions"], 60, "partitions")
    first.proc.kill()  # no LeaveGroup: the broker still counts the dead member
    first.proc.wait()
    t0 = time.monotonic()
    second = start_worker(like=first)
    wait_for(
        lambda: (h := second.get("/health")) and json.loads(h)["partitions"],
        90,
        "the restarted worker to own partitions",
    )
    rejoin = time.monotonic() - t0
    print(f"\nrejoin after kill: {rejoin:.1f}s")
    # session timeout (10 s) + process start + join; Faust's default session of 60 s: ~60 s
    assert rejoin < 30, f"rejoin took {rejoin:.1f}s"
