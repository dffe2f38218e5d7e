"""docker-compose.yml, checked without a Docker engine: it parses, its build context and
mounted files exist, its ports and environment match the settings, and the worker, bound
to 0.0.0.0, gets its API token from a git-ignored env file that a make target creates."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream_app.errors import ConfigError
from stream_app.metrics import Metrics
from stream_app.settings import Settings, load_settings
from stream_app.web import require_token_beyond_loopback
from tests import promql

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


def test_the_worker_is_healthy_only_when_ready(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    port = worker["environment"]["STREAM_APP_WEB_PORT"]
    check = " ".join(worker["healthcheck"]["test"])
    assert f"127.0.0.1:{port}/ready" in check  # 503 until recovered: urlopen raises
    assert compose["services"]["prometheus"]["depends_on"]["worker"] == {
        "condition": "service_healthy"
    }


def test_topics_and_worker_share_one_app_id_from_one_place(compose: dict[str, Any]) -> None:
    services = compose["services"]
    app_id = services["worker"]["environment"]["STREAM_APP_APP_ID"]
    assert services["topics"]["environment"]["STREAM_APP_APP_ID"] == app_id
    assert (ROOT / "docker-compose.yml").read_text().count("STREAM_APP_APP_ID:") == 1


def test_the_worker_has_a_canonical_url_others_can_reach(compose: dict[str, Any]) -> None:
    env = compose["services"]["worker"]["environment"]
    assert env["STREAM_APP_CANONICAL_URL"] == f"http://worker:{env['STREAM_APP_WEB_PORT']}"


def test_dockerfile_defaults_match_settings() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for name in ("STREAM_APP_DATA_DIR", "STREAM_APP_WEB_HOST", "STREAM_APP_WEB_PORT"):
        assert name in text and name in _env_names()
    assert 'ENTRYPOINT ["stream-app"]' in text


def _exported_sample_names() -> set[str]:
    """Sample names the worker's registry can export (counters as _total, histograms as
    _bucket, _count and _sum)."""
    names = set()
    for family in Metrics().registry.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_count", "_sum")}
        else:
            names.add(family.name)
    return names


def test_the_promql_parser_finds_metric_names_only() -> None:
    expr = (
        'sum by (reason) (rate(churn_events_invalid_total{reason!="x"}[$__rate_interval])) '
        "/ ignoring(le) group_left sum(churn_risk_score_count[5m]) and on() time() - "
        "max(churn_model_snapshot_timestamp_seconds) > 3600"
    )
    assert promql.metric_names(expr) == {
        "churn_events_invalid_total",
        "churn_risk_score_count",
        "churn_model_snapshot_timestamp_seconds",
    }


def test_dashboard_and_alerts_query_only_metrics_the_worker_exports() -> None:
    used = promql.all_names()
    assert len(promql.dashboard_exprs()) >= 20 and len(promql.alert_exprs()) >= 5
    unknown = {
        name: where
        for name, where in used.items()
        if name not in _exported_sample_names() | promql.PROMETHEUS_OWN
    }
    assert not unknown, f"queries name metrics the worker does not export: {unknown}"


def test_dashboard_covers_what_an_operator_watches() -> None:
    used = set(promql.all_names())
    for name in (
        "churn_events_total",  # throughput
        "churn_consumer_lag_messages",
        "churn_events_invalid_total",  # DLQ by reason
        "churn_risk_score_bucket",  # score distribution
        "churn_model_version",
        "churn_model_rolling_auc",
        "churn_model_rolling_logloss",
        "churn_interventions_total",
        "churn_uplift",
        "churn_circuit_open",
        "churn_budget_exhausted_total",
        "churn_bandit_posterior_mean",  # what the bandit learned (issue #20)
    ):
        assert any(name in promql.metric_names(e) for _, e in promql.dashboard_exprs()), name
        assert name in used


def test_alert_rules_are_loaded_and_mounted(compose: dict[str, Any]) -> None:
    names = {name for name, _ in promql.alert_exprs()}
    assert {
        "ChurnConsumerLagGrowing",
        "ChurnDeadLetterRateHigh",
        "ChurnCircuitOpen",
        "ChurnModelNotReady",
        "ChurnNoSnapshot",
    } <= names
    mounts = compose["services"]["prometheus"]["volumes"]
    assert "./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in mounts


def _env_file(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")
    return {k.strip(): v.strip() for k, v in pairs}


def _worker_settings(
    compose: dict[str, Any], env_file: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """The settings the compose worker's container gets: environment, then env_file."""
    for name, value in {**compose["services"]["worker"]["environment"], **env_file}.items():
        monkeypatch.setenv(name, value)
    return load_settings()


def test_worker_reads_its_token_from_a_required_git_ignored_env_file(
    compose: dict[str, Any],
) -> None:
    worker = compose["services"]["worker"]
    assert worker["env_file"] == [{"path": "./deploy/worker.env", "required": True}]
    assert "STREAM_APP_API_TOKEN" not in worker["environment"]  # never in the compose file
    assert "/deploy/worker.env" in (ROOT / ".gitignore").read_text().splitlines()
    example = _env_file((ROOT / "deploy/worker.env.example").read_text())
    assert set(example) == {"STREAM_APP_API_TOKEN"} and set(example) <= _env_names()


def test_the_compose_worker_starts_only_with_a_token(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    example = _env_file((ROOT / "deploy/worker.env.example").read_text())
    with pytest.raises(ConfigError, match="STREAM_APP_API_TOKEN"):  # the example unfilled
        require_token_beyond_loopback(_worker_settings(compose, example, monkeypatch))
    filled = {"STREAM_APP_API_TOKEN": "x" * 43}
    assert require_token_beyond_loopback(_worker_settings(compose, filled, monkeypatch)) is False


def test_make_writes_a_random_private_token(tmp_path: Path) -> None:
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / "deploy").mkdir()
    tokens = []
    for _ in range(2):
        subprocess.run(["make", "-s", "deploy/worker.env"], cwd=tmp_path, check=True)
        written = tmp_path / "deploy/worker.env"
        assert written.stat().st_mode & 0o077 == 0  # readable by its owner only
        tokens.append(_env_file(written.read_text())["STREAM_APP_API_TOKEN"])
        written.unlink()
    assert all(len(t) >= 40 for t in tokens) and tokens[0] != tokens[1]
