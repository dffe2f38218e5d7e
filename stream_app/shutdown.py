"""A worker's stop finishes within STREAM_APP_SHUTDOWN_TIMEOUT, and a broker outage cannot
flood its log.

Why: a worker sent SIGTERM while its broker was gone kept running for 12 minutes at half a
core, its Kafka clients logging "Unable connect to node" about 1,400 times a second, until
it was killed with -9. Faust's graceful stop waits on the broker (final commits, the
group's leave, the producer's flush) with no overall bound. Here:

- :class:`StopDeadline` starts a timer thread at the first stop request (SIGTERM, SIGINT,
  the stall watchdog's SIGTERM, or a crash). If the process is still alive when it fires,
  it writes one last log line naming the setting and leaves with :data:`EXIT_STOP_TIMEOUT`.
  A thread, not a task: the event loop may be what is stuck.
- :class:`RepeatFilter`, on every handler of the root logger, lets the first of a repeated
  warning or error (same text) through and drops its repeats for ``window`` seconds; the
  next one after that carries "(repeated N times in the last M s)".

``bounded_worker(settings)`` returns the Faust Worker class that does both; create_app
passes it as ``Worker=``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import faust

log = logging.getLogger(__name__)

# Non-zero, distinct from a crash's 1 and a configuration error's 2: "stopped, but not
# cleanly" (state written since the last flush may be redone by the next owner).
EXIT_STOP_TIMEOUT = 3


class StopDeadline:
    """Exit the process ``timeout`` seconds after :meth:`arm`, unless it exited before."""

    def __init__(
        self,
        timeout: float,
        exit: Callable[[int], Any] = os._exit,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeout = timeout
        self._exit = exit
        self._clock = clock
        self._timer: threading.Timer | None = None
        self._armed_at = 0.0
        self._reason = ""
        self._lock = threading.Lock()

    @property
    def armed(self) -> bool:
        return self._timer is not None

    def arm(self, reason: str) -> None:
        """Start the countdown (once: a second signal does not extend it)."""
        with self._lock:
            if self._timer is not None:
                return
            self._armed_at, self._reason = self._clock(), reason
            self._timer = threading.Timer(self.timeout, self.expire)
            self._timer.name = "stop-deadline"
            self._timer.daemon = True
            self._timer.start()
        log.info(
            "stopping (%s): at most %.0f s (STREAM_APP_SHUTDOWN_TIMEOUT)", reason, self.timeout
        )

    def expire(self) -> None:
        """The bound passed: one clear last line, then leave without waiting for anything
        (no atexit handlers, no thread joins: those are what could hang)."""
        took = self._clock() - self._armed_at
        record = log.makeRecord(
            log.name,
            logging.CRITICAL,
            __file__,
            0,
            "graceful stop (%s) did not finish within %.0f s "
            "(STREAM_APP_SHUTDOWN_TIMEOUT); exiting with status %d after %.1f s",
            (self._reason, self.timeout, EXIT_STOP_TIMEOUT, took),
            None,
        )
        # Take every root handler's lock first and keep it until the exit, so that no other
        # thread logs after this line; a handler stuck writing (a full pipe) is skipped
        # after 2 s rather than waited for.
        held = [
            h for h in logging.getLogger().handlers if h.lock is None or h.lock.acquire(timeout=2.0)
        ]
        for handler in held:
            try:
                handler.emit(record)  # not handle(): no filter may drop this line
                handler.flush()
            except Exception:  # noqa: BLE001, S110 - exiting anyway; nothing to report to
                pass
        if not held:
            os.write(2, (record.getMessage() + "\n").encode())
        self._exit(EXIT_STOP_TIMEOUT)


class RepeatFilter(logging.Filter):
    """Rate-limits repeated warnings and errors: per (logger, level, message text), the
    first in each ``window`` seconds passes, with the count of those dropped before it.
    INFO and below pass untouched (start-up and rebalance lines repeat per partition)."""

    def __init__(
        self,
        window: float = 10.0,
        max_keys: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.window = window
        self.max_keys = max_keys
        self._clock = clock
        # key -> [window start, dropped in this window]
        self._seen: OrderedDict[tuple[str, int, str], list[float]] = OrderedDict()
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        # The formatted text, not the template: "partition 3 is stuck" and "partition 5 is
        # stuck" are two facts; a reconnect error repeats word for word.
        key = (record.name, record.levelno, record.getMessage())
        now = self._clock()
        with self._lock:
            entry = self._seen.get(key)
            if entry is not None and now - entry[0] < self.window:
                entry[1] += 1
                return False
            if entry is not None and entry[1]:
                # The formatted text with the count (args consumed: no second formatting).
                record.msg = (
                    f"{key[2]} (repeated {int(entry[1])} times in the last {now - entry[0]:.0f} s)"
                )
                record.args = ()
            self._seen[key] = [now, 0]
            self._seen.move_to_end(key)
            while len(self._seen) > self.max_keys:
                self._seen.popitem(last=False)
        return True


def install_filter(logger: logging.Logger, repeat: RepeatFilter) -> None:
    """Put ``repeat`` on every handler of ``logger`` (a logger's own filters would miss
    the records its children propagate to it)."""
    for handler in logger.handlers:
        if repeat not in handler.filters:
            handler.addFilter(repeat)


def bounded_worker(timeout: float, window: float = 10.0) -> type[faust.Worker]:
    """A Faust Worker class whose stop is bounded by ``timeout`` seconds and whose log
    rate-limits repeated warnings (``window`` seconds)."""
    deadline = StopDeadline(timeout)
    repeat = RepeatFilter(window)

    class BoundedWorker(faust.Worker):
        stop_deadline = deadline

        def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
            super().on_setup_root_logger(logger, level)
            install_filter(logger, repeat)

        def _schedule_shutdown(self, signal: Any) -> None:
            deadline.arm(getattr(signal, "name", str(signal)))
            super()._schedule_shutdown(signal)

        def on_worker_shutdown(self) -> None:
            # Every way out of the worker's run passes here (a crash too).
            deadline.arm("worker shutting down")
            super().on_worker_shutdown()

    return BoundedWorker
