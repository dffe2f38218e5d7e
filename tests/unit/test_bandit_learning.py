"""The bandit learns from the stream: a treated example carries its decision's arm, the
learner counts "did not churn" per (segment, action), the counts ride in the model
snapshot, and adopting a snapshot is what changes the chooser's draws."""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from schemas.outputs import ModelSnapshot, TrainingExample
from stream_app.core.engine import Engine
from stream_app.core.features import Pending, UserState
from stream_app.core.labels import Label, LabelBook, label_message
from stream_app.core.learner import Learner
from stream_app.core.model import ColdStartPrior, OnlineModel
from stream_app.core.policy import Policy
from stream_app.core.policy.chooser import Posterior, ThompsonChooser
from stream_app.core.policy.config import ACTIONS
from tests.unit.policy_harness import config
from tests.unit.test_engine import CFG, DAY, T0, H, ev

SEG = "buyer=yes|activity=active|value=v0"


class Risky(ColdStartPrior):
    """Every user at 0.9: a new user's first score is a spike (tier high over low)."""

    def score(self, vec: Sequence[float]) -> float:
        return 0.9


def bandit_engine() -> Engine:
    engine = Engine(CFG)
    engine.policy = Policy(config(chooser="bandit"), engine.space, engine.config.horizon)
    engine.use_scorer(Risky(engine.space.names))
    return engine


def test_a_treated_example_carries_the_arm_of_its_decision() -> None:
    engine = bandit_engine()
    store: dict[str, UserState] = {}
    clock = engine.new_clock()
    first = engine.process(store, clock, ev("u1", T0, "purchase", revenue=20.0))
    [decision] = first.decisions
    assert decision.outcome == "treatment"
    later = engine.process(store, clock, ev("u1", T0 + H + 5 * DAY))  # past the horizon
    [label] = [lab for lab in later.labels if lab.scored_at == T0]
    assert (label.group, label.segment, label.action) == (
        "treatment",
        decision.segment,
        decision.action,
    )
    message = label_message(label)
    assert (message.segment, message.action) == (decision.segment, decision.action)
    back = TrainingExample.model_validate_json(message.model_dump_json())
    assert (back.segment, back.action) == (decision.segment, decision.action)


def test_a_decision_between_snapshots_marks_the_open_one_with_its_arm() -> None:
    book = LabelBook(H, DAY, ["x"])
    state = UserState("u", 1)
    assert book.maybe_snapshot(state, T0, 0.1, [0.0], "none", 0)
    assert state.pending[0].action is None  # not flagged: no arm
    book.maybe_snapshot(state, T0 + 3600, 0.8, [0.0], "treatment", 0, SEG, "outreach")
    [label] = book.resolve_expired(state, T0 + H)
    assert (label.group, label.segment, label.action, label.label) == (
        "treatment",
        SEG,
        "outreach",
        1,
    )


def test_the_arm_survives_the_changelog_and_older_rows_still_read() -> None:
    snap = Pending(T0, 0.7, array("d", [0.0, 1.0]), "treatment", 3, segment=SEG, action="coupon")
    again = Pending.from_list(snap.to_list())
    assert (again.segment, again.action) == (SEG, "coupon")
    unflagged = Pending(T0, 0.2, array("d", [0.0, 1.0]), "none", 3)
    assert len(unflagged.to_list()) == 8  # rows without an arm are written as before
    old = Pending.from_list(unflagged.to_list())  # a row written before the arm existed
    assert (old.segment, old.action, old.group) == (None, None, "none")
    old_example = label_message(Label("u", T0, T0 + H, 1, 0.2, {}, "treatment", 0))
    assert "action" not in old_example.model_dump(exclude_none=True)


def arm_label(i: int, group: str, segment: str | None, action: str | None, y: int) -> Label:
    x = dict.fromkeys(SPACE_NAMES, 0.0)
    return Label(f"u{i}", float(i), i + 10.0, y, 0.5, x, group, 0, segment=segment, action=action)


SPACE_NAMES = Engine(CFG).space.names


def labels_with_arms() -> list[Label]:
    """Treated outreach: 6 stayed, 2 churned; treated coupon: 1 stayed, 3 churned; plus
    holdout and unarmed examples that must not count."""
    out = [arm_label(i, "treatment", SEG, "outreach", 1 if i < 2 else 0) for i in range(8)]
    out += [arm_label(10 + i, "treatment", SEG, "coupon", 0 if i < 1 else 1) for i in range(4)]
    out += [arm_label(20 + i, "holdout", SEG, "outreach", 1) for i in range(5)]
    out += [arm_label(30 + i, "treatment", None, None, 1) for i in range(3)]  # pre-arm
    out += [arm_label(40 + i, "none", None, None, 1) for i in range(3)]
    return out


def new_learner(train_on_treated: bool = True) -> Learner:
    model = OnlineModel(SPACE_NAMES, Engine(CFG).space.schema, min_labels_ready=10**6)
    return Learner(model, snapshot_every=10**6, train_on_treated=train_on_treated)


def test_the_learner_counts_treated_outcomes_per_arm_whatever_train_on_treated() -> None:
    for train_on_treated in (True, False):
        learner = new_learner(train_on_treated)
        for label in labels_with_arms():
            learner.learn(label)
        assert learner.bandit.to_dict() == {SEG: {"outreach": [6, 2], "coupon": [1, 3]}}


def test_the_counts_ride_in_the_snapshot_and_a_restarted_learner_resumes_them() -> None:
    labels = labels_with_arms()
    learner = new_learner()
    for label in labels[:10]:
        learner.learn(label)
    snap = ModelSnapshot.model_validate_json(learner.snapshot().model_dump_json())
    assert snap.bandit == {SEG: {"outreach": [6, 2], "coupon": [1, 1]}}
    resumed = new_learner()
    resumed.restore(snap)
    for label in labels[10:]:
        learner.learn(label)
        resumed.learn(label)
    assert resumed.bandit.to_dict() == learner.bandit.to_dict()
    older = snap.model_copy(update={"bandit": None})  # a snapshot from before the field
    cold = new_learner()
    cold.restore(older)
    assert cold.bandit.to_dict() == {}


def test_adopting_a_snapshot_changes_the_draws_and_only_a_snapshot_does() -> None:
    engine = bandit_engine()
    assert engine.policy is not None
    chooser = engine.policy.chooser
    assert isinstance(chooser, ThompsonChooser)
    keys = [f"d{i}" for i in range(400)]
    cold = Counter(chooser.choose(SEG, "coupon", k) for k in keys)
    learner = new_learner()
    for i in range(60):  # outreach keeps 55 of 60 buyers, the rules' coupon 5 of 60
        learner.learn(arm_label(i, "treatment", SEG, "outreach", 0 if i < 55 else 1))
        learner.learn(arm_label(100 + i, "treatment", SEG, "coupon", 0 if i < 5 else 1))
    engine.use_snapshot(learner.snapshot())
    warm = Counter(chooser.choose(SEG, "coupon", k) for k in keys)
    assert cold.most_common(1)[0][0] == "coupon"  # the cold start follows the rules
    assert warm["outreach"] > 0.85 * len(keys) and warm["coupon"] < 0.05 * len(keys)
    # The engine chooses with a copy: what the learner learns after the snapshot changes
    # nothing until the next one (live, workers only see snapshots; offline must match).
    for i in range(200):
        learner.learn(arm_label(300 + i, "treatment", SEG, "outreach", 1))
    assert Counter(chooser.choose(SEG, "coupon", k) for k in keys) == warm
    # A snapshot without counts (an older learner) keeps the posterior in use.
    engine.use_snapshot(learner.snapshot().model_copy(update={"bandit": None}))
    assert Counter(chooser.choose(SEG, "coupon", k) for k in keys) == warm


def test_the_posterior_means_are_the_prior_for_unseen_segments() -> None:
    policy = Policy(config(chooser="bandit"), Engine(CFG).space, CFG.horizon)
    assert policy.bandit_means() == [("prior", a, 0.5) for a in ACTIONS]
    policy.use_posterior(Posterior({SEG: {"outreach": [6, 0]}}))
    assert policy.bandit_means()[-1] == (SEG, "outreach", (4 * 0.5 + 6) / (4 + 6))


def test_the_live_learner_counts_what_the_offline_replay_counts(tmp_path: Path) -> None:
    """Replay equals live on the learning side: the training examples of an offline run,
    sent as messages through the live learner, give the same counts as the offline learner,
    and every treated example carries an arm."""
    from stream_app.agents.learner import LearnerHandler
    from stream_app.cli import main
    from stream_app.metrics import Metrics
    from stream_app.offline import EvaluateOptions, evaluate
    from stream_app.settings import load_settings

    events = tmp_path / "events.jsonl"
    args = ["generate", "--users", "500", "--days", "90", "--seed", "3", "--out", str(events)]
    assert main([*args, "--action-effects", "deploy/action_effects.example.json"]) == 0
    policy = tmp_path / "policy.toml"
    policy.write_text('chooser = "bandit"\n')
    settings = load_settings(policy_file=str(policy))
    run = evaluate(events, settings, EvaluateOptions(keep_labels=True))
    treated = [lab for lab in run.resolved if lab.group == "treatment"]
    assert len(treated) > 40 and all(lab.segment and lab.action for lab in treated)
    offline = new_learner()
    for label in run.resolved:
        offline.learn(label)
    space = Engine(settings.as_engine_config()).space
    live = LearnerHandler(
        space.names,
        space.schema,
        settings.as_model_config(),
        settings.as_learner_config(),
        Metrics(),
    )
    for offset, label in enumerate(run.resolved):
        live.handle(offset, label_message(label).model_dump_json().encode())
    assert live.learner.bandit.to_dict() == offline.bandit.to_dict()
    stayed = sum(cell[0] for acts in offline.bandit.counts.values() for cell in acts.values())
    assert stayed == sum(1 for lab in treated if lab.label == 0)
