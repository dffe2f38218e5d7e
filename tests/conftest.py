"""Shared fixtures: a real Kafka broker (started here unless KAFKA_BOOTSTRAP_SERVERS is set),
uuid-named topics, small event factories."""

from __future__ import annotations

import importlib.util
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
_BROKER_LOGS: list[Path] = []


def _localkafka() -> ModuleType:
    spec = importlib.util.spec_from_file_location("localkafka", ROOT / "tools/kafka/localkafka.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["localkafka"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of a real Kafka: $KAFKA_BOOTSTRAP_SERVERS, or a local KRaft broker
    started for this session from the Maven-fetched jars."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    lk = _localkafka()
    cluster = lk.start(tmp_path_factory.mktemp("kafka"), brokers=1)
    _BROKER_LOGS[:] = cluster.log_files
    print(
        f"\nKafka {lk.kafka_version()} started in {cluster.started_seconds:.1f}s "
        f"at {cluster.bootstrap}; logs: {cluster.log_files}",
        file=sys.stderr,
    )
    try:
        yield cluster.bootstrap
    finally:
        cluster.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and _BROKER_LOGS and item.get_closest_marker("integration"):
        report.sections.append(("kafka broker logs", "\n".join(str(p) for p in _BROKER_LOGS)))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def unique() -> Callable[[str], str]:
    """uuid-suffixed names, so tests never share topics or consumer groups."""
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:10]}"


def make_event(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": uuid.uuid4().hex,
        "user_id": "u1",
        "event_type": "page_view",
        "ts": "2026-01-05T12:00:00Z",
    }
    base.update(overrides)
    return base
