"""Where applied batches become durable: the one place offsets become committable.

The score service applies a batch to the write-back cache (runtime/user_cache.py) and sends
what it caused (decisions, interventions, training examples, dead letters, forwards) at
once; it hands the batch and those sends' delivery futures to :meth:`Committer.add`.
:meth:`Committer.flush` then writes every dirty user once to the changelog, waits until the
broker acknowledged **every** record sent for the batches it covers (their own sends and the
state writes), only then writes RocksDB's local copy, and only then releases the batches'
offsets to Faust's commit. A refused write is not retried here (the client already retried
what it retries): it stops the worker with :class:`WriteFailed`, nothing after it is
released, and a restart resumes from the last confirmed state and offsets.

aiokafka's ``producer.flush()`` does not raise on a failed batch, and Faust's own commit
trusts it; awaiting each send's future is what makes a commit follow confirmed writes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from stream_app.errors import StreamAppError
from stream_app.metrics import Metrics
from stream_app.runtime.batches import Batch, release
from stream_app.runtime.user_cache import UserCache

log = logging.getLogger(__name__)

# Users encoded (about 15 us each) before the score loop gets the event loop back: a flush
# of 3,000 users in one go held decisions back by ~50 ms (the bench's latency tail).
ENCODE_CHUNK = 256

SendChangelog = Callable[[str, int, bytes | None], Awaitable["asyncio.Future[Any]"]]


class WriteFailed(StreamAppError):
    """The broker refused a record the worker must not lose: the worker stops."""


class Committer:
    """Confirms writes, then releases offsets; runs every ``interval`` seconds (a timer,
    also while no events come, and in a rebalance's ``wait_empty``) and whenever
    ``max_events`` events wait."""

    def __init__(
        self,
        cache: UserCache,
        send_changelog: SendChangelog,
        consumer: Callable[[], Any],
        metrics: Metrics,
        interval: float,
        max_events: int,
        after_flush: Callable[[], None] = lambda: None,
    ) -> None:
        self.cache = cache
        self.send_changelog = send_changelog
        self.consumer = consumer
        self.metrics = metrics
        self.interval = interval
        self.max_events = max_events
        self.after_flush = after_flush
        self.batches: list[Batch] = []  # applied since the last flush, offsets not released
        self.futures: list[asyncio.Future[Any]] = []  # their sends' delivery futures
        self.events = 0
        self.last = time.monotonic()
        self.failed: WriteFailed | None = None
        self._lock = asyncio.Lock()

    def add(self, batch: Batch | None, futures: list[asyncio.Future[Any]]) -> None:
        """A batch applied and its sends' futures; ``None`` for sends no offset waits for
        (a timer sweep on the wall clock): confirmed at the next flush all the same."""
        if batch is not None:
            self.batches.append(batch)
            self.events += len(batch.records)
        self.futures += futures

    def due(self) -> bool:
        return bool(self.batches or self.futures or self.cache.dirty) and (
            self.events >= self.max_events or time.monotonic() - self.last >= self.interval
        )

    def drop(self, batch: Batch) -> None:
        """A batch that will not be applied: its offsets stay uncommitted."""
        release(self.consumer(), batch, commit=False)

    async def flush(self) -> None:
        """Write dirty users, wait for every pending record's acknowledgement, then release
        the covered batches' offsets. Raises WriteFailed when the broker refused one."""
        async with self._lock:
            if self.failed is not None:
                raise self.failed
            self.last = time.monotonic()
            batches, self.batches = self.batches, []
            futures, self.futures = self.futures, []
            self.events = 0
            dirty = list(self.cache.swap_dirty().items())
            rows: list[tuple[str, int, bytes | None]] = []
            for i in range(0, len(dirty), ENCODE_CHUNK):
                if i:
                    await asyncio.sleep(0)  # the score loop runs between chunks
                chunk = self.cache.encode(dirty[i : i + ENCODE_CHUNK])
                for uid, partition, payload in chunk:
                    futures.append(await self.send_changelog(uid, partition, payload))
                rows += chunk
            try:
                for fut in futures:
                    await fut
            except Exception as exc:  # noqa: BLE001 (any refusal stops the worker)
                self._fail(exc, batches)
                raise self.failed from exc  # type: ignore[misc]
            self.cache.persist(rows, futures[len(futures) - len(rows) :])
            consumer = self.consumer()
            for batch in batches:
                release(consumer, batch, commit=True)
            if rows:
                self.metrics.state_writes.inc(len(rows))
            self.metrics.flushes.inc()
            self.after_flush()

    def _fail(self, exc: BaseException, batches: list[Batch]) -> None:
        self.failed = WriteFailed(
            f"the broker refused a write ({type(exc).__name__}: {exc}); stopping so that no "
            "offset is committed past it. A restart resumes from the last confirmed state."
        )
        self.metrics.write_failures.inc()
        log.critical("%s", self.failed)
        consumer = self.consumer()
        # Released without their offsets, so Faust's wait_empty and commit can finish: the
        # events are redelivered to the next owner.
        for batch in [*batches, *self.batches]:
            release(consumer, batch, commit=False)
        self.batches, self.futures = [], []
