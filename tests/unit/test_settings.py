from __future__ import annotations

import pytest

from stream_app.errors import ConfigError
from stream_app.settings import load_settings, parse_duration


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    s = load_settings()
    assert s.kafka_bootstrap_servers == "localhost:9092"
    assert s.horizon == 30 * 86400


def test_env_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9093")
    monkeypatch.setenv("STREAM_APP_HORIZON", "14d")
    monkeypatch.setenv("STREAM_APP_RESCORE_AFTER", "2d,1d")
    s = load_settings()
    assert s.bootstrap_url == "kafka://k1:9092;kafka://k2:9093"
    assert s.horizon == 14 * 86400
    assert s.rescore_after == (86400.0, 172800.0)


@pytest.mark.parametrize(
    ("var", "value", "name"),
    [
        ("KAFKA_BOOTSTRAP_SERVERS", "nohostport", "KAFKA_BOOTSTRAP_SERVERS"),
        ("STREAM_APP_HORIZON", "soon", "STREAM_APP_HORIZON"),
        ("STREAM_APP_TOPIC_PARTITIONS", "0", "STREAM_APP_TOPIC_PARTITIONS"),
        ("STREAM_APP_LOG_LEVEL", "loud", "STREAM_APP_LOG_LEVEL"),
    ],
)
def test_bad_value_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, name: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=name):
        load_settings()


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        s.horizon = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 2592000), ("12h", 43200), ("15m", 900), ("45s", 45), ("2w", 1209600), ("90", 90)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
