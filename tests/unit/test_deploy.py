"""docker-compose.yml, checked without a Docker engine: it parses, its build context and
mounted files exist, and its ports and environment match the settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream_app.metrics import Metrics
from stream_app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(doc, dict)
    return doc


def _env_names() -> set[str]:
    names = {"KAFKA_BOOTSTRAP_SERVERS"}
    names |= {f"STREAM_APP_{n.upper()}" for n in Settings.model_fields}
    return names


def test_services_and_images(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"kafka", "topics", "worker", "prometheus", "grafana"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    for name in ("prometheus", "grafana"):
        image = services[name]["image"]
        assert ":" in image and not image.endswith(":latest"), "pin image versions"


def test_build_context_and_mounts_exist(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        if "build" in svc:
            ctx = ROOT / (
                svc["build"] if isinstance(svc["build"], str) else svc["build"]["context"]
            )
            assert (ctx / "Dockerfile").is_file(), name
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("./"):
                assert (ROOT / src).exists(), f"{name} mounts missing {src}"


def test_worker_env_names_are_real_settings(compose: dict[str, Any]) -> None:
    known = _env_names()
    for name in ("worker", "topics"):
        env = compose["services"][name]["environment"]
        unknown = set(env) - known
        assert not unknown, f"{name} sets unknown variables {unknown}"
        Settings.model_validate(
            {
                k.removeprefix("STREAM_APP_").lower(): v
                for k, v in env.items()
                if k.startswith("STREAM_APP_")
            }
        )


def test_ports_line_up(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    port = worker["environment"]["STREAM_APP_WEB_PORT"]
    assert f"{port}:{port}" in worker["ports"]
    assert worker["environment"]["STREAM_APP_WEB_HOST"] == "0.0.0.0"  # noqa: S104
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    assert prom["scrape_configs"][0]["static_configs"][0]["targets"] == [f"worker:{port}"]
    bootstrap = worker["environment"]["KAFKA_BOOTSTRAP_SERVERS"]
    host, _, kport = bootstrap.partition(":")
    kafka_env = compose["services"]["kafka"]["environment"]
    assert f"PLAINTEXT://{host}:{kport}" in kafka_env["KAFKA_ADVERTISED_LISTENERS"]


def test_dockerfile_defaults_match_settings() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for name in ("STREAM_APP_DATA_DIR", "STREAM_APP_WEB_HOST", "STREAM_APP_WEB_PORT"):
        assert name in text and name in _env_names()
    assert 'ENTRYPOINT ["stream-app"]' in text


def test_dashboard_queries_use_existing_metrics() -> None:
    dash = json.loads((ROOT / "deploy/grafana/dashboards/churn-stream.json").read_text())
    exported = {m.name for m in Metrics().registry.collect()}
    for panel in dash["panels"]:
        for target in panel["targets"]:
            used = [n for n in exported if n in target["expr"]]
            assert used, f"panel {panel['title']!r} queries no metric the worker exports"
