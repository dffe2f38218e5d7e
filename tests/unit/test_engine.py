"""Event-time timers, delayed labels across the horizon boundary, late and duplicate events,
and rebuilding the deadline index from the table."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from schemas.events import EVENT_ADAPTER
from stream_app.core.config import EngineConfig
from stream_app.core.engine import Engine
from stream_app.core.features import UserState
from stream_app.core.labels import Label

DAY = 86400.0
H = 10 * DAY
T0 = 1767614400.0
CFG = EngineConfig(
    horizon=H,
    snapshot_interval=DAY,
    rescore_after=(DAY, 3 * DAY),
    allowed_lateness=3600.0,
    session_gap=1800.0,
    score_min_interval=1800.0,
)


def ev(user: str, t: float, etype: str = "page_view", eid: str | None = None, **kw: Any) -> Any:
    data = {
        "event_id": eid or f"{user}-{etype}-{t}",
        "user_id": user,
        "event_type": etype,
        "ts": datetime.fromtimestamp(t, tz=UTC).isoformat(),
        **kw,
    }
    return EVENT_ADAPTER.validate_json(json.dumps(data))


class Run:
    """Feeds events through one engine and clock, collecting everything it emits."""

    def __init__(self, config: EngineConfig = CFG) -> None:
        self.engine = Engine(config)
        self.store: dict[str, UserState] = {}
        self.clock = self.engine.new_clock()
        self.labels: list[Label] = []
        self.scores: list[Any] = []
        self.statuses: list[str] = []

    def send(self, *events: Any) -> Run:
        for e in events:
            r = self.engine.process(self.store, self.clock, e)
            self.statuses.append(r.status)
            self.labels += r.labels
            self.scores += r.scores
            due = self.engine.advance(self.store, self.clock)
            if due is not None:
                self.labels += due.labels
                self.scores += due.scores
        return self

    def tick(self, t: float) -> Run:
        """Another user's event moves the watermark to t - lateness."""
        return self.send(ev("clock", t, eid=f"tick-{t}"))

    def user_labels(self, user: str = "u") -> list[Label]:
        return [lab for lab in self.labels if lab.user_id == user]


def test_silent_user_churns_when_the_watermark_passes_the_horizon() -> None:
    run = Run().send(ev("u", T0))
    run.tick(T0 + H + 3600 - 1)
    assert run.user_labels() == []  # watermark still at the boundary
    run.tick(T0 + H + 3600 + 1)
    (lab,) = run.user_labels()
    assert lab.label == 1 and lab.scored_at == T0 and lab.resolved_at == T0 + H


def test_return_within_horizon_is_retained_but_released_at_the_horizon() -> None:
    run = Run().send(ev("u", T0), ev("u", T0 + 5 * DAY))
    first = [lab for lab in run.user_labels() if lab.scored_at == T0]
    assert first == []  # decided (0) but not released before scored_at + H
    run.tick(T0 + H + 2 * 3600)
    (lab,) = [lab for lab in run.user_labels() if lab.scored_at == T0]
    assert lab.label == 0 and lab.resolved_at == T0 + 5 * DAY


@pytest.mark.parametrize(("back_after", "label"), [(H, 0), (H + 1, 1)])
def test_horizon_boundary(back_after: float, label: int) -> None:
    run = Run().send(ev("u", T0), ev("u", T0 + back_after))
    run.tick(T0 + back_after + H + 2 * 3600)
    lab = next(lab for lab in run.user_labels() if lab.scored_at == T0)
    assert lab.label == label


def test_same_session_activity_does_not_count_as_coming_back() -> None:
    run = Run().send(ev("u", T0), ev("u", T0 + 60, "product_view"))
    run.tick(T0 + H + 2 * 3600)
    lab = next(lab for lab in run.user_labels() if lab.scored_at == T0)
    assert lab.label == 1


def test_purchase_mode_needs_a_purchase() -> None:
    cfg = EngineConfig(**{**CFG.__dict__, "label_activity": "purchase"})
    run = Run(cfg).send(ev("u", T0), ev("u", T0 + 2 * DAY))  # new session, no purchase
    run.tick(T0 + H + 2 * 3600)
    assert next(lab for lab in run.user_labels() if lab.scored_at == T0).label == 1
    run = Run(cfg).send(ev("u", T0), ev("u", T0 + 2 * DAY, "purchase", revenue=5.0))
    run.tick(T0 + H + 2 * 3600)
    assert next(lab for lab in run.user_labels() if lab.scored_at == T0).label == 0


def test_silence_deadlines_rescore_with_recency_advanced() -> None:
    run = Run().send(ev("u", T0))
    run.tick(T0 + 3 * DAY + 3600 + 1)
    silence = [s for s in run.scores if s.user_id == "u" and s.trigger == "silence"]
    assert [s.ts for s in silence] == [T0 + DAY, T0 + 3 * DAY]
    assert silence[1].p > silence[0].p  # longer silence, higher risk under the prior


def test_at_most_one_snapshot_per_interval() -> None:
    run = Run().send(*(ev("u", T0 + i * 3600, "purchase", revenue=1.0) for i in range(10)))
    assert len(run.store["u"].pending) == 1


def test_only_two_examples_of_one_silence_are_learned_all_are_judged() -> None:
    """A silent user is rescored (and snapshotted) at every deadline: one event, then
    deadlines at 1 and 3 days give three near-duplicate examples of one silence. The third
    is released and judged, but not learned from; the next activity starts a new count."""
    run = Run().send(ev("u", T0))
    run.tick(T0 + 3 * DAY + 3601)
    assert [snap.train for snap in run.store["u"].pending] == [True, True, False]
    run.send(ev("u", T0 + 4 * DAY))
    run.tick(T0 + 7 * DAY + H + 3601)
    labels = run.user_labels()
    assert [(lab.scored_at - T0) / DAY for lab in labels] == [0, 1, 3, 4, 5, 7]
    assert [lab.train for lab in labels] == [True, True, False, True, True, False]


def test_duplicates_and_late_events() -> None:
    run = Run().send(ev("u", T0, eid="same"), ev("u", T0 + 5, eid="same"))
    assert run.statuses == ["applied", "duplicate"]
    assert run.store["u"].events_total == 1
    run.tick(T0 + DAY)
    run.send(ev("u", T0 + DAY - 2 * 3600))  # older than the watermark
    assert run.statuses[-1] == "late"
    run.send(ev("u", T0 + DAY - 1800))  # late but within the allowed lateness
    assert run.statuses[-1] == "applied"


def test_a_redelivered_event_is_a_duplicate_whatever_its_time() -> None:
    """After a crash the stream time is rebuilt ahead of redelivered events: they were
    applied already, so they are duplicates, never late_event dead letters."""
    run = Run().send(ev("u", T0, eid="first"))
    run.tick(T0 + 3 * DAY)
    run.send(ev("u", T0, eid="first"), ev("v", T0, eid="never-seen"))
    assert run.statuses[-2:] == ["duplicate", "late"]
    assert run.store["u"].events_total == 1


def test_scoring_is_throttled_inside_a_session_but_not_for_signals() -> None:
    run = Run().send(ev("u", T0), ev("u", T0 + 60), ev("u", T0 + 120, "support_contact"))
    assert [s.ts for s in run.scores if s.user_id == "u"] == [T0, T0 + 120]


def test_restart_rebuilds_deadlines_and_gives_the_same_labels() -> None:
    users = [f"u{i}" for i in range(5)]
    events = [ev(u, T0 + i * 7200 + k * 2 * DAY) for k in range(3) for i, u in enumerate(users)]
    tail = [ev("clock", T0 + 40 * DAY)]
    straight = Run().send(*events, *tail)

    restarted = Run().send(*events)
    saved = {k: json.dumps(v.to_dict()) for k, v in restarted.store.items()}
    after = Run()
    after.labels = list(restarted.labels)
    after.store = {k: UserState.from_dict(json.loads(v)) for k, v in saved.items()}
    after.engine.rebuild(after.store.items(), after.clock)
    after.send(*tail)
    key = lambda lab: (lab.user_id, lab.scored_at, lab.label)  # noqa: E731
    assert sorted(map(key, after.labels)) == sorted(map(key, straight.labels))
    assert len(straight.labels) >= len(users) * 3


def test_a_decision_marks_the_open_snapshot_whose_horizon_covers_it() -> None:
    """Snapshot times never depend on the score (both drivers take the same examples);
    a flagged score between snapshots marks the latest open one for the uplift."""
    from array import array

    from stream_app.core.features import Pending
    from stream_app.core.labels import LabelBook

    book = LabelBook(H, DAY, ["x"])
    state = UserState("u", 1)
    assert book.maybe_snapshot(state, T0, 0.1, [0.0], "none", 0)
    assert not book.maybe_snapshot(state, T0 + 3600, 0.7, [0.0], "holdout", 0)  # too soon
    assert [p.group for p in state.pending] == ["holdout"]
    assert book.maybe_snapshot(state, T0 + DAY, 0.2, [0.0], "treatment", 0)
    assert [p.group for p in state.pending] == ["holdout", "treatment"]
    state.pending.append(Pending(T0 - 2 * H, 0.1, array("d", [0.0]), "none", 0))
    state.pending.sort(key=lambda p: p.scored_at)
    book.mark_group(state, T0 + H + 3600, "treatment")  # only the second one still covers it
    assert [p.group for p in state.pending] == ["none", "holdout", "treatment"]


def test_a_redelivery_beyond_the_id_ring_is_still_a_duplicate() -> None:
    """Live, a user's row remembers the offset of its last event: a heavy user's 100
    events redelivered after a crash are all duplicates, though the ring holds 64 ids."""
    run = Run()
    events = [ev("heavy", T0 + i, eid=f"e{i}") for i in range(100)]
    for offset, e in enumerate(events):
        assert run.engine.process(run.store, run.clock, e, offset=offset).status == "applied"
    redelivered = [
        run.engine.process(run.store, run.clock, e, offset=i) for i, e in enumerate(events)
    ]
    assert {r.status for r in redelivered} == {"duplicate"}
    assert run.store["heavy"].events_total == 100
    again = run.engine.process(run.store, run.clock, ev("heavy", T0 + 200, eid="new"), offset=100)
    assert again.status == "applied"
