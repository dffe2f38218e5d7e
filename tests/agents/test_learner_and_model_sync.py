"""The learner handler (examples in, snapshots out) and the model sync (snapshots in, the
engine's scorer swapped), without a broker."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from schemas.outputs import ModelSnapshot, TrainingExample
from stream_app.agents import learner as agents_learner
from stream_app.agents.learner import LearnerHandler
from stream_app.agents.model_sync import ModelSync
from stream_app.app import create_app, wiring
from stream_app.core.config import EngineConfig, LearnerConfig, ModelConfig
from stream_app.core.engine import Engine
from stream_app.metrics import Metrics
from stream_app.settings import load_settings

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
    counts = {"buyer=yes": {"outreach": [5, 1]}}
    foreign = snaps[-1].model_copy(update={"feature_schema": "0000000000000000", "bandit": counts})
    h = handler(Metrics())
    assert h.resume(foreign) == 50
    assert h.learner.model.version == foreign.version and h.learner.n == 0
    assert h.learner.bandit.to_dict() == counts  # outcomes of actions outlive the features


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
    v2 = good_snapshot(2)
    assert s.handle(1, v2) == "accepted"
    assert engine.scorer.version == 2 and engine.scorer.ready
    assert metrics.registry.get_sample_value("churn_model_version") == 2
    assert metrics.registry.get_sample_value("churn_model_ready") == 1
    assert s.handle(2, v2) == "current"  # published again: changes nothing


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


def test_two_snapshots_of_one_version_the_later_one_scores(
    sync: tuple[ModelSync, Engine, Metrics],
) -> None:
    """Two learners that overlapped in a rebalance both publish v3: every worker ends up
    scoring with the later one, the one compaction keeps and the learner resumes from."""
    s, engine, metrics = sync
    first, second = good_snapshot(3), good_snapshot(3, ready=True)
    second = (
        ModelSnapshot.model_validate_json(second)
        .model_copy(update={"intercept": 0.123})
        .model_dump_json()
        .encode()
    )
    assert s.handle(0, first) == "accepted"
    assert s.handle(1, second) == "accepted"
    assert s.latest is not None and s.latest.intercept == 0.123
    assert engine.scorer.version == 3
    assert s.handle(2, second) == "current"  # the same snapshot published again: no swap
    assert metrics.registry.get_sample_value("churn_model_rejected_total", {"reason": "stale"}) in (
        None,
        0.0,
    )


class _ModelTopic:
    """Just what read_latest_snapshot uses of an aiokafka consumer: one partition holding
    ``values`` at offsets 0..n-1."""

    def __init__(self, values: list[bytes]) -> None:
        self.values, self.pos = values, 0

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def assign(self, tps: Any) -> None: ...
    async def seek_to_beginning(self, tp: Any) -> None:
        self.pos = 0

    async def end_offsets(self, tps: Any) -> dict[Any, int]:
        return {tp: len(self.values) for tp in tps}

    async def position(self, tp: Any) -> int:
        return self.pos

    async def getmany(self, tp: Any, timeout_ms: int) -> dict[Any, list[Any]]:
        batch = [SimpleNamespace(offset=i, value=v) for i, v in enumerate(self.values)]
        self.pos = len(self.values)
        return {tp: batch[self.pos - len(batch) :]}


def test_the_learner_resumes_from_the_snapshot_model_sync_scores_with(
    sync: tuple[ModelSync, Engine, Metrics], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = good_snapshot(3), good_snapshot(3, ready=False)  # v3 twice, different contents
    log = [good_snapshot(2), a, b, b"{not json", good_snapshot(1)]
    s, _, _ = sync
    for offset, value in enumerate(log):
        s.handle(offset, value)
    monkeypatch.setattr(agents_learner, "consumer", lambda *a, **k: _ModelTopic(log))
    resumed = asyncio.run(agents_learner.read_latest_snapshot(load_settings()))
    assert resumed is not None and s.latest is not None
    assert resumed == s.latest == ModelSnapshot.model_validate_json(b)


def test_rereading_the_model_topic_at_start_up_is_quiet(
    sync: tuple[ModelSync, Engine, Metrics], caplog: pytest.LogCaptureFixture
) -> None:
    """The preload reads the topic, then the service reads it again from the start: the
    older snapshots it meets again are neither counted nor warned about; a snapshot older
    than the one in use at a new offset still is."""
    s, engine, metrics = sync
    log = [good_snapshot(v) for v in (1, 2, 3, 4)] + [b"{not json"]
    with caplog.at_level(logging.DEBUG, logger="stream_app.agents.model_sync"):
        for offset, value in enumerate(log):  # the preload
            s.handle(offset, value)
        caplog.clear()
        for offset, value in enumerate(log):  # the service, from the beginning again
            assert s.handle(offset, value) == "reread"
    assert engine.scorer.version == 4
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len([r for r in caplog.records if r.levelno == logging.DEBUG]) == len(log)
    get = metrics.registry.get_sample_value
    assert get("churn_model_rejected_total", {"reason": "stale"}) in (None, 0.0)
    assert get("churn_model_rejected_total", {"reason": "invalid"}) == 1  # once, not twice
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="stream_app.agents.model_sync"):
        assert s.handle(len(log), good_snapshot(2)) == "rejected:stale"
    assert [r.levelno for r in caplog.records] == [logging.WARNING]


# --- the learner service: a revoke stops it at once ------------------------------------
@pytest.fixture
def service(tmp_path: Path) -> agents_learner.LearnerService:
    app = create_app(load_settings(data_dir=str(tmp_path), snapshot_every=2))
    learner = wiring(app).learner
    learner.handler = handler(Metrics())
    learner.handler.learner.snapshot_every = 2  # a snapshot every second example
    return learner


def test_a_revoke_during_a_send_stops_learning_and_publishing_at_once(
    service: agents_learner.LearnerService,
) -> None:
    rng = random.Random(9)
    batch = {"tp": [SimpleNamespace(offset=i, value=example_bytes(i, rng)) for i in range(10)]}
    published: list[int] = []

    async def send(out: Any) -> None:
        published.append(ModelSnapshot.model_validate_json(out.value).version)
        if len(published) == 2:
            service.revoked()  # the rebalance lands while this send is awaited

    service._send = send
    service.active = True
    learned = asyncio.run(service.learn_batch(batch))
    assert published == [1, 2]  # v2 went out before the revoke; nothing after it
    assert learned == 4  # examples 0..3 (v1 at 1, v2 at 3); 4..9 left to the new owner
    assert service.handler.position == 3


def test_a_batch_fetched_before_a_revoke_is_not_learned_after_a_new_assignment(
    service: agents_learner.LearnerService,
) -> None:
    rng = random.Random(9)
    batch = {"tp": [SimpleNamespace(offset=i, value=example_bytes(i, rng)) for i in range(10)]}
    published: list[int] = []

    async def send(out: Any) -> None:
        published.append(ModelSnapshot.model_validate_json(out.value).version)
        service.revoked()  # a rebalance during this send takes the partition away...
        service.epoch += 1  # ...and gives it back (assigned(): resumed, seeked)
        service.active = True

    service._send = send
    service.active = True
    assert asyncio.run(service.learn_batch(batch)) == 2  # offsets 0 and 1 (v1); not 2..9
    assert published == [1]


def test_an_active_learner_learns_the_whole_batch(
    service: agents_learner.LearnerService,
) -> None:
    rng = random.Random(9)
    batch = {"tp": [SimpleNamespace(offset=i, value=example_bytes(i, rng)) for i in range(10)]}
    published: list[int] = []

    async def send(out: Any) -> None:
        published.append(ModelSnapshot.model_validate_json(out.value).version)

    service._send = send
    service.active = True
    assert asyncio.run(service.learn_batch(batch)) == 10
    assert published == [1, 2, 3, 4, 5]


def test_the_live_learner_counts_arms_and_every_worker_chooses_with_them() -> None:
    """Examples on the training topic carry their arm; the snapshot carries the counts; a
    worker's model sync hands them to its chooser and exports the posterior means."""
    from stream_app.agents.model_sync import set_bandit_means
    from stream_app.core.policy import Policy, PolicyConfig

    seg = "buyer=yes|activity=silent|value=v1"
    rng = random.Random(7)
    messages = []
    for i in range(25):  # outreach: 8 treated, 6 stayed; holdout examples teach nothing
        example = json.loads(example_bytes(i, rng))
        group = "treatment" if i < 8 else "holdout"
        example.update(group=group, segment=seg, action="outreach", label=int(i in (3, 5)))
        messages.append((i, json.dumps(example).encode()))
    [snap] = feed(handler(Metrics()), messages)
    assert snap.bandit == {seg: {"outreach": [6, 2]}}
    metrics, engine = Metrics(), Engine(EngineConfig())
    engine.policy = Policy(
        PolicyConfig.model_validate({"chooser": "bandit"}), engine.space, engine.config.horizon
    )
    set_bandit_means(engine, metrics)  # at start: the prior's series
    gauge = metrics.registry.get_sample_value
    assert gauge("churn_bandit_posterior_mean", {"segment": "prior", "action": "coupon"}) == 0.5
    assert ModelSync(engine, metrics).handle(0, snap.model_dump_json().encode()) == "accepted"
    assert engine.policy.posterior.to_dict() == {seg: {"outreach": [6, 2]}}
    labels = {"segment": seg, "action": "outreach"}
    assert gauge("churn_bandit_posterior_mean", labels) == (2 + 6) / (4 + 8)


def test_a_worker_exports_the_bandit_prior_before_any_snapshot(tmp_path: Path) -> None:
    """The dashboard's posterior panel has a series from the start (a worker that has not
    read a snapshot yet chooses with the prior)."""
    metrics = Metrics()
    create_app(load_settings(data_dir=str(tmp_path)), metrics)
    for action in ("outreach", "recommendations"):
        labels = {"segment": "prior", "action": action}
        assert metrics.registry.get_sample_value("churn_bandit_posterior_mean", labels) == 0.5
