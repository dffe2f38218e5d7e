from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from stream_app.cli import main
from stream_app.errors import ConfigError
from stream_app.settings import (
    Settings,
    duration_fields,
    format_duration,
    load_settings,
    parse_duration,
    unknown_variables,
)


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


def test_config_prints_durations_the_way_they_are_written(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STREAM_APP_HORIZON", "14d")
    monkeypatch.setenv("STREAM_APP_RESCORE_AFTER", "12h,3d")
    assert main(["config"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["horizon"] == "14d" and shown["eval_warmup"] == "30d"
    assert shown["rescore_after"] == "12h,3d" and shown["state_flush_interval"] == "0.5s"
    # What config prints reads back as the same settings.
    for name in duration_fields():
        monkeypatch.setenv(f"STREAM_APP_{name.upper()}", shown[name])
    assert load_settings() == Settings(horizon=14 * 86400, rescore_after="12h,3d")


@pytest.mark.parametrize("seconds", [0.5, 1.0, 45.0, 90.0, 5400.0, 86400.0, 1.5 * 86400, 1e-3])
def test_a_formatted_duration_parses_back_to_itself(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


def test_a_missing_policy_file_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STREAM_APP_POLICY_FILE", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match="STREAM_APP_POLICY_FILE.*no such file"):
        load_settings()
    assert main(["config"]) == 2
    assert "nope.toml" in capsys.readouterr().err


def test_config_checks_the_policy_file_it_points_at(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("[limits]\nno_such_key = 1\n")
    monkeypatch.setenv("STREAM_APP_POLICY_FILE", str(policy))
    assert main(["config"]) == 2
    assert "no_such_key" in capsys.readouterr().err


def test_a_mistyped_variable_warns_naming_the_closest_setting(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("STREAM_APP_HORIZN", "14d")
    monkeypatch.setenv("STREAM_APP_TOPIC_PARTITONS", "4")
    with caplog.at_level(logging.WARNING, logger="stream_app.settings"):
        settings = load_settings()
    assert settings.horizon == 30 * 86400  # ignored, as before: but now said
    text = caplog.text
    assert "STREAM_APP_HORIZN is not a setting" in text and "STREAM_APP_HORIZON?" in text
    assert "did you mean STREAM_APP_TOPIC_PARTITIONS?" in text


def test_known_variables_and_tool_variables_do_not_warn() -> None:
    environ = {"STREAM_APP_HORIZON": "14d", "STREAM_APP_KAFKA_LIBS": "/x", "PATH": "/bin"}
    assert unknown_variables(environ) == []
    assert unknown_variables({"STREAM_APP_ZZZZZZZZZZ": "1"}) == [
        "STREAM_APP_ZZZZZZZZZZ is not a setting and is ignored"
    ]
