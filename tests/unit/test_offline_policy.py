"""stream-app evaluate runs the retention policy: every decision is written, holdout users
never get an intervention, and on generated traffic with a known treatment effect the
uplift it reports covers the truth (and covers zero when there is none)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stream_app.cli import main
from stream_app.offline import EvaluateOptions, evaluate
from stream_app.settings import load_settings

Q = 0.6  # an intervened churner is saved with this probability


def run(tmp_path: Path, effect: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    events = tmp_path / f"events-{effect}.jsonl"
    args = ["generate", "--users", "1200", "--days", "120", "--seed", "5"]
    assert main([*args, "--treatment-effect", str(effect), "--out", str(events)]) == 0
    policy = tmp_path / "policy.toml"
    policy.write_text("[holdout]\nshare = 0.5\n")  # a large control group: a tight interval
    decisions = tmp_path / f"decisions-{effect}.jsonl"
    result = evaluate(
        events,
        load_settings(policy_file=str(policy)),
        EvaluateOptions(decisions_out=decisions),
    )
    return result.summary, [json.loads(x) for x in decisions.read_text().splitlines()]


@pytest.fixture(scope="module")
def with_effect(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return run(tmp_path_factory.mktemp("effect"), Q)


def test_every_decision_is_written_and_holdout_users_get_no_intervention(
    with_effect: Any,
) -> None:
    summary, decisions = with_effect
    by_outcome: dict[str, int] = {}
    for d in decisions:
        by_outcome[d["outcome"]] = by_outcome.get(d["outcome"], 0) + 1
        assert (d["intervention_id"] is not None) == (d["outcome"] == "treatment")
        assert d["holdout"] == (d["outcome"] == "holdout") or d["outcome"] == "suppressed"
    assert by_outcome.get("treatment", 0) == summary["interventions"] > 50
    assert by_outcome.get("holdout", 0) == summary["holdout_decisions"] > 50
    assert len({d["decision_id"] for d in decisions}) == len(decisions)
    by_action = summary["interventions_by_action"].values()
    assert sum(a["sent"] for a in by_action) == summary["interventions"]
    assert sum(a["held_out"] for a in by_action) == summary["holdout_decisions"]
    assert summary["simulated_out"] > 0  # the treated users' churn path was dropped


def test_the_uplift_covers_a_known_treatment_effect(with_effect: Any) -> None:
    u = with_effect[0]["uplift"]
    assert u["holdout_n"] > 50 and u["treated_n"] > 50
    assert u["low"] > 0  # interventions measurably reduce churn
    # reduction = 1 - treated churn / holdout churn: the share of would-be churners saved
    assert u["reduction_low"] <= Q <= u["reduction_high"]


def test_no_effect_gives_an_uplift_interval_around_zero(tmp_path: Path) -> None:
    summary, _ = run(tmp_path, 0.0)
    u = summary["uplift"]
    assert u["holdout_n"] > 50 and u["treated_n"] > 50
    assert u["low"] <= 0.0 <= u["high"]
    assert summary["simulated_out"] == 0


def test_replay_sends_only_the_untreated_world(tmp_path: Path) -> None:
    """stream-app replay of a file with a treatment effect: the saved futures only happen
    after an intervention, so they are not sent; the churn path and untagged events are."""
    import time

    from stream_app.ingest import Decoder
    from stream_app.kafka.producer import untreated_world

    events = tmp_path / "e.jsonl"
    args = ["generate", "--users", "300", "--days", "40", "--seed", "2"]
    assert main([*args, "--treatment-effect", "0.8", "--out", str(events)]) == 0
    decoder = Decoder(65536, 3600.0, time.time)
    kept = {"saved": 0, "churn": 0, "none": 0}
    for line in events.read_bytes().splitlines():
        path = json.loads(line).get("properties", {}).get("treatment_path", "none")
        kept[path] += untreated_world(decoder, line)
        if path != "saved":
            assert untreated_world(decoder, line)
    assert kept["saved"] == 0 and kept["churn"] > 0 and kept["none"] > 0
