"""Online model: snapshots round-trip exactly, bad snapshots are refused, reason codes."""

from __future__ import annotations

import json
import math
import random

import pytest

from schemas.outputs import ModelSnapshot, ScalerState
from stream_app.core.features import FeatureSpace
from stream_app.core.learner import Learner, log_loss, roc_auc
from stream_app.core.model import (
    ColdStartPrior,
    LinearScorer,
    OnlineModel,
    scorer_from_json,
)
from stream_app.errors import SnapshotError

SPACE = FeatureSpace((86400.0, 604800.0, 2592000.0))


def trained(n: int = 400, seed: int = 1) -> tuple[OnlineModel, list[dict[str, float]]]:
    rng = random.Random(seed)
    model = OnlineModel(SPACE.names, SPACE.schema, learning_rate=0.05, min_labels_ready=100)
    xs = []
    for _ in range(n):
        x = {name: rng.gauss(0, 1) for name in SPACE.names}
        x["has_purchased"] = 1.0  # a constant feature has zero variance
        y = int(x["log_days_since_last_event"] + 0.3 * rng.gauss(0, 1) > 0.5)
        model.learn_one(x, y)
        xs.append(x)
    return model, xs


def test_snapshot_json_round_trip_reproduces_predictions_exactly() -> None:
    model, xs = trained()
    snap = model.snapshot(version=3)
    restored = OnlineModel(SPACE.names, SPACE.schema, learning_rate=0.05)
    restored.load(ModelSnapshot.model_validate_json(snap.model_dump_json()))
    scorer = LinearScorer(ModelSnapshot.model_validate_json(snap.model_dump_json()))
    for x in xs[:100]:
        p = model.predict_proba_one(x)
        assert restored.predict_proba_one(x) == p  # bit for bit
        assert scorer.model_score([x[n] for n in SPACE.names]) == pytest.approx(p, abs=1e-12)
    assert restored.n_labels == 400 and restored.version == 3
    # learning continues identically from the restored copy
    model.learn_one(xs[0], 1)
    restored.learn_one(xs[0], 1)
    assert restored.predict_proba_one(xs[1]) == model.predict_proba_one(xs[1])


def test_model_learns_the_signal() -> None:
    model, xs = trained(2000)
    ys = [int(x["log_days_since_last_event"] > 0.5) for x in xs]
    assert roc_auc(ys, [model.predict_proba_one(x) for x in xs]) > 0.9
    assert model.n_labels >= model.min_labels_ready
    assert not model.ready  # only the learner's champion/challenger check hands over


def test_learner_hands_over_once_the_model_beats_the_prior() -> None:
    from stream_app.core.labels import Label

    rng = random.Random(4)
    model = OnlineModel(SPACE.names, SPACE.schema, learning_rate=0.05, min_labels_ready=300)
    learner = Learner(model, rolling_window=300)
    ready_at = None
    for i in range(1500):
        x = {name: rng.gauss(0, 1) for name in SPACE.names}
        y = int(x["returns_7d"] + 0.5 * rng.gauss(0, 1) > 0.8)  # a signal the prior ignores
        learner.learn(Label("u", float(i), float(i + 1), y, 0.5, x, False, 0))
        if ready_at is None and model.ready:
            ready_at = i + 1
    assert ready_at is not None and ready_at >= 300
    s = learner.summary()
    assert s["challenger_auc"] > 0.8 > 0.6 > s["prior_auc"]


def test_snapshot_for_another_feature_space_is_refused() -> None:
    model, _ = trained(50)
    other = FeatureSpace((3600.0,))
    with pytest.raises(SnapshotError, match="feature schema"):
        scorer_from_json(model.snapshot().model_dump_json(), other.schema, other.names)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(intercept="NaN"),
        lambda d: d["weights"].update(days_since_last_event=float("inf")),
        lambda d: d["scaler"]["var"].update(tenure_days=-1.0),
        lambda d: d.pop("features"),
        lambda d: d.update(weights={"not_a_feature": 1.0}),
    ],
)
def test_corrupt_snapshots_are_refused(mutate) -> None:  # type: ignore[no-untyped-def]
    model, _ = trained(50)
    doc = json.loads(model.snapshot().model_dump_json())
    mutate(doc)
    with pytest.raises(SnapshotError):
        scorer_from_json(json.dumps(doc), SPACE.schema, SPACE.names)


def test_silence_guard_floors_long_silences_with_the_prior() -> None:
    model, xs = trained()
    scorer = LinearScorer(model.snapshot())
    prior = ColdStartPrior(SPACE.names)
    idx = {n: i for i, n in enumerate(SPACE.names)}
    vec = [xs[0][n] for n in SPACE.names]
    vec[idx["days_since_last_event"]] = 0.0  # inside the trained range (about N(0, 1))
    assert not scorer.guarded(vec) and scorer.score(vec) == scorer.model_score(vec)
    vec[idx["days_since_last_event"]] = 120.0  # far beyond it
    vec[idx["log_days_since_last_event"]] = math.log1p(120.0)
    assert scorer.guarded(vec)
    assert scorer.score(vec) == max(scorer.model_score(vec), prior.score(vec))
    assert scorer.score(vec) >= prior.score(vec) > 0.5
    if prior.score(vec) > scorer.model_score(vec):
        assert scorer.reasons(vec)[0] == "log_days_since_last_event"


def test_reasons_are_the_top_positive_terms() -> None:
    model, xs = trained()
    scorer = LinearScorer(model.snapshot())
    vec = [xs[0][n] for n in SPACE.names]
    reasons = scorer.reasons(vec, k=3)
    contrib = dict((n, c) for c, n in scorer.contributions(vec))
    assert len(reasons) <= 3 and all(contrib[r] > 0 for r in reasons)
    assert reasons == sorted(reasons, key=lambda r: -contrib[r])
    top = max(contrib.values())
    assert top <= 0 or contrib[reasons[0]] == top


def test_reason_codes_are_the_contributions_with_their_values() -> None:
    model, xs = trained()
    snap = model.snapshot()
    scorer = LinearScorer(snap)
    vec = [xs[0][n] for n in SPACE.names]
    codes = scorer.reason_codes(vec, k=3)
    assert [n for n, _ in codes] == scorer.reasons(vec, k=3)
    for name, value in codes:
        x = vec[SPACE.names.index(name)]
        z = (x - snap.scaler.mean[name]) / snap.scaler.var[name] ** 0.5
        assert value == pytest.approx(snap.weights[name] * z) and value > 0


def test_reason_codes_when_the_prior_sets_the_score_name_the_model_too() -> None:
    """A model that says 'safe' for a user silent far beyond its training range: the guard
    scores with the prior, and the codes are the prior's silence term, then the model's."""
    names = SPACE.names
    snap = ModelSnapshot(
        version=1,
        created_at="2026-01-05T12:00:00Z",
        feature_schema=SPACE.schema,
        features=names,
        weights={"revenue_30d": -0.5, "purchases_30d": 0.25},
        intercept=-10.0,
        scaler=ScalerState(
            n={n: 100.0 for n in names},
            mean={n: 0.0 for n in names},
            var={n: 1.0 for n in names},
        ),
        n_labels=100,
        ready=True,
    )
    scorer = LinearScorer(snap)
    vec = [0.0] * len(names)
    vec[names.index("days_since_last_event")] = 120.0  # mean 0, sd 1: far out of range
    vec[names.index("log_days_since_last_event")] = math.log1p(120.0)
    vec[names.index("revenue_30d")] = -2.0  # below the mean: -0.5 * -2 = +1.0
    vec[names.index("purchases_30d")] = 2.0  # +0.5
    assert scorer.guarded(vec) and scorer.score(vec) > scorer.model_score(vec)
    # The prior's term against the training data's mean user (mean 0 here), as the
    # model's own w * z are: one scale in one list.
    assert scorer.reason_codes(vec, k=3) == [
        ("log_days_since_last_event", pytest.approx(1.3 * math.log1p(120.0))),
        ("revenue_30d", pytest.approx(1.0)),
        ("purchases_30d", pytest.approx(0.5)),
    ]
    # Alone, the prior compares with its reference user, last seen a week ago.
    assert ColdStartPrior(names).reason_codes(vec, k=3) == [
        ("log_days_since_last_event", pytest.approx(1.3 * (math.log1p(120.0) - math.log1p(7))))
    ]


def test_learner_evaluates_but_does_not_learn_untrained_labels() -> None:
    from stream_app.core.labels import Label

    model = OnlineModel(SPACE.names, SPACE.schema)
    learner = Learner(model)
    x = {n: 0.0 for n in SPACE.names}
    learner.learn(Label("u", 0.0, 1.0, 1, 0.8, x, "none", 0, train=False))
    learner.learn(Label("u", 0.0, 1.0, 0, 0.3, x, "none", 0))
    assert learner.summary()["labels"] == 2  # both judged
    assert model.n_labels == 1  # one learned


def test_reason_codes_give_each_reason_its_contribution() -> None:
    model, xs = trained()
    scorer = LinearScorer(model.snapshot())
    for x in xs[:20]:
        vec = [x[n] for n in SPACE.names]
        contrib = {n: c for c, n in scorer.contributions(vec)}
        codes = scorer.reason_codes(vec, k=4)
        assert [n for n, _ in codes] == scorer.reasons(vec, k=4)
        assert all(value == contrib[name] > 0 for name, value in codes)
    prior = ColdStartPrior(SPACE.names)
    vec = [0.0] * len(SPACE.names)
    vec[SPACE.names.index("log_days_since_last_event")] = math.log1p(9.0)
    assert prior.reason_codes(vec) == [
        ("log_days_since_last_event", pytest.approx(1.3 * (math.log1p(9.0) - math.log1p(7.0))))
    ]
    vec[SPACE.names.index("log_days_since_last_event")] = math.log1p(3.0)
    assert prior.reason_codes(vec) == []  # more recent than the reference: no reason


def test_cold_start_prior_rises_with_silence() -> None:
    prior = ColdStartPrior(SPACE.names)
    idx = {n: i for i, n in enumerate(SPACE.names)}
    vec = [0.0] * len(SPACE.names)
    ps = []
    for days in (0, 7, 21):
        vec[idx["log_days_since_last_event"]] = __import__("math").log1p(days)
        ps.append(prior.score(vec))
    assert ps[0] < 0.05 < ps[1] < ps[2]
    assert not prior.ready and prior.version == 0


def test_learner_is_prequential_and_asks_for_snapshots() -> None:
    from stream_app.core.labels import Label

    model = OnlineModel(SPACE.names, SPACE.schema)
    learner = Learner(model, snapshot_every=2)
    x = {n: 0.0 for n in SPACE.names}
    due = [learner.learn(Label("u", 0.0, 1.0, y, 0.8, x, False, 0)) for y in (1, 0, 1)]
    assert [d is not None for d in due] == [False, True, False]
    assert due[1] is not None and due[1].version == 1 and due[1].n_labels == 2
    s = learner.summary()
    assert s["labels"] == 3 and s["positives"] == 2
    assert s["logloss"] == pytest.approx((2 * log_loss(1, 0.8) + log_loss(0, 0.8)) / 3)


def test_roc_auc_exact() -> None:
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert roc_auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
    assert roc_auc([0, 1, 1], [0.2, 0.1, 0.3]) == 0.5
    assert roc_auc([1, 1], [0.1, 0.2]) != roc_auc([1, 1], [0.1, 0.2])  # NaN: one class
