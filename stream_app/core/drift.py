"""ADWIN drift detection with its state as plain data, so the learner's checkpoint keeps it.

River's ``drift.ADWIN`` (0.26) keeps its window in a Rust object that cannot be read out or
rebuilt, so a restarted learner used to start a blank detector: it could not see a drift
that began before the restart until a whole new window had filled. :class:`Adwin` follows
River's algorithm and parameters step by step (Bifet and Gavaldà 2007, ADWIN2 with
exponential-histogram buckets; a test checks it flags drifts at the same updates as
River's), and :meth:`Adwin.state` / :meth:`Adwin.from_state` carry it across a restart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Adwin:
    """Adaptive windowing: flags a drift when two sub-windows' means differ by more than
    a Hoeffding-style bound; then, like River's detector, starts afresh on the next update.

    >>> det = Adwin()
    >>> hits = [i for i, x in enumerate([0.0] * 1000 + [1.0] * 1000) if det.update(x)]
    >>> hits[0] > 1000
    True
    """

    delta: float = 0.002
    clock: int = 32
    max_buckets: int = 5
    min_window_length: int = 5
    grace_period: int = 10
    drift_detected: bool = False
    tick: int = 0
    width: float = 0.0
    total: float = 0.0
    variance: float = 0.0
    # rows[i]: buckets of 2**i values each, oldest first, as [total, variance]; row 0 holds
    # the newest values.
    rows: list[list[list[float]]] = field(default_factory=lambda: [[]])

    def update(self, x: float) -> bool:
        """Add one value; True when this value completes a detected drift."""
        if self.drift_detected:
            self._reset()
        self._insert(float(x))
        self.drift_detected = self._detect()
        return self.drift_detected

    def _reset(self) -> None:
        self.drift_detected = False
        self.tick, self.width, self.total, self.variance = 0, 0.0, 0.0, 0.0
        self.rows = [[]]

    def _insert(self, x: float) -> None:
        self.rows[0].append([x, 0.0])
        self.width += 1
        if self.width > 1.0:
            w = self.width
            d = x - self.total / (w - 1.0)
            self.variance += (w - 1.0) * d * d / w
        self.total += x
        self._compress()

    def _compress(self) -> None:
        idx = 0
        while idx < len(self.rows) and len(self.rows[idx]) == self.max_buckets + 1:
            if idx + 1 == len(self.rows):
                self.rows.append([])
            row, nxt = self.rows[idx], self.rows[idx + 1]
            n = float(2**idx)
            (t1, v1), (t2, v2) = row[0], row[1]
            d = t1 / n - t2 / n
            nxt.append([t1 + t2, v1 + v2 + n * n * d * d / (n + n)])
            del row[:2]
            if len(nxt) <= self.max_buckets:
                break
            idx += 1

    def _drop_oldest(self) -> float:
        last = len(self.rows) - 1
        n = float(2**last)
        u, v = self.rows[last][0]
        self.width -= n
        self.total -= u
        d = u / n - self.total / self.width
        self.variance -= v + n * self.width * d * d / (n + self.width)
        del self.rows[last][0]
        if not self.rows[last]:
            self.rows.pop()
        return n

    def _detect(self) -> bool:
        self.tick += 1
        if self.tick % self.clock or self.width <= self.grace_period:
            return False
        detected = False
        again = True
        while again:
            again = False
            n0, n1, u0, u1 = 0.0, self.width, 0.0, self.total
            for idx in range(len(self.rows) - 1, -1, -1):
                row, n = self.rows[idx], float(2**idx)
                for k in range(len(row)):
                    u = row[k][0]
                    n0, n1, u0, u1 = n0 + n, n1 - n, u0 + u, u1 - u
                    if idx == 0 and k == len(row) - 1:
                        break  # W1 would be empty
                    if (
                        n1 >= self.min_window_length
                        and n0 >= self.min_window_length
                        and self._cut(n0, n1, u0 / n0 - u1 / n1)
                    ):
                        detected = again = True
                        if self.width > 0:
                            self._drop_oldest()
                        break
                if again:
                    break
        return detected

    def _cut(self, n0: float, n1: float, delta_mean: float) -> bool:
        delta_prime = math.log(2 * math.log(self.width) / self.delta)
        m_recip = 1.0 / (n0 - self.min_window_length + 1) + 1.0 / (n1 - self.min_window_length + 1)
        in_window = self.variance / self.width
        epsilon = math.sqrt(2 * m_recip * in_window * delta_prime) + 2 / 3 * delta_prime * m_recip
        return abs(delta_mean) > epsilon

    # --- checkpoint -------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything :meth:`from_state` needs to continue exactly (JSON-safe)."""
        return {
            "drift_detected": self.drift_detected,
            "tick": self.tick,
            "width": self.width,
            "total": self.total,
            "variance": self.variance,
            "rows": [[list(b) for b in row] for row in self.rows],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], **params: Any) -> Adwin:
        """The detector :meth:`state` described; raises ValueError if it is inconsistent."""
        rows = [[[float(t), float(v)] for t, v in row] for row in state["rows"]] or [[]]
        det = cls(
            **params,
            drift_detected=bool(state["drift_detected"]),
            tick=int(state["tick"]),
            width=float(state["width"]),
            total=float(state["total"]),
            variance=float(state["variance"]),
            rows=rows,
        )
        held = sum(len(row) * 2**i for i, row in enumerate(rows))
        if held != det.width or any(len(row) > det.max_buckets for row in rows):
            raise ValueError(f"drift detector state: {held} values in buckets, width {det.width}")
        return det
