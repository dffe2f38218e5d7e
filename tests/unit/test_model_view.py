"""One name per number: /model says what each of its metrics is and on which labels."""

from __future__ import annotations

from types import SimpleNamespace

from stream_app.agents.model_sync import ModelSync
from stream_app.metrics import Metrics
from stream_app.settings import load_settings
from stream_app.web import model_view
from stream_app.wiring import build_engine


def test_model_view_says_what_each_metric_is_and_on_which_labels() -> None:
    settings = load_settings(rolling_window=1500)
    engine = build_engine(settings)
    # No snapshot read yet: the model sync a worker starts with.
    deps = SimpleNamespace(engine=engine, model=ModelSync(engine, Metrics()), settings=settings)
    about = model_view(deps)["metrics_about"]  # type: ignore[arg-type]
    assert set(about) == {"challenger_auc", "prior_auc", "rolling_auc", "rolling_logloss"}
    assert "learned model" in about["challenger_auc"] and "served" in about["rolling_auc"]
    assert all("last 1500 labels" in text for text in about.values())
