"""The retention policy as a user of it sees it: who gets flagged, when, and what is sent."""

from __future__ import annotations

import json
import math

import pytest

from schemas.outputs import Decision, Intervention
from stream_app.core.features import UserState
from stream_app.core.policy import (
    UserPolicy,
    decision_message,
    intervention_message,
)
from tests.unit.policy_harness import Harness, config

NO_TIER = {"tier_increase": False}
NO_JUMP = {"jump": 1.0}


# --- tiers and spikes -------------------------------------------------------------------
def test_tiers_split_risk_at_the_configured_thresholds() -> None:
    policy = Harness().policy
    assert [policy.tier(p) for p in (0.0, 0.299, 0.3, 0.599, 0.6, 1.0)] == [0, 0, 1, 1, 2, 2]
    custom = Harness(config(tiers={"mid": 0.1, "high": 0.2})).policy
    assert [custom.tier(p) for p in (0.05, 0.1, 0.15, 0.2)] == [0, 1, 1, 2]


def test_a_jump_over_the_users_own_baseline_is_flagged() -> None:
    h = Harness(config(spike=NO_TIER))
    assert h.series("u", [(0, 0.1), (1, 0.1), (2, 0.1)]) == [None, None, None]
    out = h.score("u", 3, 0.4)
    assert out is not None and out.outcome == "treatment"
    assert out.previous_p == 0.1 and out.baseline == pytest.approx(0.1)
    assert out.tier == "mid" and out.previous_tier == "low"


def test_a_rise_smaller_than_the_jump_is_not_a_spike() -> None:
    h = Harness(config(spike=NO_TIER))
    assert h.series("u", [(0, 0.3), (1, 0.3), (2, 0.4)]) == [None, None, None]


def test_a_tier_increase_is_a_spike_even_without_a_jump() -> None:
    h = Harness(config(spike=NO_JUMP))
    assert h.series("u", [(0, 0.25), (1, 0.28)]) == [None, None]
    out = h.score("u", 2, 0.31)
    assert out is not None and (out.previous_tier, out.tier) == ("low", "mid")


def test_risk_below_the_entry_threshold_is_never_flagged() -> None:
    h = Harness(config(spike={"entry": 0.5, "prior_entry": 0.5, "rearm_below": 0.2}))
    assert h.series("u", [(0, 0.01), (1, 0.45), (2, 0.49)]) == [None, None, None]
    assert h.score("u", 3, 0.55) is not None


def test_silence_deadline_scores_count_and_say_so() -> None:
    h = Harness()
    h.score("u", 0, 0.05)
    out = h.score("u", 7, 0.45, trigger="silence")
    assert out is not None and out.trigger == "silence"
    assert decision_message(out).trigger == "silence"


def test_the_baseline_is_an_event_time_ewma_with_the_configured_half_life() -> None:
    h = Harness(config(spike={"baseline_half_life": "7d"}))
    h.score("u", 0, 0.0)
    h.score("u", 7, 0.4)  # one half-life later: halfway from 0.0 to 0.4
    assert UserPolicy.load(h.users["u"].extra).baseline == pytest.approx(0.2)
    h.score("u", 7 + 1 / 24, 0.0)  # an hour later barely moves it
    assert UserPolicy.load(h.users["u"].extra).baseline == pytest.approx(0.2 * 2 ** (-1 / 168))


# --- hysteresis, cooldown, cap ------------------------------------------------------------
def test_a_flagged_user_rearms_only_when_risk_falls_below_the_lower_threshold() -> None:
    h = Harness(config(limits={"cooldown": 0}))
    assert h.score("u", 0, 0.1) is None
    assert h.score("u", 1, 0.5) is not None
    # Dips that stay above rearm_below (0.2) do not re-arm, however big the next rise.
    assert h.series("u", [(2, 0.25), (3, 0.65), (4, 0.21), (5, 0.7)]) == [None] * 4
    assert h.score("u", 6, 0.15) is None  # re-armed
    out = h.score("u", 7, 0.5)
    assert out is not None and out.outcome == "treatment"


def test_cooldown_suppresses_a_second_intervention_until_it_has_passed() -> None:
    h = Harness(config(limits={"cooldown": "7d"}))
    h.series("u", [(0, 0.1), (1, 0.5), (2, 0.1)])
    second = h.score("u", 3, 0.5)
    assert second is not None
    assert (second.outcome, second.suppressed_by) == ("suppressed", "cooldown")
    assert second.intervention_id is None and intervention_message(second) is None
    # Suppressed is not flagged: the user stays armed and is flagged once cooldown ends.
    later = h.score("u", 8.5, 0.6)
    assert later is not None and later.outcome == "treatment"


def test_the_per_user_cap_counts_interventions_in_a_rolling_event_time_window() -> None:
    h = Harness(config(limits={"cooldown": 0, "user_cap": 2, "user_window": "30d"}))
    outcomes = []
    for day in (0, 5, 10, 29, 41):
        h.score("u", day, 0.1)  # re-arm
        out = h.score("u", day + 1, 0.5)
        assert out is not None
        outcomes.append(out.suppressed_by or out.outcome)
    # Days 1 and 6 are sent; 11 and 30 find two in the last 30 days; by day 42 both aged out.
    assert outcomes == ["treatment", "treatment", "user_cap", "user_cap", "treatment"]


# --- budget and breaker -------------------------------------------------------------------
def spike_users(h: Harness, users: list[str], day: float) -> list[str]:
    results = []
    for u in users:
        h.score(u, day - 0.01, 0.05)
        out = h.score(u, day, 0.5)
        assert out is not None
        results.append(out.suppressed_by or out.outcome)
    return results


def test_the_global_budget_caps_interventions_per_event_time_window() -> None:
    h = Harness(config(limits={"budget": 3, "budget_window": "1d"}))
    users = [f"u{i}" for i in range(5)]
    assert spike_users(h, users, 1) == ["treatment"] * 3 + ["budget"] * 2
    # Two days on the window has passed; the suppressed users are still armed.
    again = [h.score(u, 3, 0.6) for u in users[3:]]
    assert [o.outcome if o else None for o in again] == ["treatment", "treatment"]


def test_the_budget_is_split_over_partitions() -> None:
    h = Harness(config(limits={"budget": 10}), partitions=4)
    assert h.guard.budget_left(0.0) == 3


def breaker_cfg() -> Harness:
    return Harness(
        config(breaker={"min_scored": 20, "open_share": 0.3, "close_share": 0.15, "window": "1d"})
    )


def test_the_breaker_opens_when_too_many_scored_users_spike_and_stops_every_send() -> None:
    h = breaker_cfg()
    for i in range(20):
        h.score(f"calm{i}", 0.1, 0.05)
    assert not h.guard.breaker_open
    results = spike_users(h, [f"u{i}" for i in range(30)], 0.2)
    # 20 calm + i spiking users: the share passes 30% at the 9th spike (9 / 29).
    assert results[:8] == ["treatment"] * 8
    assert set(results[8:]) == {"breaker_open"}
    change = h.guard.pop_change()
    assert change is not None and change.opened and "30.0%" in change.reason
    assert h.guard.pop_change() is None  # reported once
    assert h.guard.breaker_open and h.guard.reason.startswith("open: ")


def test_the_breaker_closes_by_itself_once_the_share_falls_back() -> None:
    h = breaker_cfg()
    for i in range(20):
        h.score(f"calm{i}", 0.1, 0.05)
    spike_users(h, [f"u{i}" for i in range(30)], 0.2)
    h.guard.pop_change()
    # A day later the spikes have left the window; calm users dilute the share.
    for i in range(40):
        h.score(f"calm{i}", 1.5, 0.05)
    assert not h.guard.breaker_open
    change = h.guard.pop_change()
    assert change is not None and not change.opened and "close_share" in change.reason
    assert spike_users(h, ["late"], 1.6) == ["treatment"]


def test_the_breaker_does_not_judge_too_few_scored_users() -> None:
    h = breaker_cfg()
    assert spike_users(h, [f"u{i}" for i in range(10)], 1) == ["treatment"] * 10
    assert not h.guard.breaker_open


def restore(h: Harness) -> None:
    """Swap in a guard rebuilt from the old one's JSON form (a restart)."""
    restored = h.policy.new_guard()
    restored.restore(json.loads(json.dumps(h.guard.to_dict())))
    h.guard = restored


def test_a_restored_guard_keeps_its_budget() -> None:
    h = Harness(config(limits={"budget": 2}))
    spike_users(h, ["a", "b"], 1)
    restore(h)
    assert spike_users(h, ["c"], 1.1) == ["budget"]


def test_a_restored_guard_keeps_its_breaker_open_until_the_share_falls() -> None:
    h = breaker_cfg()
    for i in range(20):
        h.score(f"calm{i}", 0.1, 0.05)
    spike_users(h, [f"u{i}" for i in range(30)], 0.2)
    restore(h)
    assert h.guard.breaker_open and h.guard.reason.startswith("open: ")
    assert spike_users(h, ["next"], 0.3) == ["breaker_open"]
    for i in range(40):
        h.score(f"calm{i}", 1.5, 0.05)
    assert not h.guard.breaker_open


# --- holdout ------------------------------------------------------------------------------
def test_holdout_users_are_flagged_alike_but_get_no_intervention() -> None:
    h = Harness(config(holdout={"share": 1.0}, limits={"cooldown": "7d"}))
    h.score("u", 0, 0.1)
    out = h.score("u", 1, 0.5)
    assert out is not None and out.outcome == "holdout" and out.holdout
    assert out.intervention_id is None and intervention_message(out) is None
    assert decision_message(out).outcome == "holdout"
    assert out.group == "holdout"
    # The same limits apply to the holdout, so it stays comparable with the treated.
    h.score("u", 2, 0.1)
    again = h.score("u", 3, 0.5)
    assert again is not None and again.suppressed_by == "cooldown" and again.group == "none"


# --- ids and versions ---------------------------------------------------------------------
def test_replaying_the_same_scores_gives_the_same_decisions_and_ids() -> None:
    points = [(0, 0.1), (1, 0.5), (2, 0.1), (9, 0.6), (10, 0.05), (20, 0.7)]
    first = Harness(config(holdout={"share": 0.5})).series("u", points)
    second = Harness(config(holdout={"share": 0.5})).series("u", points)
    assert [o for o in first if o] == [o for o in second if o]
    ids = {o.decision_id for o in first if o}
    assert len(ids) == len([o for o in first if o])  # distinct per score


def test_ids_change_with_trigger_time_and_policy_version() -> None:
    def one(cfg_extra: dict[str, object], day: float, trigger: str) -> str:
        h = Harness(config(**cfg_extra))  # type: ignore[arg-type]
        h.score("u", 0, 0.1)
        out = h.score("u", day, 0.5, trigger=trigger)
        assert out is not None and out.intervention_id is not None
        assert out.intervention_id != out.decision_id
        return out.decision_id

    base = one({}, 1, "event")
    assert base == one({}, 1, "event")
    assert base != one({}, 1, "silence")
    assert base != one({}, 1.5, "event")
    assert base != one({"reasons": {"k": 2}}, 1, "event")


def test_the_policy_version_stamps_decisions_and_follows_the_config() -> None:
    a, b = Harness(), Harness(config(limits={"budget": 999}))
    assert a.policy.version != b.policy.version and len(a.policy.version) == 12
    a.score("u", 0, 0.1)
    out = a.score("u", 1, 0.5)
    assert out is not None and out.policy_version == a.policy.version
    assert Harness().policy.version == a.policy.version


# --- state, reasons, messages, switches ---------------------------------------------------
def test_policy_state_survives_the_users_table_round_trip() -> None:
    plain, stored = (
        Harness(config(limits={"cooldown": "7d"})),
        Harness(config(limits={"cooldown": "7d"})),
    )
    points = [(0, 0.1), (1, 0.5), (2, 0.1), (3, 0.5), (9, 0.05), (10, 0.6)]
    for day, p in points:
        plain.score("u", day, p)
        stored.score("u", day, p)
        row = json.loads(json.dumps(stored.users["u"].to_dict()))
        stored.users["u"] = UserState.from_dict(row)
    assert plain.decisions == stored.decisions and len(plain.decisions) >= 3
    assert stored.users["u"].extra == plain.users["u"].extra


def test_decisions_carry_the_scorers_reason_codes() -> None:
    h = Harness(config(reasons={"k": 2}))
    h.score("u", 0, 0.1)
    out = h.score("u", 1, 0.5, log_days_since_last_event=math.log1p(20))
    assert out is not None
    assert out.reasons == [("log_days_since_last_event", 1.3 * (math.log1p(20) - math.log1p(7)))]
    msg = decision_message(out)
    assert [(r.name, r.value) for r in msg.reasons] == out.reasons


def test_messages_validate_and_survive_json() -> None:
    h = Harness()
    h.score("u", 0, 0.1)
    out = h.score("u", 1, 0.5, has_purchased=1.0)
    assert out is not None
    decision, intervention = decision_message(out), intervention_message(out)
    assert intervention is not None and intervention.action == "coupon"
    assert Decision.model_validate_json(decision.model_dump_json()) == decision
    assert Intervention.model_validate_json(intervention.model_dump_json()) == intervention
    assert decision.intervention_id == intervention.intervention_id
    assert intervention.decision_id == decision.decision_id
    assert decision.ts.timestamp() == out.ts and decision.policy_version == out.policy_version


def test_messages_carry_the_wall_clock_time_the_driver_passes_as_decided_at() -> None:
    """ts is event time (a backfill's is months old); decided_at is the worker's clock at
    the decision, injected by the driver: core never reads the clock."""
    h = Harness()
    h.score("u", 0, 0.1)
    out = h.score("u", 1, 0.5, has_purchased=1.0)
    assert out is not None
    now = 1_796_083_200.25  # 2026-12-01T00:00:00.25Z; the score's ts is in 1970
    decision = decision_message(out, decided_at=now)
    intervention = intervention_message(out, decided_at=now)
    assert intervention is not None
    assert decision.decided_at is not None and decision.decided_at.timestamp() == now
    assert intervention.decided_at == decision.decided_at
    assert json.loads(intervention.model_dump_json())["decided_at"] == "2026-12-01T00:00:00.250000Z"
    assert decision.ts.timestamp() == out.ts != now
    # The call the worker made before decided_at existed still works: not stamped.
    assert decision_message(out).decided_at is None


def test_a_disabled_policy_decides_nothing() -> None:
    h = Harness(config(enabled=False))
    assert h.series("u", [(0, 0.1), (1, 0.9)]) == [None, None]


def test_train_on_treated_decides_which_groups_reach_the_learner() -> None:
    on, off = Harness().policy, Harness(config(train_on_treated=False)).policy
    assert all(on.trains_on(g) for g in ("none", "treatment", "holdout"))
    assert [off.trains_on(g) for g in ("none", "treatment", "holdout")] == [True, False, True]
