"""The command line a newcomer reads first: a version, defaults in every help, where the
configuration comes from, and the effective settings with secrets masked."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from stream_app.cli import COMMANDS, build_parser, main
from stream_app.kafka.topics import topic_specs
from stream_app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


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


def _subparser(command: str) -> argparse.ArgumentParser:
    choices = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    parser: argparse.ArgumentParser = choices[command]
    return parser


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_with_a_default_shows_it(command: str) -> None:
    """Zeros included: `generate --malformed` defaults to 0.0, which once compared equal to
    False and hid its default."""
    parser = _subparser(command)
    text = " ".join(parser.format_help().split())
    for action in parser._actions:
        if action.option_strings and action.nargs != 0 and action.default is not None:
            assert f"(default: {action.default})" in text, f"{command} {action.dest}"


@pytest.mark.parametrize(
    ("command", "option"),
    [("worker", "--web-port"), ("evaluate", "--horizon"), ("evaluate", "--warmup")],
)
def test_options_that_fall_back_to_a_setting_name_it_and_its_default(
    command: str, option: str
) -> None:
    text = " ".join(_subparser(command).format_help().split())
    after = text.split(option, 2)[-1]
    assert "(default: STREAM_APP_" in after.split(" --")[0]


def test_the_demo_shows_its_defaults() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools/demo.py"), "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    text = " ".join(done.stdout.split())
    assert "(default: 2000)" in text and "(default: 60)" in text


def _created_topics() -> list[str]:
    """Every topic `stream-app topics` creates, as the docs spell them (<app_id>-...)."""
    settings = Settings()
    return [
        name.replace(settings.app_id, "<app_id>", 1) if name.startswith(settings.app_id) else name
        for name in topic_specs(settings)
    ]


def test_topics_help_names_every_topic_it_creates(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["topics", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in _created_topics():
        assert name in text, f"topics --help omits {name}"


@pytest.mark.parametrize("doc", ["README.md", "docs/reliability.md"])
def test_the_docs_name_the_erasure_topics_with_the_others(doc: str) -> None:
    text = " ".join((ROOT / doc).read_text().split())
    assert "`user.erasure` and `user.erasure.audit`" in text or (
        "`user.erasure`, `user.erasure.audit`" in text
    ), doc


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
