"""A log an on-call engineer can read: aiokafka's coordinator lookup error at start is
INFO with the reason it is benign; the same error a minute on is an ERROR again."""

from __future__ import annotations

import io
import logging

import pytest
from mode.utils.logging import ExtensionFormatter

from stream_app.log_filters import COORDINATOR_LOGGER, CoordinatorAtStart, install

MESSAGE = "Group Coordinator Request failed: %s"
ERR = "[Error 15] GroupCoordinatorNotAvailableError"


@pytest.fixture
def coordinator_log() -> logging.Logger:
    logger = logging.getLogger(f"{COORDINATOR_LOGGER}.test")
    logger.filters.clear()
    return logger


def test_the_start_up_coordinator_error_is_info_saying_why(
    coordinator_log: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    now = [100.0]
    coordinator_log.addFilter(CoordinatorAtStart(grace=60.0, clock=lambda: now[0]))
    with caplog.at_level(logging.INFO, logger=coordinator_log.name):
        coordinator_log.error(MESSAGE, ERR)
        now[0] += 30.0
        coordinator_log.error(MESSAGE, ERR)
        now[0] += 31.0  # over a minute after the first: no longer "at start"
        coordinator_log.error(MESSAGE, ERR)
        coordinator_log.error("Group Coordinator Request failed: %s", "[Error 30] Other")
    levels = [(r.levelname, "retriable" in r.getMessage()) for r in caplog.records]
    assert levels == [("INFO", True), ("INFO", True), ("ERROR", False), ("ERROR", False)]
    assert ERR in caplog.records[0].getMessage()
    # The worker's log handler formats with mode's formatter, which rewrites args: the
    # demoted record must still format (args=None once gave "--- Logging error ---").
    text = ExtensionFormatter(stream=io.StringIO()).format(caplog.records[0])
    assert "GroupCoordinatorNotAvailableError (retriable" in text


def test_the_worker_installs_it_once_on_aiokafkas_logger() -> None:
    install()
    install()
    filters = logging.getLogger(COORDINATOR_LOGGER).filters
    assert sum(isinstance(f, CoordinatorAtStart) for f in filters) == 1
