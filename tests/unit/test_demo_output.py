"""What `make demo` prints for an operator: export lines that reach a kept demo."""

from __future__ import annotations

import importlib.util
import os
import shlex
import sys
from pathlib import Path
from types import ModuleType

import pytest

from stream_app.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


def _demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("demo_tool", ROOT / "tools/demo.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["demo_tool"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_export_lines_give_a_client_the_kept_workers_kafka_app_and_topics(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    demo = _demo()
    for var in [v for v in os.environ if v.startswith("STREAM_APP_")]:
        monkeypatch.delenv(var)
    env, _ = demo.worker_env("127.0.0.1:39092", tmp_path, "ab12cd34")
    env["STREAM_APP_API_TOKEN"] = "do-not-print-me"  # noqa: S105 (a test value)
    lines = demo.export_lines(env)
    assert all(line.startswith("export ") for line in lines)
    assert not any("do-not-print-me" in line for line in lines)
    # A client that pastes them sees the worker's brokers, app id and topic names.
    for line in lines:
        name, _, value = line.removeprefix("export ").partition("=")
        monkeypatch.setenv(name, shlex.split(value)[0])
    client = load_settings()
    worker_settings = {
        k.removeprefix("STREAM_APP_").lower(): v
        for k, v in env.items()
        if k.startswith("STREAM_APP_")
    }
    worker = load_settings(**worker_settings)
    assert client.kafka_bootstrap_servers == "127.0.0.1:39092"
    assert client.app_id == worker.app_id == "demo-ab12cd34"
    for name in ("clickstream", "interventions", "erasure", "topic_partitions"):
        field = name if name.startswith("topic_") else f"topic_{name}"
        assert getattr(client, field) == getattr(worker, field), field
