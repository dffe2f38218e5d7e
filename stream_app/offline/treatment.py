"""Simulated treatment effect: which of a generated user's two futures the evaluator keeps.

``stream-app generate --treatment-effect Q`` picks, per churner and with probability Q, users
an intervention would save, and writes two futures for each from their churn onset on: the
churn path they follow untreated (tagged ``"churn"``) and the path they follow once treated
(tagged ``"saved"``), both in ``properties.treatment_path``. A driver that knows when a user
was first sent an intervention keeps the churn path up to that time and the saved path after
it; untreated and holdout users keep the churn path. Untagged events are always kept.
"""

from __future__ import annotations

from collections.abc import Mapping

from schemas.events import EventView

TAG = "treatment_path"
CHURN = "churn"
SAVED = "saved"


def path_of(event: EventView) -> str | None:
    props = event.properties
    value = props.get(TAG) if props else None
    return value if isinstance(value, str) and value in (CHURN, SAVED) else None


class TreatmentSimulator:
    """Remembers each user's first treatment (first *saving* one, with per-action effects)
    and filters their events accordingly.

    Call :meth:`treated` for every intervention actually sent (outcome ``treatment``, never
    holdout or suppressed), and :meth:`keep_event` before applying each event. The user's
    silence deadlines before the event must have fired (and their decisions been
    recorded) first: a treatment at a deadline decides which path the event belongs to.
    """

    def __init__(self, saved_by: Mapping[str, frozenset[str]] | None = None) -> None:
        self.treated_at: dict[str, float] = {}
        # With per-action effects (generate --action-effects), only an action that saves
        # the user switches them to the saved path; without, any treatment does.
        self.saved_by = saved_by

    def treated(self, user_id: str, at: float, action: str | None = None) -> None:
        if self.saved_by is not None and action not in self.saved_by.get(user_id, ()):
            return
        first = self.treated_at.get(user_id)
        if first is None or at < first:
            self.treated_at[user_id] = at

    @staticmethod
    def keep(event: EventView, treated_at: float | None, ts: float | None = None) -> bool:
        """Whether ``event`` happens in the world where the user was first treated at
        ``treated_at`` (None: never). ``ts`` is the event time in POSIX seconds if the
        caller has it."""
        path = path_of(event)
        if path is None:
            return True
        at = event.ts.timestamp() if ts is None else ts
        if path == SAVED:
            return treated_at is not None and at > treated_at
        return treated_at is None or at <= treated_at

    def keep_event(self, event: EventView, ts: float | None = None) -> bool:
        return self.keep(event, self.treated_at.get(event.user_id), ts)
