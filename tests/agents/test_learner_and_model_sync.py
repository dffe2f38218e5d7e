"""The learner handler (examples in, snapshots out) and the model sync (snapshots in, the
engine's scorer swapped), without a broker."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

import pytest

from schemas.outputs import ModelSnapshot, TrainingExample
from stream_app.agents.learner import LearnerHandler
from stream_app.agents.model_sync import ModelSync
from stream_app.core.config import EngineConfig, LearnerConfig, ModelConfig
from stream_app.core.engine import Engine
from stream_app.metrics import Metrics

ENGINE = Engine(EngineConfig())
NAMES, SCHEMA = ENGINE.space.names, ENGINE.space.schema


def example_bytes(i: int, rng: random.Random) -> bytes:
    x = {n: rng.gauss(0, 1) for n in NAMES}
    y = int(x["cart_abandonment"] + 0.5 * rng.gauss(0, 1) > 0.8)
    return (
        TrainingExample(
            example_id=f"u{i % 40}:{i * 1000}",
            user_id=f"u{i % 40}",
            scored_at=datetime.fromtimestamp(1.7e9 + i, tz=UTC),
            resolved_at=datetime.fromtimestamp(1.7e9 + i + 86400, tz=UTC),
            label=y,
            p=min(0.99, max(0.01, 0.3 + 0.2 * rng.gauss(0, 1))),
            features=x,
            model_version=0,
        )
        .model_dump_json()
        .encode()
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def handler(metrics: Metrics, clock: FakeClock | None = None) -> LearnerHandler:
    return LearnerHandler(
        NAMES,
        SCHEMA,
        ModelConfig(learning_rate=0.05, min_labels_ready=60),
        LearnerConfig(snapshot_every=25, rolling_window=80, example_dedup=64),
        metrics,
        max_interval=30.0,
        clock=clock or FakeClock(),
    )


def feed(h: LearnerHandler, messages: list[tuple[int, bytes]]) -> list[ModelSnapshot]:
    return [
        ModelSnapshot.model_validate_json(out.value)
        for offset, value in messages
        for out in h.handle(offset, value)
    ]


def test_a_learner_restarted_mid_stream_neither_skips_nor_repeats() -> None:
    rng = random.Random(5)
    messages = [(i, example_bytes(i, rng)) for i in range(300)]
    straight = feed(handler(Metrics()), messages)

    first = handler(Metrics())
    published = feed(first, messages[:140])  # snapshots at 25, 50, ... 125: then a crash
    last = published[-1]
    assert last.trained_through == {"0": 124}

    metrics = Metrics()
    second = handler(metrics)
    start = second.resume(last)
    assert start == 125
    # at-least-once: the consumer may hand it earlier offsets too; they are skipped
    resumed = feed(second, messages[100:])
    assert metrics.registry.get_sample_value("churn_model_labels_total") == 300 - 125
    assert (
        metrics.registry.get_sample_value(
            "churn_training_skipped_total", {"reason": "already_learned"}
        )
        == 25
    )
    tail = [s for s in straight if s.version > last.version]
    assert [s.version for s in resumed] == [s.version for s in tail]
    for a, b in zip(resumed, tail, strict=True):
        assert (a.weights, a.intercept, a.n_labels, a.ready, a.metrics) == (
            b.weights,
            b.intercept,
            b.n_labels,
            b.ready,
            b.metrics,
        )
        assert a.trained_through == b.trained_through


def test_duplicate_and_invalid_examples_are_skipped_and_counted() -> None:
    rng = random.Random(6)
    metrics = Metrics()
    h = handler(metrics)
    raw = example_bytes(1, rng)
    assert feed(h, [(0, raw), (1, raw), (2, b"{garbage"), (3, b"")]) == []
    get = metrics.registry.get_sample_value
    assert get("churn_model_labels_total") == 1
    assert get("churn_training_skipped_total", {"reason": "duplicate"}) == 1
    assert get("churn_training_skipped_total", {"reason": "invalid"}) == 2


def test_a_snapshot_goes_out_on_the_time_bound_too() -> None:
    rng = random.Random(7)
    clock = FakeClock()
    h = handler(Metrics(), clock)
    assert h.tick() == []  # nothing learned: nothing to publish
    feed(h, [(i, example_bytes(i, rng)) for i in range(3)])
    clock.now = 10.0
    assert h.tick() == []
    clock.now = 31.0
    (out,) = h.tick()
    snap = ModelSnapshot.model_validate_json(out.value)
    assert out.topic == "model" and out.key == b"model"
    assert snap.version == 1 and snap.n_labels == 3 and snap.trained_through == {"0": 2}
    assert h.tick() == []


def test_a_snapshot_of_another_feature_schema_starts_a_fresh_model_with_higher_versions() -> None:
    rng = random.Random(8)
    old = handler(Metrics())
    snaps = feed(old, [(i, example_bytes(i, rng)) for i in range(50)])
    foreign = snaps[-1].model_copy(update={"feature_schema": "0000000000000000"})
    h = handler(Metrics())
    assert h.resume(foreign) == 50
    assert h.learner.model.version == foreign.version and h.learner.n == 0


# --- model sync ----------------------------------------------------------------------
def good_snapshot(version: int, ready: bool = True) -> bytes:
    rng = random.Random(version)
    h = handler(Metrics())
    snap = feed(h, [(i, example_bytes(i, rng)) for i in range(25)])[0]
    return snap.model_copy(update={"version": version, "ready": ready}).model_dump_json().encode()


@pytest.fixture
def sync() -> tuple[ModelSync, Engine, Metrics]:
    metrics = Metrics()
    engine = Engine(EngineConfig())
    return ModelSync(engine, metrics), engine, metrics


def test_each_newer_snapshot_is_swapped_in_and_stamped(
    sync: tuple[ModelSync, Engine, Metrics],
) -> None:
    s, engine, metrics = sync
    assert s.handle(0, good_snapshot(1, ready=False)) == "accepted"
    assert engine.scorer.version == 0  # not ready: the cold-start prior keeps scoring
    assert s.handle(1, good_snapshot(2)) == "accepted"
    assert engine.scorer.version == 2 and engine.scorer.ready
    assert metrics.registry.get_sample_value("churn_model_version") == 2
    assert metrics.registry.get_sample_value("churn_model_ready") == 1
    assert s.handle(2, good_snapshot(2)) == "current"  # a re-read changes nothing


def test_each_model_gauge_is_the_model_key_of_the_same_name(
    sync: tuple[ModelSync, Engine, Metrics],
) -> None:
    """One name per number: churn_model_<key> = /model metrics.<key>, and the learned
    model's AUC (challenger_auc) is exported, not only the scores served (rolling_auc)."""
    s, _, metrics = sync
    figures = {"rolling_auc": 0.801, "challenger_auc": 0.829, "prior_auc": 0.75}
    snap = json.loads(good_snapshot(3))
    snap["metrics"] = {**snap["metrics"], **figures, "rolling_logloss": 0.31}
    assert s.handle(0, json.dumps(snap).encode()) == "accepted"
    for key, value in {**figures, "rolling_logloss": 0.31}.items():
        assert metrics.registry.get_sample_value(f"churn_model_{key}") == value, key
    helps = {f.name: f.documentation for f in metrics.registry.collect()}
    for key in figures:
        assert f"/model metrics.{key}" in helps[f"churn_model_{key}"], key


@pytest.mark.parametrize(
    ("poison", "reason"),
    [
        (b"\x00\xff not json", "invalid"),
        (b"", "invalid"),
        (b'{"version": 9}', "invalid"),
        (b"[" * 10_000 + b"]" * 10_000, "invalid"),
        (
            json.dumps({**json.loads(good_snapshot(9)), "feature_schema": "ffffffffffffffff"}),
            "schema",
        ),
        (good_snapshot(1), "stale"),
    ],
)
def test_a_poisoned_snapshot_is_rejected_and_the_old_model_keeps_scoring(
    sync: tuple[ModelSync, Engine, Metrics], poison: bytes | str, reason: str
) -> None:
    s, engine, metrics = sync
    assert s.handle(0, good_snapshot(3)) == "accepted"
    before = engine.scorer
    raw = poison.encode() if isinstance(poison, str) else poison
    assert s.handle(1, raw) == f"rejected:{reason}"
    assert engine.scorer is before and engine.scorer.version == 3
    assert metrics.registry.get_sample_value("churn_model_rejected_total", {"reason": reason}) == 1
    assert s.handle(2, good_snapshot(4)) == "accepted"  # and the next good one still loads
