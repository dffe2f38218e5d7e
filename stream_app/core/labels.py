"""Delayed churn labels resolved in event time.

A scored user gets at most one training snapshot (a :class:`Pending`) per
``snapshot_interval``. Its label is

* 0 ("retained") from the first *qualifying activity* after ``scored_at`` and no later than
  ``scored_at + horizon``. By default that is the start of a new session (an event after a
  gap of at least ``session_gap``): a click in the very session that was scored says nothing
  about retention. With ``label_activity="purchase"`` only a purchase qualifies.
* 1 ("churned") once event time passes ``scored_at + horizon`` with none.

When the example is *released* to training is a separate choice. ``release="horizon"``
(default) releases every example at ``scored_at + horizon``, whatever its label, so the
training stream arrives in scoring order. Releasing 0s at once (``release="activity"``)
feeds the learner all the retained users a month before any churned one: a survivorship
bias that taught the model that silence means loyalty (see docs/labels.md for the figures).

A silent user is rescored at every silence deadline, so one silence yields up to seven
near-duplicate snapshots (7, 14, ... 90 days). Every snapshot becomes a label and is judged,
but only the first ``max_per_silence`` (2) since the user's last activity are learned from
(``Label.train``). Measured on the audience export (docs/model.md): CDNOW sample 0.775 ->
0.785 (H = 180 d) and 0.808 -> 0.814 (H = 90 d); generated data unchanged or better. One per
silence lost 0.004 on the generated 60-day comparison, three gave back the CDNOW gain.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from schemas.outputs import TrainingExample
from stream_app.core.features import Pending, UserState


@dataclass(frozen=True, slots=True)
class Label:
    """A resolved training example (before it becomes a ``TrainingExample`` message)."""

    user_id: str
    scored_at: float
    resolved_at: float
    label: int
    p: float
    features: dict[str, float]
    group: str  # "none", "treatment" or "holdout": the policy's verdict at scoring time
    model_version: int
    # The same features as a vector in feature-space order, when the engine made the label
    # (saves the learner rebuilding it from the dict).
    vector: Sequence[float] | None = None
    # False: evaluate the prediction, but do not learn from it (see LabelBook).
    train: bool = True
    # The arm of the decision behind ``group``: the bandit's segment and the action chosen
    # (sent for treatment, would-have-been for holdout); None when not flagged.
    segment: str | None = None
    action: str | None = None

    @property
    def treated(self) -> bool:
        return self.group == "treatment"

    @property
    def example_id(self) -> str:
        return f"{self.user_id}:{round(self.scored_at * 1000)}"


class LabelBook:
    """Snapshot taking and label resolution; one instance per engine, state lives in
    ``UserState.pending``."""

    def __init__(
        self,
        horizon: float,
        snapshot_interval: float,
        names: Sequence[str],
        release: Literal["horizon", "activity"] = "horizon",
        max_per_silence: int = 2,
    ) -> None:
        self.names = list(names)
        self.max_per_silence = max_per_silence
        self.horizon = horizon
        self.release = release
        self.snapshot_interval = snapshot_interval
        # Bound on pending snapshots per user (one per interval across the horizon).
        self.max_pending = int(math.ceil(horizon / snapshot_interval)) + 1

    def maybe_snapshot(
        self,
        state: UserState,
        at: float,
        p: float,
        features: list[float],
        group: str,
        model_version: int,
        segment: str | None = None,
        action: str | None = None,
    ) -> bool:
        """Take a training snapshot unless one was taken within ``snapshot_interval``. When
        it is skipped, a flagged score (``group`` not "none") marks the latest open
        snapshot instead (:meth:`mark_group`). Snapshot times never depend on the score,
        so both drivers take the same examples whatever model each one scores with.
        ``segment`` and ``action`` are the flagging decision's arm (None when not flagged)."""
        last = state.last_snapshot_ts
        if not math.isnan(last) and at - last < self.snapshot_interval:
            if group != "none":
                self.mark_group(state, at, group, segment, action)
            return False
        if not last >= state.last_ts:  # (NaN: never) no snapshot since the last activity
            state.spell_snapshots = 0
        state.spell_snapshots += 1
        train = state.spell_snapshots <= self.max_per_silence
        if len(state.pending) >= self.max_pending:  # only reachable with clock jumps
            state.pending.pop(0)
        state.pending.append(
            Pending(
                at,
                p,
                array("d", features),
                group,
                model_version,
                train=train,
                segment=segment if group != "none" else None,
                action=action if group != "none" else None,
            )
        )
        state.last_snapshot_ts = at
        return True

    def mark_group(
        self,
        state: UserState,
        at: float,
        group: str,
        segment: str | None = None,
        action: str | None = None,
    ) -> None:
        """A decision at ``at``: the latest unmarked open snapshot whose horizon covers it
        carries the group (the intervention falls inside that example's outcome window),
        which is what the uplift measure compares, and the decision's arm, which is what
        the bandit learns from."""
        for snap in reversed(state.pending):
            if snap.scored_at <= at < snap.scored_at + self.horizon:
                if snap.group == "none":
                    snap.group = group
                    snap.segment, snap.action = segment, action
                return

    def next_deadline(self, state: UserState) -> float:
        # Snapshots are appended in scoring-time order, so the first is the oldest.
        pending = state.pending
        return pending[0].scored_at + self.horizon if pending else math.inf

    def resolve_activity(self, state: UserState, at: float) -> list[Label]:
        """A qualifying activity at ``at``: open snapshots scored before it and still within
        the horizon get label 0 (returned at once only with ``release="activity"``)."""
        out: list[Label] = []
        for snap in state.pending:
            if snap.label is None and snap.scored_at < at <= snap.scored_at + self.horizon:
                snap.label, snap.resolved_at = 0, at
                if self.release == "activity":
                    out.append(self._label(state.user_id, snap, at, 0))
        if out:
            state.pending = [snap for snap in state.pending if snap.label is None]
        return out

    def resolve_expired(self, state: UserState, at: float) -> list[Label]:
        """Release snapshots whose horizon ended at or before ``at``: label 1 unless an
        activity already gave them 0. The caller makes sure no qualifying activity up to
        their end is still to come."""
        out, keep = [], []
        for snap in state.pending:
            end = snap.scored_at + self.horizon
            if end <= at:
                label = 1 if snap.label is None else 0
                out.append(self._label(state.user_id, snap, snap.resolved_at or end, label))
            else:
                keep.append(snap)
        state.pending = keep
        return out

    def _label(self, user_id: str, snap: Pending, resolved_at: float, label: int) -> Label:
        vector = snap.features  # unpacked once
        features = dict(zip(self.names, vector, strict=True))
        return Label(
            user_id,
            snap.scored_at,
            resolved_at,
            label,
            snap.p,
            features,
            snap.group,
            snap.model_version,
            vector,
            snap.train,
            snap.segment,
            snap.action,
        )


def label_message(label: Label) -> TrainingExample:
    """The training example the worker publishes for a resolved label."""
    return TrainingExample(
        example_id=label.example_id,
        user_id=label.user_id,
        scored_at=datetime.fromtimestamp(label.scored_at, tz=UTC),
        resolved_at=datetime.fromtimestamp(label.resolved_at, tz=UTC),
        label=1 if label.label else 0,
        p=label.p,
        features=label.features,
        treated=label.treated,
        group=label.group,
        model_version=label.model_version,
        train=label.train,
        segment=label.segment,
        action=label.action,
    )
