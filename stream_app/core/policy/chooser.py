"""Action choosers: the fixed rules, or Thompson sampling on the retention each action buys.

The bandit keeps, per (segment, action), the count of treated users who stayed and who
churned, and draws from each action's Beta posterior. The rules' action gets a higher prior
mean, so a cold bandit mostly does what the rules do and moves away only on evidence. The
draw is seeded by the decision id: the same decision chooses the same action in every
process and on every replay, whatever else the process decided before.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from stream_app.errors import StreamAppError


class ChooserStateError(StreamAppError):
    """A serialised posterior that is not a valid one (from a snapshot or checkpoint)."""


class Chooser(Protocol):
    """Picks one of the actions for a decision; learns from treated users' outcomes."""

    def choose(self, segment: str, rules_action: str | None, key: str) -> str: ...
    def learn(self, segment: str, action: str, reward: bool) -> None: ...


class RulesChooser:
    """Today's behaviour: whatever the rules chose. Learns nothing."""

    def choose(self, segment: str, rules_action: str | None, key: str) -> str:
        if rules_action is None:
            raise ValueError("the rules chooser needs the rules' action")
        return rules_action

    def learn(self, segment: str, action: str, reward: bool) -> None:
        return None


@dataclass(slots=True)
class Posterior:
    """Observed outcomes per (segment, action): ``[stayed, churned]`` counts.

    Only observations live here; the prior is the chooser's, so a change of prior in the
    policy file applies to the counts already gathered.
    """

    counts: dict[str, dict[str, list[int]]] = field(default_factory=dict)

    def add(self, segment: str, action: str, reward: bool) -> None:
        cell = self.counts.setdefault(segment, {}).setdefault(action, [0, 0])
        cell[0 if reward else 1] += 1

    def get(self, segment: str, action: str) -> tuple[int, int]:
        cell = self.counts.get(segment, {}).get(action)
        return (cell[0], cell[1]) if cell else (0, 0)

    def merge(self, other: Posterior) -> None:
        for seg, actions in other.counts.items():
            for action, (s, f) in actions.items():
                cell = self.counts.setdefault(seg, {}).setdefault(action, [0, 0])
                cell[0] += s
                cell[1] += f

    def to_dict(self) -> dict[str, dict[str, list[int]]]:
        return {s: {a: list(c) for a, c in acts.items()} for s, acts in self.counts.items()}

    @classmethod
    def from_dict(cls, data: Any) -> Posterior:
        """Validated: a bad snapshot must raise a clear error, never corrupt the counts."""
        if not isinstance(data, Mapping):
            raise ChooserStateError("posterior: expected an object of segments")
        out: dict[str, dict[str, list[int]]] = {}
        for seg, actions in data.items():
            if not isinstance(seg, str) or not isinstance(actions, Mapping):
                raise ChooserStateError(f"posterior: segment {seg!r}: expected an object")
            row: dict[str, list[int]] = {}
            for action, cell in actions.items():
                ok = (
                    isinstance(action, str)
                    and isinstance(cell, Sequence)
                    and len(cell) == 2
                    and all(type(n) is int and n >= 0 for n in cell)
                )
                if not ok:
                    raise ChooserStateError(
                        f"posterior: {seg!r}/{action!r}: expected [stayed, churned] counts"
                    )
                row[action] = [cell[0], cell[1]]
            out[seg] = row
        return cls(out)


def draw_seed(key: str) -> int:
    """A 64-bit seed from a decision id: stable across processes (never Python's hash())."""
    return int.from_bytes(hashlib.blake2b(b"chooser" + key.encode(), digest_size=8).digest(), "big")


class ThompsonChooser:
    """Thompson sampling over (segment, action) with Beta posteriors.

    Per decision: with probability ``floor`` per action, that action uniformly (so no action
    is ever starved of evidence); otherwise the action with the highest posterior draw minus
    its ``cost`` (in units of retention probability). The prior of an action is a Beta of
    strength ``prior_strength`` around ``prior_mean``, raised by ``rules_bonus`` for the
    action the rules would take.
    """

    def __init__(
        self,
        actions: Sequence[str],
        *,
        prior_strength: float = 2.0,
        prior_mean: float = 0.5,
        rules_bonus: float = 0.0,
        floor: float = 0.0,
        costs: Mapping[str, float] | None = None,
        posterior: Posterior | None = None,
    ) -> None:
        if not actions or len(set(actions)) != len(actions):
            raise ValueError("actions must be distinct and not empty")
        if not 0.0 <= floor * len(actions) <= 1.0:
            raise ValueError("floor x number of actions must be in [0, 1]")
        if prior_strength <= 0 or not 0.0 < prior_mean < 1.0:
            raise ValueError("prior_strength must be > 0 and prior_mean in (0, 1)")
        if not 0.0 <= prior_mean + rules_bonus < 1.0:
            raise ValueError("prior_mean + rules_bonus must be in [0, 1)")
        self.actions = tuple(actions)
        self.prior_strength = prior_strength
        self.prior_mean = prior_mean
        self.rules_bonus = rules_bonus
        self.floor = floor
        self.costs = {a: float((costs or {}).get(a, 0.0)) for a in self.actions}
        self.posterior = posterior if posterior is not None else Posterior()

    def _prior(self, action: str, rules_action: str | None) -> tuple[float, float]:
        m = self.prior_mean + (self.rules_bonus if action == rules_action else 0.0)
        return self.prior_strength * m, self.prior_strength * (1.0 - m)

    def mean(self, segment: str, action: str, rules_action: str | None = None) -> float:
        """Posterior mean retention of ``action`` in ``segment`` (prior included)."""
        a0, b0 = self._prior(action, rules_action)
        s, f = self.posterior.get(segment, action)
        return (a0 + s) / (a0 + b0 + s + f)

    def choose(self, segment: str, rules_action: str | None, key: str) -> str:
        rng = random.Random(draw_seed(key))  # noqa: S311 - a reproducible draw, not a secret
        u = rng.random()
        k = len(self.actions)
        if u < self.floor * k:
            return self.actions[min(k - 1, int(u / self.floor))]
        best, best_value = self.actions[0], -math.inf
        for action in self.actions:
            a0, b0 = self._prior(action, rules_action)
            s, f = self.posterior.get(segment, action)
            value = rng.betavariate(a0 + s, b0 + f) - self.costs[action]
            if value > best_value:
                best, best_value = action, value
        return best

    def learn(self, segment: str, action: str, reward: bool) -> None:
        self.posterior.add(segment, action, reward)
