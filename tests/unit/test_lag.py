"""Consumer lag per owned partition, from end, committed and beginning offsets."""

from __future__ import annotations

from stream_app.agents.lag import lag_by_partition


def test_lag_is_end_minus_committed_for_the_owned_partitions_only() -> None:
    end = {0: 100, 1: 50, 2: 70}
    committed = {0: 90, 1: 50, 2: 10}
    assert lag_by_partition({0, 1}, end, committed, {}) == {0: 10, 1: 0}


def test_a_partition_without_a_commit_lags_by_all_it_retains() -> None:
    assert lag_by_partition({3}, {3: 500}, {}, {3: 120}) == {3: 380}


def test_an_owned_partition_the_broker_did_not_answer_for_is_left_out() -> None:
    assert lag_by_partition({0, 9}, {0: 5}, {0: 5}, {0: 0}) == {0: 0}


def watchdog(stall_exit: bool = False) -> object:
    from types import SimpleNamespace

    from stream_app.agents.lag import LagService
    from stream_app.metrics import Metrics
    from stream_app.settings import load_settings

    deps = SimpleNamespace(
        settings=load_settings(stall_timeout="60s", stall_exit=stall_exit), metrics=Metrics()
    )
    service = LagService.__new__(LagService)
    service.app = SimpleNamespace(rebalancing=False)
    service.deps = deps  # type: ignore[assignment]
    service._progress, service._stalled = {}, set()
    return service


def test_the_watchdog_flags_a_partition_behind_with_no_commit_for_the_timeout() -> None:
    w = watchdog()
    assert w.watch({0: 10, 1: 10}, {0: 5, 1: 5}, 0.0) == set()  # type: ignore[attr-defined]
    assert w.watch({0: 20, 1: 20}, {0: 5, 1: 9}, 30.0) == set()  # type: ignore[attr-defined]
    # partition 0: behind and no commit for 60 s; partition 1 moved at 30 s
    assert w.watch({0: 30, 1: 30}, {0: 5, 1: 9}, 61.0) == {0}  # type: ignore[attr-defined]
    gauge = w.deps.metrics.partition_stalled  # type: ignore[attr-defined]
    assert gauge.labels("0")._value.get() == 1 and gauge.labels("1")._value.get() == 0
    # it moves again: no longer stalled
    assert w.watch({0: 1, 1: 30}, {0: 40, 1: 9}, 70.0) == set()  # type: ignore[attr-defined]
    assert gauge.labels("0")._value.get() == 0


def test_no_lag_or_a_rebalance_is_not_a_stall() -> None:
    w = watchdog()
    w.watch({0: 0}, {0: 5}, 0.0)  # type: ignore[attr-defined]
    assert w.watch({0: 0}, {0: 5}, 500.0) == set()  # type: ignore[attr-defined]
    w.watch({1: 10}, {1: 5}, 0.0)  # type: ignore[attr-defined]
    w.app.rebalancing = True  # type: ignore[attr-defined]
    assert w.watch({1: 10}, {1: 5}, 500.0) == set()  # type: ignore[attr-defined]
    w.app.rebalancing = False  # type: ignore[attr-defined]
    assert w.watch({1: 10}, {1: 5}, 501.0) == set()  # type: ignore[attr-defined]  # restarted


def test_a_stall_stops_the_worker_gracefully_when_told_to(monkeypatch: object) -> None:
    import os
    import signal

    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: sent.append((pid, sig)))  # type: ignore[attr-defined]
    w = watchdog(stall_exit=True)
    w.watch({2: 10}, {2: 5}, 0.0)  # type: ignore[attr-defined]
    w.watch({2: 10}, {2: 5}, 61.0)  # type: ignore[attr-defined]
    assert sent == [(os.getpid(), signal.SIGTERM)]
