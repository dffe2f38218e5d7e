"""Which retention action saves which generated churner: the known answer for the chooser.

A table of save probabilities per (generator segment, action). A savable churner draws one
uniform number u (fixed by seed and user id); action a saves them when u < q(segment, a).
One draw for all actions keeps the world consistent: an action with a higher probability
saves everyone a weaker one saves, so "the best action" is well defined per user, and
every chooser is compared on the same users and the same luck.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stream_app.core.policy.config import ACTIONS
from stream_app.errors import InputFileError

Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
# Generator segments: whether the user had bought anything when their churn began (the
# policy sees the same as its ``buyer`` fact: has_purchased).
SEGMENTS = ("buyer", "browser")


class _Row(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    cart_reminder: Probability = 0.0
    outreach: Probability = 0.0
    coupon: Probability = 0.0
    win_back: Probability = 0.0
    recommendations: Probability = 0.0


class ActionEffects(BaseModel):
    """Save probability of each action per generator segment (missing: 0)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    buyer: _Row = _Row()
    browser: _Row = _Row()

    def q(self, segment: str) -> dict[str, float]:
        row: _Row = getattr(self, segment)
        return {a: float(getattr(row, a)) for a in ACTIONS}

    def saved_by(self, segment: str, draw: float) -> list[str]:
        """The actions that save a churner of ``segment`` whose save draw is ``draw``."""
        return [a for a, q in self.q(segment).items() if draw < q]

    @property
    def ceiling(self) -> float:
        """The highest save probability of any action anywhere."""
        return max(max(self.q(s).values()) for s in SEGMENTS)

    def best(self, segment: str) -> str:
        q = self.q(segment)
        return max(ACTIONS, key=lambda a: q[a])


def load_action_effects(path: Path) -> ActionEffects:
    """A JSON file ``{"buyer": {"outreach": 0.6, ...}, "browser": {...}}``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{path}: not valid JSON: {exc}") from None
    try:
        return ActionEffects.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise InputFileError(f"{path}: {where}: {err['msg']}") from None


def saved_by_from_truth(rows: Mapping[str, Mapping[str, object]]) -> dict[str, frozenset[str]]:
    """user id -> the actions that save them, from truth rows that carry ``saved_by``."""
    out: dict[str, frozenset[str]] = {}
    for uid, row in rows.items():
        actions = row.get("saved_by")
        if isinstance(actions, list):
            out[uid] = frozenset(a for a in actions if isinstance(a, str) and a in ACTIONS)
    return out
