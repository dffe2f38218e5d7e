"""The known answer on generated traffic: the generator says which action saves which
churner, the evaluator keeps a saved user's future only for a saving action, and every
chooser is scored against the oracle on the same flags."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from stream_app.cli import main
from stream_app.core.action_effects import ActionEffects, load_action_effects
from stream_app.core.policy.config import ACTIONS, PolicyConfig
from stream_app.core.policy.decide import DecisionOut
from stream_app.errors import InputFileError
from stream_app.offline import EvaluateOptions, evaluate
from stream_app.offline.generate import Generator, savable_draw
from stream_app.offline.known_answer import ORACLE, Truth, known_answer, regret_curves, summary
from stream_app.offline.treatment import TreatmentSimulator
from stream_app.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy/action_effects.example.json"
START = datetime(2026, 1, 1, tzinfo=UTC)
DAY = 86400.0


def test_the_truth_says_which_actions_save_each_churner() -> None:
    effects = load_action_effects(EXAMPLE)
    gen = Generator(800, 90, 3, START, action_effects=effects)
    gen.run(io.StringIO())
    truth = {r["user_id"]: r for r in gen.truth()}
    churners = [u for u in gen.users if u.churner]
    assert all(truth[u.uid]["saved_by"] == [] for u in gen.users if not u.churner)
    settled = [u for u in churners if truth[u.uid]["save_segment"] is not None]
    assert len(settled) > 50
    for u in settled:
        seg = truth[u.uid]["save_segment"]
        assert truth[u.uid]["saved_by"] == effects.saved_by(seg, savable_draw(3, u.uid))
        assert truth[u.uid]["saved_if_treated"] == bool(truth[u.uid]["saved_by"])
    # The segment is whether they had bought when their churn began.
    assert {truth[u.uid]["save_segment"] for u in settled} == {"buyer", "browser"}
    assert gen.savable == {u for u, r in truth.items() if r["saved_by"]}


def test_one_draw_per_user_orders_the_actions() -> None:
    effects = ActionEffects.model_validate({"buyer": {"outreach": 0.6, "coupon": 0.3}})
    assert effects.saved_by("buyer", 0.2) == ["outreach", "coupon"]
    assert effects.saved_by("buyer", 0.5) == ["outreach"]
    assert effects.saved_by("browser", 0.0) == []
    assert effects.best("buyer") == "outreach" and effects.ceiling == 0.6


def test_a_bad_effects_file_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "effects.json"
    path.write_text('{"buyer": {"outreach": 1.5}}')
    with pytest.raises(InputFileError, match="buyer.outreach"):
        load_action_effects(path)
    path.write_text('{"vip": {}}')
    with pytest.raises(InputFileError, match="vip"):
        load_action_effects(path)


def test_only_a_saving_action_switches_the_user_to_the_saved_future() -> None:
    sim = TreatmentSimulator(saved_by={"u1": frozenset({"outreach"})})
    sim.treated("u1", 10 * DAY, "coupon")
    assert "u1" not in sim.treated_at
    sim.treated("u1", 20 * DAY, "outreach")
    assert sim.treated_at["u1"] == 20 * DAY
    sim.treated("u2", 5 * DAY, "outreach")  # not savable at all
    assert "u2" not in sim.treated_at


def decision(i: int, user: str, segment: str, rules: str, day: float) -> DecisionOut:
    return DecisionOut(
        decision_id=f"d{i}",
        intervention_id=f"i{i}",
        user_id=user,
        ts=day * DAY,
        trigger="silence",
        p=0.7,
        previous_p=0.1,
        baseline=0.1,
        tier="high",
        previous_tier="low",
        outcome="treatment",
        suppressed_by=None,
        holdout=False,
        action=rules,  # type: ignore[arg-type]
        categories=[],
        reasons=[],
        model_version=1,
        policy_version="v",
        segment=segment,
        rules_action=rules,  # type: ignore[arg-type]
    )


def test_the_bandit_beats_wrong_rules_and_nobody_beats_the_oracle() -> None:
    # Buyers are saved by outreach only, browsers by recommendations; the rules say coupon
    # and win_back. Two flags a day for two years, 60% of them churners.
    flags, churner, saved_by = [], {}, {}
    for i in range(1460):
        user, buyer = f"u{i}", i % 2 == 0
        flags.append(
            decision(
                i,
                user,
                f"buyer={'yes' if buyer else 'no'}",
                "coupon" if buyer else "win_back",
                i / 2,
            )
        )
        churner[user] = i % 5 < 3
        if churner[user] and i % 10 < 8:  # 80% of churners are savable by the right action
            saved_by[user] = frozenset({"outreach" if buyer else "recommendations"})
    truth = Truth(churner, saved_by)
    out = known_answer(flags, truth, PolicyConfig(), 30 * DAY)
    s: Any = summary(out)
    assert s["oracle_saved"] == len(saved_by)
    assert s["saved"]["rules"] == 0
    assert all(r >= 0 for r in s["regret"].values())
    assert s["saved"]["bandit"] > 0.7 * s["oracle_saved"]
    assert s["saved"]["bandit"] > s["saved"]["random"] > s["saved"]["rules"]
    assert s["saved"]["only_outreach"] + s["saved"]["only_recommendations"] == len(saved_by)
    assert s["regret_last_third"]["bandit"] < s["regret_last_third"]["random"]
    assert 0 < s["regret_last_third"]["rules"] < s["regret"]["rules"]
    curves = regret_curves(out)
    assert curves["rules"][-1][1] == s["regret"]["rules"]
    assert [r for _, r in curves["bandit"]] == sorted(r for _, r in curves["bandit"])
    assert set(out) == {ORACLE, "rules", "bandit", "random", *(f"only_{a}" for a in ACTIONS)}


def test_the_bandit_learns_only_from_outcomes_a_horizon_old() -> None:
    flags = [decision(i, f"u{i}", "all", "coupon", i / 10) for i in range(300)]
    truth = Truth(
        {f"u{i}": True for i in range(300)}, {f"u{i}": frozenset({"outreach"}) for i in range(300)}
    )
    # A horizon longer than the run: nothing resolves, so the bandit never learns.
    blind = known_answer(flags, truth, PolicyConfig(), 10_000 * DAY)["bandit"]
    seeing = known_answer(flags, truth, PolicyConfig(), 1 * DAY)["bandit"]
    assert seeing.saved > 200 > 100 > blind.saved


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("known")
    events = tmp / "events.jsonl"
    args = ["generate", "--users", "500", "--days", "120", "--seed", "4", "--out", str(events)]
    assert main([*args, "--action-effects", str(EXAMPLE)]) == 0
    return evaluate(events, load_settings(), EvaluateOptions()).summary


def test_evaluate_reports_saved_churners_and_regret_per_chooser(evaluated: Any) -> None:
    k = evaluated["known_answer"]
    assert k["flagged_treatments"] == evaluated["interventions"] > 50
    # The run used the rules: the replayed rules save exactly whom the run saved.
    assert k["saved"]["rules"] == k["run_saved"] > 0
    assert all(k["oracle_saved"] - k["saved"][n] == k["regret"][n] >= 0 for n in k["saved"])
    assert json.dumps(k)  # plain JSON for the summary line


def test_a_file_without_action_effects_has_no_known_answer(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    assert main(["generate", "--users", "60", "--days", "40", "--out", str(events)]) == 0
    assert "known_answer" not in evaluate(events, load_settings(), EvaluateOptions()).summary


def test_one_effect_or_the_other_not_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["generate", "--users", "10", "--days", "5", "--out", str(tmp_path / "e.jsonl")]
    assert main([*args, "--treatment-effect", "0.3", "--action-effects", str(EXAMPLE)]) == 2
    assert "not both" in capsys.readouterr().err
