"""Properties of the engine over generated event sequences."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import EVENT_ADAPTER, EVENT_TYPES
from stream_app.core.config import EngineConfig
from stream_app.core.engine import Engine
from stream_app.core.features import UserState

T0 = 1767614400.0
CFG = EngineConfig(
    horizon=5 * 86400.0,
    snapshot_interval=86400.0,
    rescore_after=(86400.0, 2 * 86400.0),
    allowed_lateness=3600.0,
)


def make(user: str, t: float, etype: str, n: int) -> Any:
    extra: dict[str, Any] = {}
    if etype in ("purchase", "return"):
        extra["revenue"] = 10.0
    if etype == "review":
        extra["rating"] = 4
    data = {
        "event_id": f"e{n}",
        "user_id": user,
        "event_type": etype,
        "ts": datetime.fromtimestamp(t, tz=UTC).isoformat(),
        **extra,
    }
    return EVENT_ADAPTER.validate_json(json.dumps(data))


_events = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]), st.floats(0, 20 * 86400), st.sampled_from(EVENT_TYPES)
    ),
    min_size=1,
    max_size=60,
)


def replay(events: list[Any]) -> tuple[dict[str, UserState], list[Any], list[str]]:
    engine = Engine(CFG)
    store: dict[str, UserState] = {}
    clock = engine.new_clock()
    labels, statuses = [], []
    for e in events:
        r = engine.process(store, clock, e)
        statuses.append(r.status)
        labels += r.labels
        due = engine.advance(store, clock)
        if due is not None:
            labels += due.labels
    return store, labels, statuses


@settings(max_examples=150, deadline=None)
@given(_events)
def test_sorted_replay_never_raises_and_conserves_events(raw: list[tuple[str, float, str]]) -> None:
    events = sorted(
        (make(u, T0 + dt, et, i) for i, (u, dt, et) in enumerate(raw)), key=lambda e: e.ts
    )
    store, labels, statuses = replay(events)
    assert statuses.count("applied") == len(events)  # sorted, unique ids: nothing refused
    assert sum(s.events_total for s in store.values()) == len(events)
    for lab in labels:
        assert lab.label in (0, 1)
        assert lab.scored_at < lab.resolved_at <= lab.scored_at + CFG.horizon
    # at most one open snapshot per user per interval
    for s in store.values():
        times = [p.scored_at for p in s.pending]
        assert all(b - a >= CFG.snapshot_interval for a, b in zip(times, times[1:], strict=False))


@settings(max_examples=100, deadline=None)
@given(_events, st.randoms(use_true_random=False))
def test_replaying_everything_twice_changes_nothing(
    raw: list[tuple[str, float, str]], rnd: random.Random
) -> None:
    events = sorted(
        (make(u, T0 + dt, et, i) for i, (u, dt, et) in enumerate(raw)), key=lambda e: e.ts
    )
    once, labels_once, _ = replay(events)
    # at-least-once delivery: every event may arrive again right after itself
    doubled = [e for ev in events for e in ((ev, ev) if rnd.random() < 0.5 else (ev,))]
    twice, labels_twice, statuses = replay(doubled)
    assert statuses.count("duplicate") == len(doubled) - len(events)
    assert {k: v.to_dict() for k, v in once.items()} == {k: v.to_dict() for k, v in twice.items()}
    assert labels_once == labels_twice
