"""The command line a newcomer reads first: a version, defaults in every help, where the
configuration comes from, and the effective settings with secrets masked."""

from __future__ import annotations

import json

import pytest

from stream_app.cli import COMMANDS, build_parser, main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("stream-app ")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_explains_itself(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    assert "KAFKA_BOOTSTRAP_SERVERS" in text and "STREAM_APP_" in text
    sub = build_parser()._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
    for action in sub._actions:
        if action.dest != "help":
            assert action.help, f"{command} {action.dest} has no help"


def test_defaults_are_shown(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = capsys.readouterr().out
    assert "(default: 1000)" in text and "(default: 60)" in text and "(default: 7)" in text


def test_topics_help_names_the_topics(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["topics", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "churn.training" in text and "churn.model" in text and "decisions" in text


def test_config_prints_the_effective_settings_with_secrets_masked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STREAM_APP_API_TOKEN", "hunter2-secret")
    monkeypatch.setenv("STREAM_APP_TOPIC_PARTITIONS", "12")
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    settings = json.loads(out)
    assert settings["topic_partitions"] == 12
    assert "hunter2-secret" not in out and set(settings["api_token"]) == {"*"}
