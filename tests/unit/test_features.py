"""Per-user features on hand-computed cases."""

from __future__ import annotations

import json
import math
from array import array

import pytest

from schemas.events import EVENT_ADAPTER
from stream_app.core.features import (
    N_SLOTS,
    FeatureSpace,
    Pending,
    UserState,
    event_hash,
    feature_names,
)

DAY = 86400.0
T0 = 1767614400.0  # 2026-01-05T12:00:00Z
SPACE = FeatureSpace((DAY, 7 * DAY, 30 * DAY), session_gap=1800.0)


def ev(etype: str, t: float, eid: str | None = None, **fields: object):  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    data = {
        "event_id": eid or f"{etype}-{t}",
        "user_id": "u1",
        "event_type": etype,
        "ts": datetime.fromtimestamp(t, tz=UTC).isoformat(),
        **fields,
    }
    return EVENT_ADAPTER.validate_json(json.dumps(data))


def build(*events) -> UserState:  # type: ignore[no-untyped-def]
    state = SPACE.new_state("u1")
    for e in events:
        state.apply(e, e.ts.timestamp(), event_hash(e.event_id), SPACE)
    return state


def test_names_are_stable_and_documented() -> None:
    names = feature_names((DAY, 7 * DAY, 30 * DAY))
    assert names[:3] == ["session_starts_1d", "page_views_1d", "product_views_1d"]
    assert "purchases_7d" in names and "revenue_30d" in names and "sessions_1d" in names
    assert len(names) == len(set(names)) == 3 * 13 + 16
    assert SPACE.names == names


def test_decayed_count_halves_per_half_life() -> None:
    f = build(ev("page_view", T0)).features(T0 + DAY, SPACE)
    assert f["page_views_1d"] == pytest.approx(math.log1p(0.5))
    assert f["page_views_7d"] == pytest.approx(math.log1p(2 ** (-1 / 7)))
    assert f["page_views_30d"] == pytest.approx(math.log1p(2 ** (-1 / 30)))
    assert f["purchases_30d"] == 0.0


def test_revenue_and_recency() -> None:
    s = build(ev("purchase", T0, revenue=100.0), ev("purchase", T0 + DAY, revenue=100.0))
    f = s.features(T0 + DAY, SPACE)
    assert f["revenue_1d"] == pytest.approx(math.log1p(150.0))
    assert f["days_since_last_event"] == 0.0
    f = s.features(T0 + 3 * DAY, SPACE)
    assert f["days_since_last_event"] == pytest.approx(2.0)
    assert f["days_since_last_purchase"] == pytest.approx(2.0)
    assert f["tenure_days"] == pytest.approx(3.0)
    assert f["has_purchased"] == 1.0
    assert f["log_purchases_total"] == pytest.approx(math.log1p(2))


def test_never_purchased_falls_back_to_tenure() -> None:
    f = build(ev("page_view", T0)).features(T0 + 4 * DAY, SPACE)
    assert f["has_purchased"] == 0.0
    assert f["days_since_last_purchase"] == pytest.approx(4.0)


def test_sessions_are_gap_based() -> None:
    s = build(ev("page_view", T0), ev("page_view", T0 + 600), ev("page_view", T0 + 600 + 1800))
    assert s.sessions_total == 2
    f = s.features(T0 + 2400, SPACE)
    assert f["log_sessions_total"] == pytest.approx(math.log1p(2))


def test_cart_abandonment_ratings_returns_categories() -> None:
    s = build(
        ev("add_to_cart", T0, "a1", category="books"),
        ev("add_to_cart", T0, "a2", category="books"),
        ev("review", T0, "r1", rating=2),
        ev("review", T0, "r2", rating=4),
        ev("return", T0, "x1", revenue=10.0),
        ev("page_view", T0, "p1", category="toys"),
    )
    f = s.features(T0, SPACE)
    assert f["cart_abandonment"] == pytest.approx(2 / 3)
    assert f["rating_mean"] == pytest.approx(3.0)
    assert f["return_ratio"] == pytest.approx(1.0)
    assert f["distinct_categories"] == 2.0
    assert f["revenue_30d"] == 0.0  # returns are counted, not added to revenue
    assert s.top_categories(1) == ["books"]


def test_out_of_order_events_give_the_same_features() -> None:
    a = ev("page_view", T0, "a")
    b = ev("purchase", T0 - 1200, "b", revenue=30.0)
    c = ev("search", T0 - 600, "c")
    in_order = build(b, c, a).features(T0 + DAY, SPACE)
    shuffled = build(a, b, c).features(T0 + DAY, SPACE)
    # Counts, revenue and recency are exact for any order. A session is credited at the
    # time of its first *arriving* event (a late event never opens a session), so session
    # features may differ by the lateness: documented in docs/features.md.
    for name, value in in_order.items():
        if not name.startswith(("sessions_", "session_trend", "events_per_session")):
            assert value == pytest.approx(shuffled[name], rel=1e-12, abs=1e-12), name


def test_years_of_history_do_not_overflow() -> None:
    s = build(ev("page_view", T0, "a"), ev("page_view", T0 + 1000 * DAY, "b"))
    f = s.features(T0 + 1000 * DAY, SPACE)
    assert all(math.isfinite(v) for v in f.values())
    assert f["page_views_1d"] == pytest.approx(math.log1p(1.0))
    assert f["page_views_30d"] == pytest.approx(math.log1p(1 + 2 ** (-1000 / 30)))


def test_purchase_only_stream_degrades_gracefully() -> None:
    s = build(*(ev("purchase", T0 + i * 10 * DAY, f"p{i}", revenue=20.0) for i in range(5)))
    f = s.features(T0 + 60 * DAY, SPACE)
    assert all(math.isfinite(v) for v in f.values())
    assert f["events_per_session"] == pytest.approx(1.0)
    assert f["cart_abandonment"] == 0.0
    assert f["rating_mean"] == 3.0


def test_memory_is_bounded() -> None:
    events = [ev("product_view", T0 + i * 60, f"e{i}", category=f"c{i % 50}") for i in range(2000)]
    s = build(*events)
    assert len(s.categories) <= 8
    assert len(s.recent) == 8 * SPACE.dedup_capacity


def test_dedup_ring_remembers_recent_ids_only() -> None:
    s = SPACE.new_state("u1")
    first = event_hash("first")
    s.remember(first)
    assert s.seen(first) and not s.seen(event_hash("other"))
    for i in range(SPACE.dedup_capacity):
        s.remember(event_hash(f"e{i}"))
    assert not s.seen(first)  # evicted after capacity newer ids


def test_json_round_trip_keeps_everything() -> None:
    s = build(
        ev("purchase", T0, "a", revenue=5.0, category="books"), ev("review", T0, "b", rating=5)
    )
    s.pending.append(Pending(T0, 0.3, array("d", [0.0] * len(SPACE.names)), "holdout", 2))
    restored = UserState.from_dict(json.loads(json.dumps(s.to_dict())))
    assert restored.vector(T0 + DAY, SPACE) == s.vector(T0 + DAY, SPACE)
    assert restored.seen(event_hash("a")) and restored.seen(event_hash("b"))
    assert restored.to_dict() == s.to_dict()
    assert restored.pending[0].group == "holdout"
    # 0.2 kept a treated flag where the group now is
    legacy = s.to_dict()
    legacy["p"][0][3] = True
    assert UserState.from_dict(legacy).pending[0].group == "treatment"


def test_long_silence_reanchors_without_changing_the_sums() -> None:
    """A gap of more than 600 shortest half-lives moves the anchor (the stored sums would
    overflow otherwise); the decayed values must be what direct decay gives."""
    space = FeatureSpace((3600.0, DAY), session_gap=1800.0)
    state = space.new_state("u1")
    times = [T0, T0 + 600.0, T0 + 700 * 3600.0, T0 + 700 * 3600.0 + 60.0]
    for i, t in enumerate(times):
        e = ev("page_view", t, eid=f"e{i}")
        state.apply(e, t, event_hash(e.event_id), space)
    assert state.anchor > T0  # it did move
    at = times[-1] + 1800.0
    f = state.features(at, space)
    for h, lab in ((3600.0, "1h"), (DAY, "1d")):
        direct = sum(2 ** (-(at - t) / h) for t in times)
        assert f[f"page_views_{lab}"] == pytest.approx(math.log1p(direct), rel=1e-12)
        direct_sessions = sum(2 ** (-(at - t) / h) for t in (times[0], times[2]))
        assert f[f"sessions_{lab}"] == pytest.approx(math.log1p(direct_sessions), rel=1e-12)
    assert UserState.from_dict(json.loads(json.dumps(state.to_dict()))).vector(
        at, space
    ) == state.vector(at, space)


def test_state_written_by_0_1_still_loads() -> None:
    """0.1 stored the decayed sums as one JSON list per half-life."""
    s = build(ev("purchase", T0, revenue=10.0), ev("page_view", T0 + 60))
    doc = json.loads(json.dumps(s.to_dict()))
    n = N_SLOTS
    doc["s"] = [list(s.sums[k * n : (k + 1) * n]) for k in range(3)]
    old = UserState.from_dict(doc)
    assert old.vector(T0 + DAY, SPACE) == s.vector(T0 + DAY, SPACE)


def test_a_purchase_log_customer_by_hand() -> None:
    """What a public purchase log gives the model, pinned on a hand-computed customer: $30
    at day 0, $10 at day 10, scored at day 40 (one purchase per session, no browsing)."""
    s = build(
        ev("purchase", T0, "p0", revenue=30.0), ev("purchase", T0 + 10 * DAY, "p1", revenue=10.0)
    )
    f = s.features(T0 + 40 * DAY, SPACE)
    ln2 = math.log(2.0)
    assert f["days_since_last_event"] == pytest.approx(30.0)
    assert f["log_days_since_last_event"] == pytest.approx(math.log(31.0))
    assert f["days_since_last_purchase"] == pytest.approx(30.0)
    assert f["tenure_days"] == pytest.approx(40.0)
    assert f["has_purchased"] == 1.0
    assert f["log_purchases_total"] == f["log_sessions_total"] == pytest.approx(math.log(3.0))
    # decayed at 30 days: the day-0 purchase weighs 2**(-40/30), the day-10 one 2**(-1)
    assert f["purchases_30d"] == pytest.approx(math.log1p(2 ** (-4 / 3) + 0.5))
    assert f["revenue_30d"] == pytest.approx(math.log1p(30 * 2 ** (-4 / 3) + 10 * 0.5))
    assert f["purchases_7d"] == pytest.approx(math.log1p(2 ** (-40 / 7) + 2 ** (-30 / 7)))
    # usual gap between sessions = 40 days / (2 - 1)
    assert f["silence_vs_usual_gap"] == pytest.approx(math.log(30.1 / 40.1))
    assert f["events_per_session"] == pytest.approx(1.0)
    short = (2.0**-40 + 2.0**-30) * ln2  # events per day at the 1-day half-life
    long = (2 ** (-4 / 3) + 0.5) * ln2 / 30
    assert f["activity_trend"] == pytest.approx(math.log((short + 0.05) / (long + 0.05)))
    assert (f["cart_abandonment"], f["return_ratio"], f["rating_mean"]) == (0.0, 0.0, 3.0)


def test_state_written_by_0_2_still_loads() -> None:
    """0.2 had no silence-spell count and 7-field pending snapshots (all learned from)."""
    from stream_app.core.labels import LabelBook

    s = build(ev("purchase", T0, revenue=10.0))
    s.pending.append(Pending(T0, 0.3, array("d", [0.0] * len(SPACE.names)), "none", 2))
    doc = json.loads(json.dumps(s.to_dict()))
    del doc["ss"]
    doc["p"] = [row[:7] for row in doc["p"]]
    old = UserState.from_dict(doc)
    assert old.spell_snapshots == 0
    book = LabelBook(DAY, DAY, SPACE.names)
    (label,) = book.resolve_expired(old, T0 + DAY)
    assert label.train and label.label == 1


def test_sessions_missed_grows_with_silence_at_the_users_own_pace() -> None:
    """Two users silent for three days: one who came daily has missed about three
    sessions, one who came once in the month hardly any (issue #19: decaying engagement)."""
    daily = build(*(ev("session_start", T0 + d * DAY, f"d{d}") for d in range(30)))
    once = build(ev("session_start", T0 + 29 * DAY, "o"))
    at = T0 + 32 * DAY
    rate = SPACE.rate_long  # decayed count -> sessions per day at the 30-day half-life
    sessions_30d = sum(2 ** (-(32 - d) / 30) for d in range(30))
    assert daily.features(at, SPACE)["sessions_missed"] == pytest.approx(3 * sessions_30d * rate)
    assert once.features(at, SPACE)["sessions_missed"] == pytest.approx(3 * 2 ** (-3 / 30) * rate)
    assert (
        daily.features(at, SPACE)["sessions_missed"]
        > 10 * once.features(at, SPACE)["sessions_missed"]
    )


def test_session_trend_is_negative_when_sessions_thin_out() -> None:
    steady = build(*(ev("session_start", T0 + d * DAY, f"s{d}") for d in range(60)))
    fading = build(
        *(ev("session_start", T0 + d * DAY, f"f{d}") for d in range(60) if d < 40 or d % 7 == 0)
    )
    at = T0 + 60 * DAY
    assert (
        fading.features(at, SPACE)["session_trend"]
        < steady.features(at, SPACE)["session_trend"] - 0.3
    )
