"""The policy's judged risk (spike.risk = "left") and its two entries (issue #19)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from schemas.events import EVENT_ADAPTER
from schemas.outputs import Decision
from stream_app.core.features import UserState, event_hash
from stream_app.core.policy import Policy, PolicyConfig, decision_message, load_policy
from stream_app.core.policy.state import SCALE_KEY, UserPolicy
from stream_app.errors import ConfigError
from tests.unit.policy_harness import DAY, SPACE, T0, Harness, config

H = 30 * DAY


def visits(user: str, every_days: float, until_day: float) -> UserState:
    """A user with one page view every ``every_days`` from day 0 to ``until_day``."""
    state = SPACE.new_state(user)
    k = 0
    while k * every_days <= until_day:
        t = T0 + k * every_days * DAY
        e = EVENT_ADAPTER.validate_json(
            json.dumps(
                {
                    "event_id": f"{user}-{k}",
                    "user_id": user,
                    "event_type": "page_view",
                    "ts": datetime.fromtimestamp(t, tz=UTC).isoformat(),
                }
            )
        )
        state.apply(e, t, event_hash(e.event_id), SPACE)
        k += 1
    return state


class ReadyScorer:
    """A learned model's stand-in: ready, with no reason codes."""

    version = 3
    ready = True

    def reason_codes(self, vec: Sequence[float], k: int = 3) -> list[tuple[str, float]]:
        return []


def left(p: float, rate: float) -> float:
    quiet = math.exp(-rate * H / DAY)
    return (p - quiet) / (1 - quiet)


def test_the_session_rate_is_the_users_recent_sessions_a_day() -> None:
    # Steady visits: the decayed count over the 30-day half-life reads about 1 / gap.
    for every in (1.0, 3.0, 10.0):
        rate = SPACE.session_rate(visits("u", every, 200))
        assert rate == pytest.approx(1 / every, rel=0.2)
    assert SPACE.session_rate(SPACE.new_state("nobody")) == 0.0


def test_a_short_history_reads_as_a_lighter_user() -> None:
    """The decayed count is not divided by the time the user has been around: nine days of
    a visit every three days read as 0.08 a day, not 0.33 (docs/policy.md, "Risk": the
    corrected estimate was measured and flagged worse, docs/model.md)."""
    assert SPACE.session_rate(visits("new", 3.0, 9)) == pytest.approx(0.084, abs=0.005)


def test_left_discounts_the_quiet_a_loyal_user_of_that_rate_would_have() -> None:
    policy = Policy(PolicyConfig(), SPACE, horizon=H)
    light, heavy = visits("light", 20.0, 200), visits("heavy", 2.0, 200)
    r_light, r_heavy = SPACE.session_rate(light), SPACE.session_rate(heavy)
    assert policy.risk(light, 0.5) == pytest.approx(left(0.5, r_light))
    assert policy.risk(heavy, 0.5) == pytest.approx(left(0.5, r_heavy))
    # A session every 20 days: a quiet month is likely (0.15 to 0.22), so p = 0.5 is less
    # risk of having left; a session every 2 days: a quiet month means they left.
    assert 0.15 < math.exp(-r_light * 30) < 0.23
    assert policy.risk(light, 0.5) < 0.42
    assert policy.risk(heavy, 0.5) == pytest.approx(0.5, abs=1e-4)
    # Below the loyal quiet there is no sign of leaving; never outside [0, 1].
    assert policy.risk(light, 0.1) == 0.0
    assert policy.risk(light, 1.0) == 1.0
    assert policy.risk(SPACE.new_state("nobody"), 0.9) == 0.0


def test_the_horizon_sets_the_loyal_quiet() -> None:
    light = visits("light", 10.0, 200)
    rate = SPACE.session_rate(light)
    week = Policy(PolicyConfig(), SPACE, horizon=7 * DAY)
    quiet = math.exp(-rate * 7)
    assert week.risk(light, 0.6) == pytest.approx((0.6 - quiet) / (1 - quiet))
    assert week.risk(light, 0.6) < Policy(PolicyConfig(), SPACE, horizon=H).risk(light, 0.6)


def test_risk_p_judges_the_score_itself() -> None:
    policy = Policy(PolicyConfig.model_validate({"spike": {"risk": "p"}}), SPACE, horizon=H)
    assert policy.risk(visits("light", 20.0, 200), 0.5) == 0.5


def test_a_light_users_silence_is_not_flagged_where_a_regulars_is() -> None:
    cfg = config(spike={"risk": "left", "entry": 0.38, "prior_entry": 0.26})
    h = Harness(cfg)
    h.policy = Policy(cfg, SPACE, horizon=H)
    h.users["light"] = visits("light", 20.0, 100)
    h.users["regular"] = visits("regular", 3.0, 100)
    for user in ("light", "regular"):
        h.score(user, 100, 0.01)  # the baseline
    # The cold-start prior's p after 14 days of silence, for both.
    p14 = 1 / (1 + math.exp(4.5 - 1.3 * math.log1p(14)))
    assert h.score("light", 114, p14, trigger="silence") is None
    out = h.score("regular", 114, p14, trigger="silence")
    assert out is not None and out.p == p14
    assert out.risk == pytest.approx(left(p14, SPACE.session_rate(h.users["regular"])))


def test_the_entry_depends_on_which_scorer_scored() -> None:
    cfg = config(spike={"risk": "p", "entry": 0.5, "prior_entry": 0.3})
    h = Harness(cfg)
    h.score("prior", 0, 0.01)
    assert h.score("prior", 1, 0.4) is not None  # the prior scores: 0.4 >= prior_entry
    h.scorer = ReadyScorer()  # type: ignore[assignment]
    h.score("model", 0, 0.01)
    assert h.score("model", 1, 0.4) is None  # the learned model: 0.4 < entry
    assert h.score("model", 2, 0.55) is not None


def test_decisions_carry_p_and_the_judged_risk() -> None:
    cfg = config(spike={"risk": "left", "entry": 0.38, "prior_entry": 0.26})
    h = Harness(cfg)
    h.policy = Policy(cfg, SPACE, horizon=H)
    h.users["u"] = visits("u", 5.0, 100)
    h.score("u", 100, 0.05)
    out = h.score("u", 114, 0.5, trigger="silence")
    assert out is not None and out.risk is not None
    msg = Decision.model_validate_json(decision_message(out).model_dump_json())
    assert msg.p == 0.5
    assert msg.risk == pytest.approx(out.risk) and msg.risk < 0.5
    # previous_p and the baseline are on the risk scale too.
    assert msg.previous_p == pytest.approx(h.policy.risk(h.users["u"], 0.05))


def test_rearm_below_must_stay_under_both_entries(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("[spike]\nprior_entry = 0.15\nrearm_below = 0.2\n")
    with pytest.raises(ConfigError, match="spike.rearm_below: must be <= spike.entry and"):
        load_policy(path)


def test_a_nan_score_passes_through_either_way() -> None:
    state = visits("u", 3.0, 60)
    for risk in ("left", "p"):
        policy = Policy(PolicyConfig.model_validate({"spike": {"risk": risk}}), SPACE, H)
        assert math.isnan(policy.risk(state, math.nan))


def rows_scale(h: Harness, user: str) -> str:
    return "left" if SCALE_KEY in h.users[user].extra else "p"


def test_a_row_written_on_the_other_scale_restarts_its_baseline_without_a_flag() -> None:
    """An upgrade (rows written when p was judged) or a change of spike.risk: the saved
    baseline is on the other scale, so neither a fall nor a rise across scales counts."""
    judge_p = config(spike={"risk": "p", "entry": 0.3, "prior_entry": 0.3})
    left = config(spike={"risk": "left", "entry": 0.3, "prior_entry": 0.3})
    h = Harness(judge_p)
    h.users["light"] = visits("light", 20.0, 100)
    h.score("light", 100, 0.05)
    assert rows_scale(h, "light") == "p"
    # Back to the p scale after the left one: a light user's p of 0.45 is far above their
    # low left-scale baseline, a "jump" that only the change of scale made.
    h.policy = Policy(left, SPACE, H)
    assert h.score("light", 101, 0.3) is None
    assert rows_scale(h, "light") == "left"
    baseline = UserPolicy.load(h.users["light"].extra).baseline
    assert baseline == pytest.approx(h.policy.risk(h.users["light"], 0.3))
    h.policy = Policy(judge_p, SPACE, H)
    assert h.score("light", 102, 0.45) is None  # restarted from 0.45, not a jump
    assert rows_scale(h, "light") == "p"
    assert UserPolicy.load(h.users["light"].extra).baseline == 0.45
    # On one scale, rises count again.
    assert h.score("light", 103, 0.45 + 0.2) is not None


def test_the_first_score_on_a_scale_is_not_a_spike_even_into_a_higher_tier() -> None:
    h = Harness(config(spike={"risk": "p", "entry": 0.3, "prior_entry": 0.3}))
    h.users["u"] = visits("u", 2.0, 100)
    h.score("u", 100, 0.02)
    h.policy = Policy(config(spike={"risk": "left", "entry": 0.3, "prior_entry": 0.3}), SPACE, H)
    assert h.score("u", 101, 0.7) is None  # tier high, but its previous tier was p's
    assert h.score("u", 102, 0.8) is None  # a rise of 0.1 over 0.7 in the same tier
    assert h.score("u", 103, 0.9) is not None  # 0.2 over the restarted baseline: a spike
