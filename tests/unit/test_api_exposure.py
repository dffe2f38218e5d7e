"""A worker whose HTTP API listens beyond loopback needs STREAM_APP_API_TOKEN: without it,
and without the explicit (unsafe) STREAM_APP_API_ALLOW_OPEN, it refuses to start with a
message naming the setting, before it talks to any broker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stream_app.errors import ConfigError
from stream_app.settings import load_settings
from stream_app.web import is_loopback, require_token_beyond_loopback


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "::1", "[::1]", "localhost"])
def test_loopback_addresses(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "10.1.2.3", "worker", "example.com"])  # noqa: S104
def test_everything_else_may_be_reached_from_outside(host: str) -> None:
    assert not is_loopback(host)


def test_open_host_without_token_is_refused_naming_the_setting() -> None:
    settings = load_settings(web_host="0.0.0.0")  # noqa: S104
    with pytest.raises(ConfigError) as err:
        require_token_beyond_loopback(settings)
    text = str(err.value)
    assert "STREAM_APP_API_TOKEN" in text and "'0.0.0.0'" in text
    assert "STREAM_APP_API_ALLOW_OPEN=true" in text  # the opt-out is named, as unsafe


@pytest.mark.parametrize(
    ("overrides", "serves_open"),
    [
        ({"web_host": "127.0.0.1"}, False),
        ({"web_host": "0.0.0.0", "api_token": "t0k3n"}, False),  # noqa: S104
        ({"web_host": "0.0.0.0", "api_allow_open": "true"}, True),  # noqa: S104
    ],
)
def test_loopback_a_token_or_the_opt_out_may_start(
    overrides: dict[str, str], serves_open: bool
) -> None:
    assert require_token_beyond_loopback(load_settings(**overrides)) is serves_open


def test_the_worker_command_refuses_at_once_without_a_traceback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_APP_")}
    env.update(
        KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",  # no broker: the check comes first
        STREAM_APP_WEB_HOST="0.0.0.0",  # noqa: S104
        STREAM_APP_DATA_DIR=str(tmp_path),
    )
    done = subprocess.run(
        [sys.executable, "-m", "stream_app.cli", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("stream-app: error: STREAM_APP_WEB_HOST='0.0.0.0'")
    assert "set STREAM_APP_API_TOKEN" in done.stderr
