"""End to end on generated data: engine, learner, policy and treatment simulator together
recover a known treatment effect from the stream's own labels, and find none when there is
none. This is the loop the offline driver will run once the policy is wired into it."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stream_app.core.engine import Engine, StepResult
from stream_app.core.features import UserState
from stream_app.core.labels import Label
from stream_app.core.learner import Learner
from stream_app.core.model import OnlineModel, Scorer
from stream_app.core.policy import Policy, PolicyConfig, Uplift, estimate
from stream_app.ingest import Decoder
from stream_app.jsonl import iter_lines
from stream_app.offline.generate import truth_path
from stream_app.offline.treatment import TreatmentSimulator, path_of
from stream_app.settings import load_settings

Q = 0.6
USERS, DAYS, SEED = 800, 120, 11


@dataclass
class Example:
    label: int
    group: str
    user_id: str


def replay(path: Path) -> list[Example]:
    """Replay ``path`` with the policy after every score and the simulated effect."""
    settings = load_settings()
    engine = Engine(settings.as_engine_config())
    # Model and learner as the offline driver builds them.
    model = OnlineModel.from_config(
        engine.space.names, engine.space.schema, settings.as_model_config()
    )
    lcfg = settings.as_learner_config()
    learner = Learner(model, lcfg.snapshot_every, lcfg.rolling_window, example_dedup=0)
    # A large holdout for statistical power in a small file (production default: 10%).
    policy = Policy(
        PolicyConfig.model_validate({"holdout": {"share": 0.5}}),
        engine.space,
        engine.config.horizon,
    )
    guard = policy.new_guard()
    sim = TreatmentSimulator()
    store: dict[str, UserState] = {}
    clock = engine.new_clock()
    groups: dict[tuple[str, int], str] = {}
    labels: list[Label] = []

    def scorer() -> Scorer:
        return engine.scorer

    def on(result: StepResult | None) -> None:
        if result is None:
            return
        for score in result.scores:
            out = policy.decide(store[score.user_id], score, scorer(), guard)
            if out is not None and out.group != "none":
                # The training example snapshotted at this score (if any) gets the group.
                groups[(score.user_id, round(score.ts * 1000))] = out.group
                if out.outcome == "treatment":
                    sim.treated(score.user_id, score.ts)
        for lab in result.labels:
            labels.append(lab)
            snap = learner.learn(lab)
            if snap is not None:
                engine.use_snapshot(snap)

    decoder = Decoder.from_settings(settings)
    first = True
    for _, raw in iter_lines(path):
        decoded = decoder.decode(raw)
        event, ts = decoded.event, decoded.ts
        assert event is not None
        if first:
            engine.labels_from = ts + settings.eval_warmup
            first = False
        if path_of(event) is not None:
            on(engine.catch_up(store, clock, event.user_id, ts))
            if not sim.keep_event(event, ts):
                continue
        result = engine.process(store, clock, event, ts)
        if result.status == "applied":
            on(result)
            on(engine.advance(store, clock))
    return [
        Example(
            lab.label, groups.get((lab.user_id, round(lab.scored_at * 1000)), "none"), lab.user_id
        )
        for lab in labels
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[float, tuple[list[Example], Any]]:
    from stream_app.cli import main

    out: dict[float, tuple[list[Example], Any]] = {}
    for q in (Q, 0.0):
        path = tmp_path_factory.mktemp("sim") / f"q{q}.jsonl"
        argv = ["generate", "--users", str(USERS), "--days", str(DAYS), "--seed", str(SEED)]
        assert main([*argv, "--treatment-effect", str(q), "--out", str(path)]) == 0
        truth = {r["user_id"]: r for r in map(json.loads, truth_path(path).open())}
        out[q] = (replay(path), truth)
    return out


def among(examples: list[Example], keep: Callable[[Example], bool]) -> Uplift:
    return estimate([e for e in examples if keep(e)])


def test_the_known_effect_is_recovered_within_its_interval(runs: Any) -> None:
    examples, truth = runs[Q]
    churners = among(examples, lambda e: truth[e.user_id]["churner"])
    assert churners.holdout_n >= 50 and churners.treated_n >= 40
    # Among flagged churners, 1 - treated/holdout churn estimates the saved share Q.
    assert churners.reduction_low is not None and churners.reduction_high is not None
    assert churners.reduction_low <= Q <= churners.reduction_high
    overall = among(examples, lambda e: True)
    assert overall.uplift_low is not None and overall.uplift_low > 0


def test_no_effect_gives_an_interval_around_zero(runs: Any) -> None:
    examples, truth = runs[0.0]
    overall = among(examples, lambda e: True)
    assert overall.holdout_n >= 50 and overall.treated_n >= 50
    assert overall.uplift_low is not None and overall.uplift_high is not None
    assert overall.uplift_low < 0 < overall.uplift_high


def test_savable_churners_who_were_treated_come_back(runs: Any) -> None:
    examples, truth = runs[Q]
    saved = among(examples, lambda e: truth[e.user_id].get("saved_if_treated", False))
    assert saved.treated_n >= 20 and saved.treated_rate is not None
    assert saved.holdout_rate is not None and saved.holdout_rate > 0.4
    assert saved.treated_rate < 0.1  # the weekly floor of the saved path
