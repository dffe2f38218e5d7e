"""The known answer on generated traffic: how many churners each action chooser saves.

A file generated with ``--action-effects`` says in its truth file which actions save each
churner. Over the treatment decisions of one evaluation run (the users flagged, in time
order), every chooser picks an action for each decision, and a churner counts as saved when
one of the actions chosen for them saves them. The oracle picks a saving action whenever
there is one; a chooser's regret is the oracle's saves minus its own. All choosers face the
same flags and the same luck (one save draw per user), so their differences are the choice
alone. The bandit learns as it would live: from the outcome "did not churn", known only a
horizon after the decision.
"""

from __future__ import annotations

import hashlib
import heapq
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from stream_app.core.action_effects import saved_by_from_truth
from stream_app.core.policy.config import ACTIONS, PolicyConfig
from stream_app.core.policy.decide import DecisionOut, build_chooser

ORACLE = "oracle"


@dataclass(frozen=True, slots=True)
class Truth:
    """Per user: a churner or not, and the actions that would save them."""

    churner: dict[str, bool]
    saved_by: dict[str, frozenset[str]]


def load_truth(truth_file: Path) -> Truth | None:
    """The truth file of an action-effects file; None for any other file (or none)."""
    if not truth_file.is_file():
        return None
    rows: dict[str, dict[str, object]] = {}
    with truth_file.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # not ours to judge: the truth is only read when it has the keys
            if isinstance(row, dict) and isinstance(row.get("user_id"), str):
                rows[row["user_id"]] = row
    saved_by = saved_by_from_truth(rows)
    if not saved_by:
        return None
    return Truth({u: r.get("churner") is True for u, r in rows.items()}, saved_by)


def _uniform(key: str) -> float:
    digest = hashlib.blake2b(b"random-chooser" + key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


@dataclass
class Outcome:
    """One chooser over the run's treatment decisions."""

    saved: int = 0
    chosen: dict[str, int] = field(default_factory=dict)
    curve: list[tuple[float, int]] = field(default_factory=list)  # (ts, cumulative saves)


Pick = Callable[[DecisionOut], str]


def _simulate(
    decisions: Sequence[DecisionOut],
    truth: Truth,
    pick: Pick,
    learn: Callable[[str, str, bool], None] | None,
    horizon: float,
) -> Outcome:
    out = Outcome()
    saved: set[str] = set()
    pending: list[tuple[float, int, str, str, bool]] = []  # outcomes not yet known
    for n, d in enumerate(decisions):
        while learn is not None and pending and pending[0][0] <= d.ts:
            _, _, seg, action, reward = heapq.heappop(pending)
            learn(seg, action, reward)
        action = pick(d)
        out.chosen[action] = out.chosen.get(action, 0) + 1
        churner = truth.churner.get(d.user_id, False)
        if churner and d.user_id not in saved and action in truth.saved_by.get(d.user_id, ()):
            saved.add(d.user_id)
        if learn is not None:
            stayed = not churner or d.user_id in saved
            heapq.heappush(pending, (d.ts + horizon, n, d.segment, action, stayed))
        out.curve.append((d.ts, len(saved)))
    out.saved = len(saved)
    return out


def _oracle(d: DecisionOut, truth: Truth) -> str:
    saving = truth.saved_by.get(d.user_id)
    return min(saving) if saving else (d.rules_action or ACTIONS[0])


def known_answer(
    treatments: Iterable[DecisionOut], truth: Truth, config: PolicyConfig, horizon: float
) -> dict[str, Outcome]:
    """Oracle, rules, bandit, uniform random and each single action, on the same flags."""
    decisions = sorted(treatments, key=lambda d: (d.ts, d.decision_id))
    bandit = build_chooser(config.model_copy(update={"chooser": "bandit"}))
    pickers: dict[str, tuple[Pick, Callable[[str, str, bool], None] | None]] = {
        ORACLE: (lambda d: _oracle(d, truth), None),
        "rules": (lambda d: d.rules_action or ACTIONS[-1], None),
        "bandit": (lambda d: bandit.choose(d.segment, d.rules_action, d.decision_id), bandit.learn),
        "random": (lambda d: ACTIONS[int(_uniform(d.decision_id) * len(ACTIONS))], None),
    }
    for a in ACTIONS:
        pickers[f"only_{a}"] = (lambda d, a=a: a, None)  # type: ignore[misc]
    return {
        name: _simulate(decisions, truth, pick, learn, horizon)
        for name, (pick, learn) in pickers.items()
    }


def summary(outcomes: dict[str, Outcome], sent_saved: int | None = None) -> dict[str, object]:
    """Saved churners and regret against the oracle, per chooser, for the JSON summary."""
    best = outcomes[ORACLE].saved
    # Once the bandit has learned: the regret each chooser adds over the last third.
    third = len(outcomes[ORACLE].curve) * 2 // 3
    late = {
        name: (c[-1][1] - c[third - 1][1] if third else c[-1][1]) if c else 0
        for name, c in regret_curves(outcomes).items()
    }
    return {
        "flagged_treatments": sum(outcomes[ORACLE].chosen.values()),
        "oracle_saved": best,
        "saved": {name: o.saved for name, o in outcomes.items() if name != ORACLE},
        "regret": {name: best - o.saved for name, o in outcomes.items() if name != ORACLE},
        "regret_last_third": late,
        "bandit_actions": dict(sorted(outcomes["bandit"].chosen.items())),
        **({"run_saved": sent_saved} if sent_saved is not None else {}),
    }


def regret_curves(outcomes: dict[str, Outcome]) -> dict[str, list[tuple[float, int]]]:
    """Cumulative regret after each decision, per chooser (for the report's plot)."""
    oracle = outcomes[ORACLE].curve
    return {
        name: [(ts, o_best - mine) for (ts, o_best), (_, mine) in zip(oracle, o.curve, strict=True)]
        for name, o in outcomes.items()
        if name != ORACLE
    }
