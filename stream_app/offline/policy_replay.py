"""Offline evaluation of the bandit chooser on a logged randomised experiment (replay method).

Li, Chu, Langford and Wang, "Unbiased offline evaluation of contextual-bandit-based news
article recommendation algorithms" (WSDM 2011): take the logged rows in random order; at
each row the chooser picks an arm for the row's context; the row counts only when that is
the arm the row was logged with, and only then does the chooser learn its reward. When the
arms were logged uniformly at random and independently of the context, the rate over the
matched rows is an unbiased estimate of the rate the chooser would get live.
"""

from __future__ import annotations

import csv
import math
import random
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream_app.core.policy.chooser import ThompsonChooser
from stream_app.errors import InputFileError

ALL = "all"


@dataclass(frozen=True, slots=True)
class LoggedRow:
    """One logged decision: its context segment, the arm it got and whether it paid."""

    segment: str
    arm: str
    reward: bool


@dataclass(frozen=True, slots=True)
class Log:
    rows: list[LoggedRow]
    skipped: int  # rows without an arm or with a reward that is not 0 or 1
    first_error: str | None


def _reward(text: str) -> bool | None:
    value = text.strip()
    if value in ("1", "1.0", "true", "True"):
        return True
    if value in ("0", "0.0", "false", "False"):
        return False
    return None


def read_log(path: Path, arm: str, reward: str, context: Sequence[str]) -> Log:
    """Rows of a CSV with a header; bad rows are skipped and counted, never fatal."""
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    with handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        missing = [c for c in (arm, reward, *context) if c not in header]
        if missing:
            raise InputFileError(
                f"{path}: no column {', '.join(missing)} (columns: {', '.join(header)})"
            )
        rows: list[LoggedRow] = []
        skipped, first_error = 0, None
        try:
            for n, rec in enumerate(reader, start=2):
                a = (rec.get(arm) or "").strip()
                r = _reward(rec.get(reward) or "")
                if not a or r is None:
                    skipped += 1
                    first_error = first_error or (
                        f"line {n}: {arm}={a!r}, {reward}={rec.get(reward)!r} "
                        "(needs an arm and a 0/1 reward)"
                    )
                    continue
                seg = "|".join(f"{c}={(rec.get(c) or '').strip()}" for c in context) or ALL
                rows.append(LoggedRow(seg, a, r))
        except (csv.Error, UnicodeDecodeError) as exc:
            raise InputFileError(f"{path}: not a readable CSV: {exc}") from None
    if not rows:
        raise InputFileError(f"{path}: no usable rows ({first_error or 'empty file'})")
    return Log(rows, skipped, first_error)


def new_chooser(arms: Sequence[str], floor: float, prior_strength: float) -> ThompsonChooser:
    """The policy's chooser class, cold: a flat prior (no rules for logged arms)."""
    return ThompsonChooser(arms, prior_strength=prior_strength, prior_mean=0.5, floor=floor)


@dataclass(frozen=True, slots=True)
class RunResult:
    matched: int
    rewards: int
    choice: dict[str, str]  # segment -> arm with the highest posterior mean at the end


def replay_once(
    rows: Sequence[LoggedRow], arms: Sequence[str], seed: int, run: int, chooser: ThompsonChooser
) -> RunResult:
    """One permutation of the log through the chooser (the replay method)."""
    order = list(range(len(rows)))
    random.Random(f"policy-replay:{seed}:{run}").shuffle(order)  # noqa: S311 - reproducible
    matched = rewards = 0
    for i in order:
        row = rows[i]
        if chooser.choose(row.segment, None, f"{seed}:{run}:{i}") != row.arm:
            continue
        matched += 1
        rewards += row.reward
        chooser.learn(row.segment, row.arm, row.reward)
    segments = sorted({r.segment for r in rows})
    choice = {s: _best(chooser, s, arms) for s in segments}
    return RunResult(matched, rewards, choice)


def _best(chooser: ThompsonChooser, segment: str, arms: Sequence[str]) -> str:
    """The arm with the highest posterior mean: what the chooser has come to prefer."""
    return max(arms, key=lambda a: chooser.mean(segment, a))


def arm_rates(rows: Iterable[LoggedRow]) -> dict[str, float]:
    n: dict[str, int] = {}
    k: dict[str, int] = {}
    for r in rows:
        n[r.arm] = n.get(r.arm, 0) + 1
        k[r.arm] = k.get(r.arm, 0) + r.reward
    return {a: k[a] / n[a] for a in sorted(n)}


def evaluate(
    log: Log, *, seed: int = 0, runs: int = 10, floor: float = 0.01, prior_strength: float = 2.0
) -> dict[str, Any]:
    """The JSON summary ``policy-replay`` prints (keys explained in docs/policy.md)."""
    if runs < 1:
        raise InputFileError("--runs must be >= 1")
    rates = arm_rates(log.rows)
    arms = list(rates)
    if not 0 <= floor * len(arms) <= 1:
        raise InputFileError(f"--floor {floor} x {len(arms)} arms must be in [0, 1]")
    results = [
        replay_once(log.rows, arms, seed, run, new_chooser(arms, floor, prior_strength))
        for run in range(runs)
    ]
    per_run = [r.rewards / r.matched if r.matched else math.nan for r in results]
    best = max(arms, key=lambda a: rates[a])
    last_choice = results[-1].choice
    votes: dict[str, dict[str, int]] = {}
    for r in results:
        for seg, arm in r.choice.items():
            votes.setdefault(seg, {}).setdefault(arm, 0)
            votes[seg][arm] += 1
    return {
        "rows": len(log.rows),
        "skipped": log.skipped,
        "matched": round(statistics.fmean(r.matched for r in results)),
        "matched_min": min(r.matched for r in results),
        "runs": runs,
        "policy_rate": statistics.fmean(per_run),
        "policy_rate_interval": [min(per_run), max(per_run)],
        "policy_rate_runs": per_run,
        "arms": rates,
        "best_arm": best,
        "best_rate": rates[best],
        "ratio_to_best": statistics.fmean(per_run) / rates[best] if rates[best] else math.nan,
        "random_rate": statistics.fmean(rates.values()),
        "segments": {s: {"choice": last_choice[s], "runs": votes[s]} for s in sorted(votes)},
        "floor": floor,
        "prior_strength": prior_strength,
    }
