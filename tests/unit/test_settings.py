"""Settings from the environment: what each kind of value parses to, and what a bad value
or a bad combination says (the setting's environment variable, the rule, the value)."""

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


def error(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    """The message load_settings raises with ``env`` set (it must raise)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    return str(err.value)


# --- parsing ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30d", 2592000),
        ("12h", 43200),
        ("15m", 900),
        ("45s", 45),
        ("2w", 1209600),
        ("90", 90),
        ("1.5h", 5400),
        (" 7d ", 604800),
        ("0", 0),
        (2.5, 2.5),
    ],
)
def test_durations(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1y", "not a duration: '1y'"),
        ("-1d", "not a duration: '-1d'"),
        ("d", "not a duration: 'd'"),
        ("", "not a duration: ''"),
        (-5, "cannot be negative"),
        (True, "a duration is a number of seconds"),
        (None, "not a duration: None"),
    ],
)
def test_bad_durations_say_why(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration(value)


def test_environment_values_are_parsed_by_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "KAFKA_BOOTSTRAP_SERVERS": "k1:9092, k2:9093",  # the name every Kafka tool uses
        "STREAM_APP_HORIZON": "14d",
        "STREAM_APP_RESCORE_AFTER": "7d, 1d,,3d",  # sorted, blanks skipped
        "STREAM_APP_TOPIC_PARTITIONS": "12",
        "STREAM_APP_STALL_EXIT": "false",
        "STREAM_APP_TOPIC_MIN_INSYNC_REPLICAS": "",  # empty = unset
        "STREAM_APP_API_TOKEN": "t0ken",
        "STREAM_APP_LEARNING_RATE": "0.25",
    }.items():
        monkeypatch.setenv(name, value)
    s = load_settings()
    assert s.bootstrap_url == "kafka://k1:9092;kafka://k2:9093"
    assert s.horizon == 14 * 86400
    assert s.rescore_after == (86400.0, 3 * 86400.0, 7 * 86400.0)
    assert s.topic_partitions == 12 and s.stall_exit is False and s.learning_rate == 0.25
    assert s.topic_min_insync_replicas is None
    assert s.api_token is not None and s.api_token.get_secret_value() == "t0ken"
    assert "t0ken" not in repr(s)  # a secret never shows in a repr or a log line


def test_overrides_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_APP_WEB_PORT", "7000")
    assert load_settings(web_port=7001).web_port == 7001


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        s.horizon = 1.0  # type: ignore[misc]


# --- one bad value: the variable, then the rule ------------------------------------------
@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        (
            "KAFKA_BOOTSTRAP_SERVERS",
            "nohostport",
            "invalid setting kafka_bootstrap_servers (KAFKA_BOOTSTRAP_SERVERS): expected "
            "host:port[,host:port...], got 'nohostport'",
        ),
        (
            "KAFKA_BOOTSTRAP_SERVERS",
            "k1:99999",
            "(KAFKA_BOOTSTRAP_SERVERS): expected host:port[,host:port...], got 'k1:99999'",
        ),
        (
            "STREAM_APP_HORIZON",
            "soon",
            "invalid setting horizon (STREAM_APP_HORIZON): not a duration: 'soon' (use e.g. "
            "30d, 12h, 15m, 45s or seconds)",
        ),
        (
            "STREAM_APP_TOPIC_PARTITIONS",
            "0",
            "invalid setting topic_partitions (STREAM_APP_TOPIC_PARTITIONS): Input should be "
            "greater than or equal to 1",
        ),
        (
            "STREAM_APP_WEB_PORT",
            "70000",
            "(STREAM_APP_WEB_PORT): Input should be less than or equal to 65535",
        ),
        ("STREAM_APP_LOG_LEVEL", "loud", "(STREAM_APP_LOG_LEVEL): Input should be 'debug'"),
        ("STREAM_APP_STALL_EXIT", "maybe", "(STREAM_APP_STALL_EXIT): Input should be a valid"),
        ("STREAM_APP_STALL_TIMEOUT", "10s", "greater than or equal to 30"),
        ("STREAM_APP_HALF_LIVES", "1d,x", "(STREAM_APP_HALF_LIVES): not a duration: 'x'"),
        (
            "STREAM_APP_API_TOKEN",
            "   ",
            "invalid setting api_token (STREAM_APP_API_TOKEN): a blank token would let anyone in",
        ),
    ],
)
def test_a_bad_value_names_its_variable_and_the_rule(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, message: str
) -> None:
    text = error(monkeypatch, **{var: value})
    assert message in text
    assert "Value error" not in text  # pydantic's prefix says nothing to an operator


def test_every_bad_value_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    text = error(monkeypatch, STREAM_APP_HORIZON="soon", STREAM_APP_TOPIC_PARTITIONS="0")
    assert len(text.splitlines()) == 2
    assert "STREAM_APP_HORIZON" in text and "STREAM_APP_TOPIC_PARTITIONS" in text


# --- rules across settings: the message names every variable involved --------------------
@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"STREAM_APP_TOPIC_MIN_INSYNC_REPLICAS": "3"},
            "invalid settings: STREAM_APP_TOPIC_MIN_INSYNC_REPLICAS (3) cannot exceed "
            "STREAM_APP_TOPIC_REPLICATION (1): no write could succeed",
        ),
        (
            {"STREAM_APP_HALF_LIVES": ",,"},
            "invalid settings: STREAM_APP_HALF_LIVES must list at least one duration",
        ),
        (
            {"STREAM_APP_HORIZON": "1d", "STREAM_APP_RESCORE_AFTER": "400d"},
            "invalid settings: STREAM_APP_RESCORE_AFTER deadlines must be within a year past "
            "STREAM_APP_HORIZON",
        ),
        (
            {"STREAM_APP_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
            "needs STREAM_APP_KAFKA_SASL_USERNAME and STREAM_APP_KAFKA_SASL_PASSWORD",
        ),
        (
            {"STREAM_APP_KAFKA_SSL_CAFILE": "/no/such/ca.pem"},
            "invalid settings: STREAM_APP_KAFKA_SSL_CAFILE: no such file: /no/such/ca.pem",
        ),
    ],
)
def test_a_bad_combination_names_the_variables(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    text = error(monkeypatch, **env)
    assert message in text
    assert "STREAM_APP_SETTINGS" not in text  # no such variable


def test_a_certificate_needs_its_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cert = tmp_path / "client.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    text = error(monkeypatch, STREAM_APP_KAFKA_SSL_CERTFILE=str(cert))
    assert "set STREAM_APP_KAFKA_SSL_CERTFILE and _KEYFILE together" in text
    key = tmp_path / "client.key"
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    monkeypatch.setenv("STREAM_APP_KAFKA_SSL_KEYFILE", str(key))
    assert load_settings().kafka_ssl_keyfile == key


def test_config_prints_durations_the_way_they_are_written(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STREAM_APP_HORIZON", "14d")
    monkeypatch.setenv("STREAM_APP_RESCORE_AFTER", "12h,3d")
    assert main(["config"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["horizon"] == "14d" and shown["eval_warmup"] == "30d"
    assert shown["rescore_after"] == "12h,3d" and shown["state_flush_interval"] == "1s"
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
