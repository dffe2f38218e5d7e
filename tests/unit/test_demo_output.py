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


def test_the_summary_names_each_auc_by_its_model_key_and_labels(tmp_path: Path) -> None:
    """The run in the issue: the demo said 0.829 (the learned model) while /model
    rolling_auc and churn_model_rolling_auc said 0.801 (the scores served). Both appear,
    each named by the key and gauge it is, on the labels it is measured on."""
    demo = _demo()
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "rolling_auc.png").write_bytes(b"png")
    run = demo.Run(
        tmp_path,
        {"STREAM_APP_ROLLING_WINDOW": "2000"},
        "b:9092",
        {"dlq": "clickstream.dlq", "interventions": "retention.interventions"},
        6066,
    )
    metrics = demo.parse_metrics("churn_model_labels_total 8688\n")
    model = {
        "version": 20,
        "ready": True,
        "n_labels": 8688,
        "metrics": {
            "challenger_auc": 0.829,
            "prior_auc": 0.751,
            "rolling_auc": 0.801,
            "rolling_logloss": 0.316,
        },
    }
    findings = demo.Findings(metrics, model, 10, 5, 0, None, None, 1.0, 60)
    text = "\n".join(demo.summary_lines(run, findings))
    assert "live, on the learner's last 2,000 labels" in text
    assert "learned model  0.829  challenger_auc" in text
    assert "recency alone  0.751  prior_auc" in text
    assert "scores served  0.801  rolling_auc" in text
    assert "the interval should include 0 here" in text
    assert "offline run of the same file" in text and "simulated treatment effect" in text
