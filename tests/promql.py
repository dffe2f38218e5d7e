"""The metric names the deploy files query: Grafana dashboard targets, Prometheus alert rules
and the Prometheus config. Shared by the unit test (names the worker registers) and the
integration test (series a running worker exports)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy/grafana/dashboards/churn-stream.json"
PROMETHEUS = ROOT / "deploy/prometheus/prometheus.yml"
ALERTS = ROOT / "deploy/prometheus/alerts.yml"

# Series Prometheus makes itself, not the worker.
PROMETHEUS_OWN = {"up"}
# PromQL aggregations, functions and keywords the deploy files may use; any other word in an
# expression must be a metric name (a typo in a function name fails the test too).
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "topk", "bottomk", "quantile", "stddev",
    "rate", "irate", "increase", "delta", "deriv", "idelta", "histogram_quantile",
    "time", "vector", "scalar", "abs", "clamp_min", "clamp_max", "absent", "absent_over_time",
    "max_over_time", "min_over_time", "avg_over_time", "changes", "resets", "timestamp",
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset",
}  # fmt: skip


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, expression) of every query in the dashboard, rows' panels included."""
    dash = json.loads(DASHBOARD.read_text())
    out = []

    def walk(panels: list[dict[str, object]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):  # type: ignore[attr-defined]
                out.append((str(panel["title"]), str(target["expr"])))
            walk(panel.get("panels", []))  # type: ignore[arg-type]

    walk(dash["panels"])
    return out


def alert_exprs() -> list[tuple[str, str]]:
    """(rule name, expression) of every rule in the rule files prometheus.yml loads."""
    config = yaml.safe_load(PROMETHEUS.read_text())
    out = []
    for name in config.get("rule_files", []):
        rules = yaml.safe_load((PROMETHEUS.parent / name).read_text())
        for group in rules["groups"]:
            for rule in group["rules"]:
                out.append((rule.get("alert") or rule.get("record"), rule["expr"]))
    return out


def config_names() -> set[str]:
    """Metric names in the Prometheus config itself (relabelling, say)."""
    return set(re.findall(r"\bchurn_[a-z0-9_]+", PROMETHEUS.read_text()))


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges, Grafana's $__rate_interval
    text = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", text
    )  # label lists
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text))
    return {w for w in words if w not in PROMQL_WORDS}


def all_names() -> dict[str, set[str]]:
    """Every metric name the deploy files use -> where it is used."""
    where: dict[str, set[str]] = {}
    for source, exprs in (("dashboard", dashboard_exprs()), ("alerts", alert_exprs())):
        for title, expr in exprs:
            for name in metric_names(expr):
                where.setdefault(name, set()).add(f"{source}: {title}")
    for name in config_names():
        where.setdefault(name, set()).add("prometheus.yml")
    return where
