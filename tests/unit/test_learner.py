"""The learner continues exactly after a restart: a learner restored from any snapshot and
fed the examples after it ends where one that never stopped ends, drift detector included."""

from __future__ import annotations

import random

from schemas.outputs import ModelSnapshot
from stream_app.core.features import FeatureSpace
from stream_app.core.labels import Label
from stream_app.core.learner import Learner
from stream_app.core.model import OnlineModel

SPACE = FeatureSpace((86400.0, 604800.0, 2592000.0))


def examples(n: int, seed: int = 3) -> list[Label]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        x = {name: rng.gauss(0, 1) for name in SPACE.names}
        # a signal the prior (recency only) cannot see, so the model takes over
        y = int(x["cart_abandonment"] + 0.5 * rng.gauss(0, 1) > 0.8)
        p = min(0.99, max(0.01, 0.5 + 0.3 * rng.gauss(0, 1)))
        out.append(Label(f"u{i % 50}", float(i), float(i) + 10, y, p, x, False, 0))
    return out


def new_learner() -> Learner:
    model = OnlineModel(SPACE.names, SPACE.schema, learning_rate=0.05, min_labels_ready=60)
    return Learner(model, snapshot_every=25, rolling_window=80, example_dedup=16)


def run(learner: Learner, labels: list[Label]) -> list[ModelSnapshot]:
    return [s for s in (learner.learn(lab) for lab in labels) if s is not None]


def test_restored_learner_ends_where_an_uninterrupted_one_ends() -> None:
    labels = examples(400)
    straight = new_learner()
    snaps = run(straight, labels)
    assert [s.version for s in snaps] == list(range(1, 17))
    assert any(s.ready for s in snaps) and any(not s.ready for s in snaps)
    for cut in (2, 3, 9):  # before judging starts, around the hand-over, late
        snap = ModelSnapshot.model_validate_json(snaps[cut].model_dump_json())
        resumed = new_learner()
        resumed.restore(snap)
        rest = run(resumed, labels[(cut + 1) * 25 :])
        assert [s.version for s in rest] == [s.version for s in snaps[cut + 1 :]]
        for a, b in zip(rest, snaps[cut + 1 :], strict=True):
            assert a.weights == b.weights and a.intercept == b.intercept
            assert a.metrics == b.metrics and a.ready == b.ready and a.n_labels == b.n_labels
        assert resumed.summary() == straight.summary()


def drifting(n: int, shift_at: int, seed: int = 5) -> list[Label]:
    """Examples whose served p is right until ``shift_at``, then wrong: the log loss the
    drift detector watches jumps there."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        y = int(rng.random() < 0.3)
        good = 0.8 if y else 0.2
        p = good if i < shift_at else 1.0 - good
        x = {name: rng.gauss(0, 1) for name in SPACE.names}
        out.append(Label(f"u{i % 50}", float(i), float(i) + 10, y, p, x, False, 0))
    return out


def drift_labels(learner: Learner, labels: list[Label], first: int = 0) -> list[int]:
    """Index of every label at which the learner counted a drift."""
    at = []
    for i, label in enumerate(labels, start=first):
        before = learner.drifts
        learner.learn(label)
        if learner.drifts != before:
            at.append(i)
    return at


def test_a_restarted_learner_detects_drift_as_one_that_never_stopped() -> None:
    labels = drifting(1200, shift_at=800)
    straight = new_learner()
    expected = drift_labels(straight, labels)
    assert expected and all(i >= 800 for i in expected)  # the shift, and only the shift
    before = new_learner()
    drift_labels(before, labels[:810])  # restart just after the shift began
    snap = ModelSnapshot.model_validate_json(before.snapshot().model_dump_json())
    resumed = new_learner()
    resumed.restore(snap)
    assert drift_labels(resumed, labels[810:], 810) == expected
    assert resumed.drifts == straight.drifts
    # without the detector in the checkpoint (a snapshot from before it was kept) the
    # restarted learner starts a blank window, which misses this drift
    assert snap.learner is not None
    old = snap.model_copy(update={"learner": snap.learner.model_copy(update={"drift": None})})
    blank = new_learner()
    blank.restore(old)
    assert drift_labels(blank, labels[810:], 810) != expected


def test_example_ids_are_remembered_across_a_restart() -> None:
    learner = new_learner()
    assert not learner.seen_example("u1:1000") and learner.seen_example("u1:1000")
    for i in range(40):
        learner.seen_example(f"x{i}")
    assert not learner.seen_example("u1:1000")  # evicted after 16 newer ids
    learner.seen_example("recent")
    learner.n = 1
    resumed = new_learner()
    resumed.restore(learner.snapshot())
    assert resumed.seen_example("recent") and resumed.seen_example("x39")
    assert not resumed.seen_example("x0")


def test_treated_examples_only_count_for_uplift_when_training_on_them_is_off() -> None:
    labels = examples(60)
    treated = [
        Label(
            lab.user_id,
            lab.scored_at,
            lab.resolved_at,
            lab.label,
            lab.p,
            lab.features,
            "treatment" if i % 3 == 0 else "holdout",
            0,
        )
        for i, lab in enumerate(labels)
    ]
    model = OnlineModel(SPACE.names, SPACE.schema)
    learner = Learner(model, snapshot_every=1000, train_on_treated=False)
    run(learner, treated)
    assert model.n_labels == learner.n == 40  # the 20 treated ones neither judged nor learned
    u = learner.uplift()
    assert u.treated_n == 20 and u.holdout_n == 40
    assert Learner(OnlineModel(SPACE.names, SPACE.schema)).trains_on(treated[0])
