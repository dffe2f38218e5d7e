"""The stop deadline and the repeat filter (stream_app/shutdown.py), with fake clocks."""

from __future__ import annotations

import logging
import threading

from stream_app.settings import Settings
from stream_app.shutdown import EXIT_STOP_TIMEOUT, RepeatFilter, StopDeadline, bounded_worker


def record(msg: str, level: int = logging.ERROR, *args: object) -> logging.LogRecord:
    return logging.LogRecord("aiokafka", level, __file__, 1, msg, args, None)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_first_repeat_passes_then_one_line_per_window_with_the_count() -> None:
    clock = Clock()
    repeat = RepeatFilter(window=10.0, clock=clock)
    template = "Unable connect to node with id %s: %s"
    passed = []
    for i in range(1400 * 25):  # 1,400 a second for 25 s
        clock.now = i / 1400
        rec = record(template, logging.ERROR, 1, "refused")
        if repeat.filter(rec):
            passed.append((clock.now, rec.getMessage()))
    assert [t for t, _ in passed] == [0.0, 10.0, 20.0]
    assert passed[0][1] == "Unable connect to node with id 1: refused"
    assert passed[1][1].endswith("(repeated 13999 times in the last 10 s)")


def test_different_messages_and_info_lines_are_not_held_back() -> None:
    clock = Clock()
    repeat = RepeatFilter(window=10.0, clock=clock)
    assert repeat.filter(record("a %s"))
    assert repeat.filter(record("b %s"))
    assert repeat.filter(record("a %s", logging.WARNING))  # another level, another key
    assert all(repeat.filter(record("assigned %s", logging.INFO)) for _ in range(50))
    assert not repeat.filter(record("a %s"))
    # one template, two facts: both are told
    assert repeat.filter(record("partition %d is stuck", logging.ERROR, 3))
    assert repeat.filter(record("partition %d is stuck", logging.ERROR, 5))
    assert not repeat.filter(record("partition %d is stuck", logging.ERROR, 3))


def test_the_filter_keeps_a_bounded_number_of_keys() -> None:
    repeat = RepeatFilter(window=10.0, max_keys=100, clock=Clock())
    for i in range(1000):
        repeat.filter(record(f"message {i}"))
    assert len(repeat._seen) == 100


def test_the_deadline_exits_with_its_status_and_a_last_line_naming_the_setting() -> None:
    exited = threading.Event()
    codes: list[int] = []
    lines: list[str] = []

    blocked: list[bool] = []

    class Keep(logging.Handler):
        def emit(self, rec: logging.LogRecord) -> None:
            lines.append(rec.getMessage())

        def acquire_for_test(self) -> bool:
            got = self.lock.acquire(timeout=0.1) if self.lock else True
            if got and self.lock:
                self.lock.release()
            return not got

    root = logging.getLogger()
    keep = Keep()
    keep.addFilter(lambda rec: False)  # a filter that drops all: the last line still shows
    root.addHandler(keep)

    def fake_exit(code: int) -> None:
        codes.append(code)
        others: list[bool] = []  # can another thread log now? (it must not)
        probe = threading.Thread(target=lambda: others.append(keep.acquire_for_test()))
        probe.start()
        probe.join()
        blocked.extend(others)
        for h in root.handlers:  # expire() holds them until the exit
            h.release()
        exited.set()

    try:
        deadline = StopDeadline(0.2, exit=fake_exit)
        deadline.arm("SIGTERM")
        deadline.arm("SIGINT")  # a second signal does not restart the countdown
        assert exited.wait(5)
    finally:
        root.removeHandler(keep)
    assert codes == [EXIT_STOP_TIMEOUT]
    last = lines[-1]
    assert "STREAM_APP_SHUTDOWN_TIMEOUT" in last and "SIGTERM" in last
    assert "status 3" in last
    assert blocked == [True]


def test_the_worker_class_carries_the_configured_bound() -> None:
    timeout = Settings(shutdown_timeout="7s").shutdown_timeout  # type: ignore[arg-type]
    assert timeout == 7.0
    assert bounded_worker(timeout).stop_deadline.timeout == 7.0  # type: ignore[attr-defined]
