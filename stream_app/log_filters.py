"""Log lines that read as failures at start but are not: demoted to INFO, with why.

aiokafka logs ``[ERROR] Group Coordinator Request failed: [Error 15]
GroupCoordinatorNotAvailableError`` when a consumer group looks up its coordinator before
the broker has one ready (a new group, a fresh broker, a coordinator moving): it retries
by itself a moment later ("Discovered coordinator"). Every start logged it, and an on-call
engineer reading the log could not tell it from a real fault. The filter demotes it for
its first minute only: a coordinator that stays unavailable longer is a real problem and
is logged as an ERROR again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

COORDINATOR_LOGGER = "aiokafka.consumer.group_coordinator"
BENIGN = "GroupCoordinatorNotAvailableError"
NOTE = (
    " (retriable: the broker has no coordinator ready for the group yet, usual at start; "
    "the consumer retries)"
)


class CoordinatorAtStart(logging.Filter):
    """Demote the coordinator lookup errors of the first ``grace`` seconds after the first
    one to INFO, keeping the message and saying why it is benign."""

    def __init__(self, grace: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.grace = grace
        self.clock = clock
        self.first: float | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and BENIGN in record.getMessage():
            now = self.clock()
            if self.first is None:
                self.first = now
            if now - self.first <= self.grace:
                # args=(), not None: mode's formatter turns None into (None,) and fails.
                record.msg, record.args = record.getMessage() + NOTE, ()
                record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def install() -> None:
    """Add the filter to aiokafka's coordinator logger once (Faust's consumer, the
    learner's and model sync's all log there)."""
    logger = logging.getLogger(COORDINATOR_LOGGER)
    if not any(isinstance(f, CoordinatorAtStart) for f in logger.filters):
        logger.addFilter(CoordinatorAtStart())
