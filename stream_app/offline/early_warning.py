"""Early warning: how soon the policy's flags reach churners, against a generated file's truth.

AUC says whether the ranking is right; a retention team also needs to reach a churner while
they can still be saved (issue #19). Pure functions: the policy's flags and the generator's
truth file (``<file>.truth.jsonl``, see :mod:`stream_app.offline.generate`) in, figures out.

Definitions (docs/model.md, *Early warning*):

- a *flag* is a decision with outcome ``treatment`` or ``holdout`` (the holdout is flagged,
  only not sent); a suppressed decision is not one;
- the *churners* are the truth's churners whose churn began inside the file and whose last
  event is at least 14 days before its end, so that every window below can be observed;
- a churner's *warning* is their first flag at or after their churn onset (a flag before
  it was about something else); the *lead time* is last event minus warning, in days
  (positive: flagged while still active);
- *precision* is the share of flagged users who are churners; the *base rate* the share of
  churners among all users: what flagging users at random would reach.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

DAY = 86400.0
FLAG_OUTCOMES = frozenset({"treatment", "holdout"})
WINDOWS_DAYS = (7, 14)
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


@dataclass(frozen=True, slots=True)
class Truth:
    """One user of a generated file: whether and when they churn, when they were last seen."""

    user_id: str
    churner: bool
    churn_onset: float | None
    last_event: float | None


@dataclass(frozen=True, slots=True)
class Flag:
    """One decision of the policy (outcome: treatment, holdout or suppressed)."""

    user_id: str
    ts: float
    outcome: str


def truth_file(events: Path) -> Path:
    """Where the generator writes the truth of ``events`` (``generate.truth_path``)."""
    return events.with_name(events.name + ".truth.jsonl")


def _time(v: object) -> float | None:
    if v is None:
        return None
    if not isinstance(v, str):
        raise ValueError(f"not a time: {v!r}")
    dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        raise ValueError(f"time without an offset: {v!r}")
    return dt.timestamp()


def parse_truth(lines: Iterable[str]) -> tuple[dict[str, Truth], int]:
    """Truth rows by user, and the number of rows that were not valid (skipped, counted:
    a broken truth file must not stop an evaluation)."""
    out: dict[str, Truth] = {}
    bad = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            uid, churner = row["user_id"], row["churner"]
            if not isinstance(uid, str) or not isinstance(churner, bool):
                raise ValueError("user_id must be a string and churner a boolean")
            out[uid] = Truth(uid, churner, _time(row.get("churn_onset")), _time(row["last_event"]))
        except (ValueError, KeyError, TypeError):
            bad += 1
    return out, bad


def _quantile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default)."""
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def early_warning(
    flags: Iterable[Flag], truth: Mapping[str, Truth], start: float, end: float
) -> dict[str, Any]:
    """The early-warning figures of one replay from ``start`` to ``end`` (event time)."""
    flagged: dict[str, list[float]] = {}
    interventions = n_flags = 0
    for f in flags:
        if f.outcome not in FLAG_OUTCOMES:
            continue
        n_flags += 1
        interventions += f.outcome == "treatment"
        flagged.setdefault(f.user_id, []).append(f.ts)
    users = [t for t in truth.values() if t.last_event is not None]
    observable = max(WINDOWS_DAYS) * DAY
    churners = [
        t
        for t in users
        if t.churner
        and t.churn_onset is not None
        and t.last_event is not None
        and t.last_event + observable <= end
    ]
    leads: list[float] = []
    for t in churners:
        assert t.churn_onset is not None and t.last_event is not None
        after_onset = [ts for ts in flagged.get(t.user_id, ()) if ts >= t.churn_onset]
        if after_onset:
            leads.append((t.last_event - min(after_onset)) / DAY)
    n = len(churners)
    flagged_users = [u for u in flagged if u in truth]
    churner_ids = {t.user_id for t in users if t.churner}
    base_rate = len(churner_ids) / len(users) if users else math.nan
    precision = (
        sum(u in churner_ids for u in flagged_users) / len(flagged_users)
        if flagged_users
        else math.nan
    )
    months = (end - start) / (30 * DAY)
    per_user_month = len(users) * months if users and months > 0 else math.nan
    leads.sort()
    return {
        "churners": n,
        "flagged_before_last_event": _share(sum(lead > 0 for lead in leads), n),
        **{
            f"flagged_within_{d}d": _share(sum(lead >= -d for lead in leads), n)
            for d in WINDOWS_DAYS
        },
        "flagged_ever": _share(len(leads), n),
        "lead_time_days": {f"p{round(q * 100)}": round(_quantile(leads, q), 2) for q in QUANTILES}
        if leads
        else {},
        "precision": _round(precision),
        "base_rate": _round(base_rate),
        "precision_over_base_rate": _round(precision / base_rate if base_rate else math.nan),
        "flagged_users": len(flagged_users),
        "flags_per_user_month": _round(n_flags / per_user_month),
        "interventions_per_user_month": _round(interventions / per_user_month),
    }


def _share(k: int, n: int) -> float | None:
    return round(k / n, 4) if n else None


def _round(v: float) -> float | None:
    return None if math.isnan(v) else round(v, 4)


def early_warning_for(
    events: Path, flags: Iterable[Flag], start: float, end: float
) -> dict[str, Any] | None:
    """The figures when ``events`` has a truth file next to it, else None (a real log)."""
    path = truth_file(events)
    if not path.is_file():
        return None
    with path.open() as fh:
        truth, bad = parse_truth(fh)
    return {**early_warning(flags, truth, start, end), "truth_invalid_rows": bad}
