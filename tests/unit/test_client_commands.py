"""Client commands (erase, replay) against the wrong Kafka or the wrong app id: they fail
fast naming KAFKA_BOOTSTRAP_SERVERS, and never create another app's internal topics."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest

from stream_app.cli import main
from stream_app.kafka import topics
from stream_app.settings import load_settings


def _refusing_address() -> str:
    """A local port nobody listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"127.0.0.1:{port}"


@pytest.mark.parametrize("command", [["erase", "u1"], ["replay", "events.jsonl"]])
def test_a_client_command_that_cannot_reach_kafka_says_which_variable_to_set(
    command: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "events.jsonl").write_text("")
    address = _refusing_address()
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", address)
    start = time.monotonic()
    assert main(command) == 2
    assert time.monotonic() - start < topics.CONNECT_TIMEOUT + 5  # not kafka-python's 30 s
    err = capsys.readouterr().err
    assert f"cannot reach Kafka at {address}" in err and "KAFKA_BOOTSTRAP_SERVERS" in err


class _Admin:
    """Records what ensure_topics asks the broker for; the broker holds ``existing``."""

    created: list[str] = []

    def __init__(self, **_: Any) -> None:
        pass

    def list_topics(self) -> list[str]:
        return []

    def create_topics(self, new: list[Any], timeout_ms: int) -> None:
        self.created.extend(t.name for t in new)

    def describe_topics(self, names: list[str]) -> list[dict[str, Any]]:
        return [{"name": n, "partitions": [0]} for n in names if n in self.created]

    def close(self) -> None:
        pass


def test_client_commands_create_no_internal_topic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(topics, "KafkaAdminClient", _Admin)
    settings = load_settings(app_id="an-app-that-does-not-exist", topic_partitions=1)
    _Admin.created = []
    topics.ensure_topics(settings, internal=False)
    assert settings.topic_erasure in _Admin.created
    assert not [t for t in _Admin.created if t.startswith(settings.app_id)]
    # The worker and `stream-app topics` do create them (with the replication settings).
    _Admin.created = []
    topics.ensure_topics(settings)
    assert topics.internal_topics(settings) <= set(_Admin.created)
