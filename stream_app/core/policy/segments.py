"""Segments for the bandit: a few coarse facts about the user, named in the policy file.

A segment must be coarse: the bandit learns one posterior per (segment, action) from the
labels of treated users, a few hundred a day, so ten segments learn ten times slower than one.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from stream_app.core.policy.actions import UserView
from stream_app.core.policy.config import PolicyConfig

ALL = "all"  # the one segment when the policy names no facts


def value_band(revenue: float, edges: Sequence[float]) -> str:
    """``v0`` below the first edge, ``v1`` from it to the next, and so on."""
    return f"v{bisect.bisect_right(edges, revenue)}"


def segment_of(cfg: PolicyConfig, tier: str, view: UserView, top_category: str | None) -> str:
    """``buyer=yes|activity=silent|value=v1``: the facts in ``bandit.segments``, in order."""
    parts = []
    for fact in cfg.bandit.segments:
        if fact == "tier":
            value = tier
        elif fact == "buyer":
            value = "yes" if view.has_purchased else "no"
        elif fact == "activity":
            value = "silent" if view.days_silent >= cfg.actions.silent_days else "active"
        elif fact == "value":
            value = value_band(view.revenue, cfg.bandit.value_bands)
        else:
            value = top_category or "none"
        parts.append(f"{fact}={value}")
    return "|".join(parts) or ALL
