"""Policy state: per user (in the user's table row) and per partition (budget, breaker)."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

from stream_app.core.features import half_life_label

KEY = "pol"  # the policy's slot in UserState.extra
# Present (1) when the row's baseline and previous score are on the "left" scale
# (spike.risk = "left"); absent: p itself (every row written before the setting existed).
SCALE_KEY = "polr"


class UserPolicy:
    """One user's policy state, kept as a short JSON list in ``UserState.extra["pol"]`` so
    it moves with the users table (changelog) and survives restarts.

    ``baseline``: event-time EWMA of the user's past risks, on the scale the policy judges
    (``spike.risk``; None before the first score);
    ``armed``: False from a flag until the risk falls below ``spike.rearm_below``;
    ``sent``: event times of the last interventions (at most ``user_cap``), holdout
    included; ``counted_at``/``counted_flagged``: the breaker counts a user once per
    breaker window (from ``counted_at``), and at most once as flagged in that window.
    """

    __slots__ = (
        "baseline",
        "baseline_ts",
        "prev_p",
        "prev_tier",
        "armed",
        "sent",
        "counted_at",
        "counted_flagged",
    )

    def __init__(self) -> None:
        self.baseline: float | None = None
        self.baseline_ts = -math.inf
        self.prev_p: float | None = None
        self.prev_tier = 0
        self.armed = True
        self.sent: list[float] = []
        self.counted_at = -math.inf
        self.counted_flagged = False

    @classmethod
    def load(cls, extra: dict[str, Any]) -> UserPolicy:
        row = extra.get(KEY)
        if row is None:
            return cls()
        s = cls.__new__(cls)
        # A list, not a dict: this runs on every score (docs/policy.md, "Cost").
        b, bt, s.prev_p, s.prev_tier, armed, c, cf, sent = row
        s.baseline = b
        s.baseline_ts = -math.inf if bt is None else bt
        s.armed = bool(armed)
        s.counted_at = -math.inf if c is None else c
        s.counted_flagged = bool(cf)
        s.sent = sent
        return s

    def save(self, extra: dict[str, Any]) -> None:
        bt, c = self.baseline_ts, self.counted_at
        extra[KEY] = [
            self.baseline,
            None if bt == -math.inf else bt,  # JSON has no infinities
            self.prev_p,
            self.prev_tier,
            1 if self.armed else 0,
            None if c == -math.inf else c,
            1 if self.counted_flagged else 0,
            self.sent,
        ]

    def count(self, at: float, spiked: bool, window: float) -> tuple[bool, bool]:
        """(new scored user, new flagged user) for the breaker: once per window each."""
        new_scored = at - self.counted_at >= window
        if new_scored:
            self.counted_at, self.counted_flagged = at, False
        new_flagged = spiked and not self.counted_flagged
        if new_flagged:
            self.counted_flagged = True
        return new_scored, new_flagged

    def observe(self, p: float, tier: int, at: float, half_life: float) -> None:
        """Fold a score into the baseline (after the spike test has read the old one)."""
        if self.baseline is None:
            self.baseline, self.baseline_ts = p, at
        elif at > self.baseline_ts:  # (a score at the same instant has no time to weigh)
            w = 1.0 - 2.0 ** (-(at - self.baseline_ts) / half_life)
            self.baseline += w * (p - self.baseline)
            self.baseline_ts = at
        self.prev_p, self.prev_tier = p, tier

    def restart_on(self, risk: float, tier: int, at: float) -> None:
        """Start the baseline and previous score again from this one: the row was written
        on the other scale (``spike.risk`` changed, or the first score after an upgrade),
        and comparing across scales would hide or fake a rise. Flags, limits and the
        breaker's counts are kept."""
        self.baseline, self.baseline_ts = risk, at
        self.prev_p, self.prev_tier = risk, tier

    def sent_within(self, at: float, window: float) -> int:
        return sum(1 for t in self.sent if at - t < window)

    def record(self, at: float, cap: int) -> None:
        self.sent = [*self.sent, at][-cap:]


def _nan_out(v: float) -> float | None:
    return v if math.isfinite(v) else None


class RollingCount:
    """Counts in event time over the last ``window`` seconds, in ``buckets`` slices: memory
    is bounded, and an old slice drops out as event time moves on (never the wall clock).
    The running total is kept, not summed per call: the breaker asks for it on every newly
    counted user (summing the slices each time was a fifth of the policy's cost)."""

    def __init__(self, window: float, buckets: int = 24) -> None:
        self.width = window / buckets
        self.buckets = buckets
        self._slices: deque[list[int]] = deque()  # [slice index, count], oldest first
        self._sum = 0
        self._first = -(2**62)  # oldest slice index still inside the window

    def add(self, at: float, n: int = 1) -> None:
        idx = math.floor(at / self.width)
        if idx < self._first:
            return  # already outside the window
        self._sum += n
        slices = self._slices
        for s in reversed(slices):  # nearly always the newest slice
            if s[0] == idx:
                s[1] += n
                return
            if s[0] < idx:
                break
        slices.append([idx, n])
        if len(slices) > 1 and slices[-2][0] > idx:  # a late score: keep slices ordered
            self._slices = deque(sorted(slices))
        self._advance(self._slices[-1][0] - self.buckets + 1)

    def total(self, now: float) -> int:
        """The count within the window ending at ``now`` (``now`` never goes back)."""
        self._advance(math.floor(now / self.width) - self.buckets + 1)
        return self._sum

    def _advance(self, first: int) -> None:
        if first <= self._first:
            return
        self._first = first
        slices = self._slices
        while slices and slices[0][0] < first:
            self._sum -= slices.popleft()[1]

    def to_list(self) -> list[list[int]]:
        return [list(s) for s in self._slices]

    def load(self, data: list[list[int]]) -> None:
        self._slices = deque(sorted([int(i), int(c)] for i, c in data))
        self._sum = sum(c for _, c in self._slices)
        self._first = self._slices[-1][0] - self.buckets + 1 if self._slices else -(2**62)


@dataclass(frozen=True, slots=True)
class BreakerChange:
    """The breaker opened or closed: log ``reason`` and count it."""

    opened: bool
    at: float
    reason: str


class PartitionGuard:
    """Budget and circuit breaker of one partition, in event time. The driver keeps one
    per partition (like the PartitionClock); ``to_dict``/``restore`` let it persist them.
    """

    def __init__(
        self,
        budget: int,
        budget_window: float,
        breaker_window: float,
        open_share: float,
        close_share: float,
        min_scored: int,
    ) -> None:
        self.budget = budget
        self.open_share = open_share
        self.close_share = close_share
        self.min_scored = min_scored
        self.breaker_window = breaker_window
        self.spent = RollingCount(budget_window)
        self.scored = RollingCount(breaker_window)
        self.flagged = RollingCount(breaker_window)
        self.now = -math.inf  # highest score time seen
        self.breaker_open = False
        self.reason = "closed: nothing scored yet"
        self._change: BreakerChange | None = None
        self._judged = math.nan  # slice of event time the breaker was last judged in

    def budget_left(self, at: float) -> int:
        return self.budget - self.spent.total(max(at, self.now))

    def spend(self, at: float) -> None:
        self.spent.add(at)

    def observe(self, at: float, since: float, new_scored: bool, new_flagged: bool) -> None:
        """Count a scored user (and whether they spiked), then re-judge the breaker.

        Both counts go to ``since``, the start of the user's breaker window, so a user
        flagged late in their window never counts as flagged without counting as scored
        (the share stays a share of users)."""
        if at > self.now:
            self.now = at
        if new_scored:
            self.scored.add(since)
        if new_flagged:
            self.flagged.add(since)
        now_slice = math.floor(self.now / self.scored.width)
        if not (new_scored or new_flagged or now_slice != self._judged):
            return  # nothing changed since the last judgement (most scores)
        self._judged = now_slice
        n = self.scored.total(self.now)
        k = self.flagged.total(self.now)
        share = k / n if n else 0.0
        window = half_life_label(self.breaker_window)
        if not self.breaker_open and n >= self.min_scored and share > self.open_share:
            self.breaker_open = True
            self.reason = (
                f"open: {k} of {n} users scored in the last {window} spiked "
                f"({share:.1%} > open_share {self.open_share:.1%})"
            )
            self._change = BreakerChange(True, at, self.reason)
        elif self.breaker_open and share <= self.close_share:
            self.breaker_open = False
            self.reason = (
                f"closed: {k} of {n} users scored in the last {window} spiked "
                f"({share:.1%} <= close_share {self.close_share:.1%})"
            )
            self._change = BreakerChange(False, at, self.reason)

    def pop_change(self) -> BreakerChange | None:
        """The breaker's last transition since the previous call, if any."""
        change, self._change = self._change, None
        return change

    def to_dict(self) -> dict[str, Any]:
        return {
            "now": _nan_out(self.now),
            "open": self.breaker_open,
            "reason": self.reason,
            "spent": self.spent.to_list(),
            "scored": self.scored.to_list(),
            "flagged": self.flagged.to_list(),
        }

    def restore(self, d: dict[str, Any]) -> None:
        self.now = -math.inf if d.get("now") is None else float(d["now"])
        self.breaker_open = bool(d.get("open", False))
        self.reason = str(d.get("reason", self.reason))
        self.spent.load(d.get("spent", []))
        self.scored.load(d.get("scored", []))
        self.flagged.load(d.get("flagged", []))
