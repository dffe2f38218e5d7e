"""The engine both drivers run: dedup, features, event-time timers, scoring, labels.

``Engine.process`` takes one validated event and a mutable mapping of user states (a dict
offline, a Faust table live) and returns what happened. All of a user's timers that fall
before one of their own events are fired first, in time order, so a user's labels and scores
depend only on that user's events and the model in use, not on how fast the watermark moves.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from typing import Literal

from schemas.events import EventView
from schemas.outputs import ModelSnapshot
from stream_app.core.config import EngineConfig
from stream_app.core.features import FeatureSpace, UserState, event_hash
from stream_app.core.labels import Label, LabelBook
from stream_app.core.model import ColdStartPrior, LinearScorer, Scorer
from stream_app.core.policy.chooser import Posterior
from stream_app.core.policy.decide import DecisionOut, Policy
from stream_app.core.policy.state import PartitionGuard
from stream_app.core.timers import PartitionClock

# Events that change a user's risk enough to rescore at once, even inside a session.
SIGNAL_TYPES = frozenset({"purchase", "return", "support_contact", "review"})

Status = Literal["applied", "duplicate", "late"]
Trigger = Literal["event", "silence"]


@dataclass(slots=True)
class Score:
    user_id: str
    ts: float
    p: float
    trigger: Trigger
    model_version: int
    features: list[float]  # in Engine.space.names order


class StepResult:
    """What one event (or one timer sweep) produced. A plain class: building a slots
    dataclass with two default factories costs more than this whole check per event."""

    __slots__ = ("status", "scores", "labels", "decisions")

    def __init__(self, status: Status = "applied") -> None:
        self.status: Status = status
        self.scores: list[Score] = []
        self.labels: list[Label] = []
        self.decisions: list[DecisionOut] = []

    def extend(self, other: StepResult) -> None:
        self.scores += other.scores
        self.labels += other.labels
        self.decisions += other.decisions


class Engine:
    """Stateless apart from the scorer: state lives in the store and the PartitionClock."""

    def __init__(
        self, config: EngineConfig, scorer: Scorer | None = None, policy: Policy | None = None
    ) -> None:
        self.config = config
        self.space = FeatureSpace(config.half_lives, config.session_gap, config.dedup_capacity)
        self.labels = LabelBook(
            config.horizon, config.snapshot_interval, self.space.names, config.label_release
        )
        self.prior = ColdStartPrior(self.space.names)
        self.policy = policy  # runs after every score when set (decisions in StepResult)
        self.scorer: Scorer = scorer or self.prior
        self._rescore = tuple(sorted(config.rescore_after))
        self._purchase_only = config.label_activity == "purchase"
        self._score_min_interval = config.score_min_interval
        # No training snapshots before this event time. The offline driver sets it to the
        # file's first event + warm-up, so that labels come from users whose features had
        # time to fill (everyone looks brand new on the first day of a log).
        self.labels_from = -math.inf

    @property
    def train_on_treated(self) -> bool:
        """Whether the learner learns from treated users' examples (policy setting)."""
        return self.policy is None or self.policy.config.train_on_treated

    # --- the model in use ---------------------------------------------------------------
    def use_scorer(self, scorer: Scorer) -> None:
        """Score with ``scorer`` from now on (both drivers swap models only through here)."""
        self.scorer = scorer

    def use_snapshot(self, snapshot: ModelSnapshot) -> Scorer:
        """Hand scoring to a validated snapshot's model when it is ready, else keep the
        cold-start prior, and the policy's chooser to its bandit counts (a snapshot from
        before it had any keeps the counts in use); returns the scorer now in use."""
        self.use_scorer(LinearScorer(snapshot) if snapshot.ready else self.prior)
        if self.policy is not None and snapshot.bandit is not None:
            self.policy.use_posterior(Posterior.from_dict(snapshot.bandit))
        return self.scorer

    def new_clock(self, partitions: int = 1) -> PartitionClock:
        """A partition's clock, with the policy's guard (its share of a budget split over
        ``partitions``) when a policy runs."""
        clock = PartitionClock(self.config.allowed_lateness)
        if self.policy is not None:
            clock.guard = self.policy.new_guard(partitions)
        return clock

    # --- events -----------------------------------------------------------------------
    def process(
        self,
        store: MutableMapping[str, UserState],
        clock: PartitionClock,
        event: EventView,
        ts: float | None = None,
        offset: int = -1,
    ) -> StepResult:
        """Apply one event; ``ts`` is ``event.ts`` as POSIX seconds if the caller has it,
        ``offset`` its source offset when it comes from a partition (live)."""
        if ts is None:
            ts = event.ts.timestamp()
        uid = event.user_id
        state = store.get(uid)
        h_id = event_hash(event.event_id)
        # An event already applied is a duplicate whatever its time: checked before the
        # watermark, or every redelivery after a restart would be a late_event letter. A
        # redelivery (offset at or below the user's last) is one even beyond the id ring:
        # a heavy user can have more than 64 events between a commit and a crash.
        if state is not None and (0 <= offset <= state.offset or state.seen(h_id)):
            return StepResult("duplicate")
        stream_time = clock.stream_time
        if ts > stream_time:
            clock.stream_time = ts
        elif ts < stream_time - clock.allowed_lateness:
            return StepResult("late")
        if state is None:
            state = self.space.new_state(uid)
        result = StepResult()
        in_order = not ts < state.last_ts  # NaN (new user) counts as in order
        guard = clock.guard
        if in_order and state.due < ts:
            self._fire(state, ts, result, guard)
        new_session = state.apply(event, ts, h_id, self.space)
        if offset >= 0:
            state.offset = offset
        if in_order:
            state.rescore_idx = 0
            etype = event.event_type
            if etype == "purchase" if self._purchase_only else new_session:
                result.labels += self.labels.resolve_activity(state, ts)
            if not ts - state.last_scored_ts < self._score_min_interval or etype in SIGNAL_TYPES:
                self._score(state, ts, "event", result, guard)  # (NaN: never scored)
        due = self.next_deadline(state)
        if due < state.due:
            clock.schedule(uid, due)
        # A later deadline needs no push: the clock still holds one at or before the old
        # state.due, and when that pops, advance() reschedules from the state.
        state.due = due
        store[uid] = state
        return result

    # --- timers -----------------------------------------------------------------------
    def advance(
        self, store: MutableMapping[str, UserState], clock: PartitionClock
    ) -> StepResult | None:
        """Fire every deadline strictly before the watermark (silent users); None when
        nothing was due (the common case, kept cheap)."""
        if not clock.has_due():
            return None
        result = StepResult()
        wm = clock.watermark
        for uid in clock.pop_due():
            state = store.get(uid)
            if state is None:
                continue
            n_scores, n_labels = len(result.scores), len(result.labels)
            self._fire(state, wm, result, clock.guard)
            state.due = self.next_deadline(state)
            if len(result.scores) != n_scores or len(result.labels) != n_labels:
                store[uid] = state
            clock.schedule(uid, state.due)
        return result

    def catch_up(
        self,
        store: MutableMapping[str, UserState],
        clock: PartitionClock,
        user_id: str,
        until: float,
    ) -> StepResult | None:
        """Fire one user's deadlines before ``until``, as :meth:`process` would first do for
        their event at ``until``; None when it would fire nothing. A driver that must act
        on those scores before deciding whether to apply the event (the offline treatment
        simulation) calls this first; :meth:`process` then finds nothing left to fire."""
        state = store.get(user_id)
        if (
            state is None
            or until < clock.stream_time - clock.allowed_lateness  # late: process() skips it
            or until < state.last_ts  # out of order: process() fires nothing
            or not state.due < until
        ):
            return None
        result = StepResult()
        self._fire(state, until, result, clock.guard)
        state.due = self.next_deadline(state)
        clock.schedule(user_id, state.due)
        store[user_id] = state
        return result

    def rebuild(self, users: Iterable[tuple[str, UserState]], clock: PartitionClock) -> int:
        """Re-derive the deadline index from the table (on partition assignment).

        The stream time is not taken from the table: after a crash the changelog can hold
        some users' later events while an earlier event of another user was applied but
        never persisted. Redelivered, that event would be older than a watermark derived
        from the table and become a false late_event letter (31 in a kill -9 run of 136k
        events with one day of allowed lateness). The stream time is re-established by the
        events the partition processes from its committed offset on."""
        clock.reset()
        for uid, state in users:
            state.due = self.next_deadline(state)
            clock.schedule(uid, state.due)
        return len(clock)

    def next_deadline(self, state: UserState) -> float:
        return min(self._rescore_deadline(state), self.labels.next_deadline(state))

    def _rescore_deadline(self, state: UserState) -> float:
        i = state.rescore_idx
        return state.last_ts + self._rescore[i] if i < len(self._rescore) else math.inf

    def _fire(
        self, state: UserState, until: float, result: StepResult, guard: PartitionGuard | None
    ) -> None:
        """Fire this user's deadlines strictly before ``until``, in time order."""
        while True:
            d_r = self._rescore_deadline(state)
            d_l = self.labels.next_deadline(state)
            if not min(d_r, d_l) < until:
                return
            if d_l <= d_r:
                result.labels += self.labels.resolve_expired(state, d_l)
            else:
                state.rescore_idx += 1
                self._score(state, d_r, "silence", result, guard)

    # --- scoring ----------------------------------------------------------------------
    def _score(
        self,
        state: UserState,
        at: float,
        trigger: Trigger,
        result: StepResult,
        guard: PartitionGuard | None,
    ) -> None:
        vec = state.vector(at, self.space)
        scorer = self.scorer
        p = scorer.score(vec)
        state.last_scored_ts = at
        state.last_p = p
        score = Score(state.user_id, at, p, trigger, scorer.version, vec)
        group = "none"
        segment = action = None
        if self.policy is not None and guard is not None:
            out = self.policy.decide(state, score, scorer, guard)
            if out is not None:
                result.decisions.append(out)
                group, segment, action = out.group, out.segment, out.action
        if at >= self.labels_from:
            self.labels.maybe_snapshot(state, at, p, vec, group, scorer.version, segment, action)
        result.scores.append(score)

    def score_now(self, state: UserState, at: float) -> tuple[float, list[tuple[str, float]]]:
        """Score a user as of ``at`` without touching state (audience export): p and the
        reason codes (feature, contribution to the log-odds)."""
        vec = state.vector(at, self.space)
        return self.scorer.score(vec), self.scorer.reason_codes(vec)
