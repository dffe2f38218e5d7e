"""Event-time clock of one partition: stream time, watermark and the deadline index.

Nothing here reads the wall clock. The watermark moves only with event time, so replaying
a month of history in minutes fires the same timers as living through it.
"""

from __future__ import annotations

import heapq
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stream_app.core.policy.state import PartitionGuard


class PartitionClock:
    """Stream time (highest event time seen), the watermark, and a min-heap of per-user
    deadlines.

    The heap holds at most about one live entry per user: a deadline is pushed only when it
    is earlier than the one already scheduled for that user; a later one replaces it when the
    earlier entry pops and the owner finds nothing due yet. The index is derived state,
    rebuilt from the users table with :meth:`reset` + ``schedule`` on partition assignment.
    """

    def __init__(self, allowed_lateness: float) -> None:
        self.allowed_lateness = allowed_lateness
        self.stream_time = -math.inf
        self._heap: list[tuple[float, str]] = []
        self._scheduled: dict[str, float] = {}
        # The retention policy's budget and circuit breaker of this partition (event time,
        # like everything here); None when no policy runs.
        self.guard: PartitionGuard | None = None

    @property
    def watermark(self) -> float:
        return self.stream_time - self.allowed_lateness

    def schedule(self, user_id: str, deadline: float) -> None:
        if not math.isfinite(deadline):
            return
        current = self._scheduled.get(user_id)
        if current is None or deadline < current:
            self._scheduled[user_id] = deadline
            heapq.heappush(self._heap, (deadline, user_id))

    def has_due(self) -> bool:
        heap = self._heap  # (runs after every event: no property call)
        return bool(heap) and heap[0][0] < self.stream_time - self.allowed_lateness

    def pop_due(self) -> list[str]:
        """Users with a deadline strictly before the watermark (an event stamped exactly at
        the watermark may still arrive and must count)."""
        wm = self.watermark
        heap = self._heap
        due = []
        while heap and heap[0][0] < wm:
            deadline, uid = heapq.heappop(heap)
            if self._scheduled.get(uid) == deadline:
                del self._scheduled[uid]
                due.append(uid)
        return due

    def reset(self) -> None:
        """Forget the deadlines and the stream time (the guard stays)."""
        self._heap.clear()
        self._scheduled.clear()
        self.stream_time = -math.inf

    def __len__(self) -> int:
        return len(self._scheduled)
