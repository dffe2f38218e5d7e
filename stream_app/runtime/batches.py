"""Clickstream records in whole per-partition batches, beneath Faust's Stream API.

Faust hands a stream one message at a time: its fetcher awaits every record through mode's
``wait_first`` (four tasks a message), the conductor takes a lock, and the stream iterator
runs sensors, a context variable and an ack per message. That costs 70-90 µs a message on
the bench machine, more than all of the worker's own work per event (docs/performance.md).

:class:`BatchConsumer` keeps Faust's consumer for everything it is good at: group
membership, rebalances, table recovery, pausing, seeking back to committed offsets and
committing acked offsets. Only the fetch loop is replaced: records of the topics a
:class:`BatchSink` names are queued as whole batches for the score service
(agents/score.py); every other topic (table changelogs during recovery) still goes through
Faust's per-message callback, as before.

What it costs: the clickstream and erasure topics get no Faust ``Stream`` (no agent,
sensors, ``stream.take`` or Faust's per-message ``Event``), and this module reads and
writes Faust's private consumer state: ``_wait_next_records``, ``_read_offset``,
``_add_gap``, ``_unacked_messages``, ``_acked``, ``_acked_index``, ``_committed_offset``,
``_n_acked``, ``_commit_every``, ``_waiting_for_ack`` and ``_buffered_partitions``
(faust-streaming 0.15.3; runtime/faust_fixes.py pins the version).

Offsets: a batch is tracked in ``_unacked_messages`` from the moment it is queued (so a
rebalance's ``wait_empty`` waits for it) and only :func:`release` with ``commit=True``
puts its offsets into Faust's acked list, after the broker confirmed every record the
batch caused (runtime/committer.py). A batch dropped unprocessed (a rebalance started, or
its generation is over) is released without its offsets: Faust's seek back to the
committed offset after the rebalance fetches it again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types.tuples import TP, ack_lock
from mode.utils.futures import notify

log = logging.getLogger(__name__)


@dataclass(slots=True, eq=False, weakref_slot=True)
class Batch:
    """Records of one partition, in offset order, fetched in one consumer generation.

    ``acked`` and ``refcount`` are what Faust's ``wait_empty`` reads of a tracked message."""

    tp: TP
    records: Sequence[Any]  # aiokafka ConsumerRecord
    generation: int
    acked: bool = False
    refcount: int = 1


class BatchSink:
    """The bounded queue between the fetch loop and the score service. A full queue makes
    the fetch loop wait, so a backlog stays in Kafka rather than in memory."""

    def __init__(self, topics: frozenset[str], max_batches: int = 8, max_records: int = 2000):
        self.topics = topics
        self.max_records = max_records
        self.queue: asyncio.Queue[Batch] = asyncio.Queue(maxsize=max_batches)

    async def put(self, consumer: Any, tp: TP, records: Sequence[Any], generation: int) -> None:
        step = self.max_records
        for i in range(0, len(records), step):
            batch = Batch(tp, records[i : i + step], generation)
            consumer._unacked_messages.add(batch)  # from now on, wait_empty waits for it
            await self.queue.put(batch)


def release(consumer: Any, batch: Batch, commit: bool) -> None:
    """Done with ``batch``: with ``commit``, its offsets become committable (every effect
    is confirmed); without, they are left for redelivery."""
    with ack_lock:
        if batch.acked:
            return
        batch.acked = True
        if commit:
            tp = batch.tp
            committed = consumer._committed_offset[tp]
            index = consumer._acked_index[tp]
            fresh = [
                r.offset
                for r in batch.records
                if (committed is None or r.offset >= committed) and r.offset not in index
            ]
            if fresh:
                index.update(fresh)
                consumer._acked[tp].extend(fresh)
                consumer._n_acked += len(fresh)
        consumer._unacked_messages.discard(batch)
        notify(consumer._waiting_for_ack)


class BatchConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer whose fetch loop hands the sink's topics over in batches."""

    _commits: set[asyncio.Future[Any]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._commits = set()

    async def _drain_messages(self, fetcher: Any) -> None:  # noqa: C901 (mirrors Faust's loop)
        sink: BatchSink | None = getattr(self.app, "batch_sink", None)
        if sink is None:
            await super()._drain_messages(fetcher)
            return
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        read_offset = self._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        batch_topics = sink.topics
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                records, active = await self._wait_next_records(1.0)
                await asyncio.sleep(0)
                if not records or self.should_stop:
                    continue
                if not self.flow_active:
                    # As Faust's getmany: records fetched while the flow is stopped are
                    # dropped and fetched again from the committed offsets.
                    try:
                        await self.perform_seek()
                    except Exception as exc:  # noqa: BLE001 (Faust logs and goes on too)
                        log.warning("seek back to committed offsets failed: %r", exc)
                    continue
                generation = self.app.consumer_generation_id
                for tp, recs in records.items():
                    if not self.flow_active or self.app.consumer_generation_id != generation:
                        break  # a rebalance began: the rest is fetched again after it
                    if not (active is None or tp in active or tp in self._buffered_partitions):
                        continue
                    r_offset = read_offset[tp]
                    if r_offset is not None and recs and recs[0].offset < r_offset:
                        recs = [r for r in recs if r.offset >= r_offset]
                    if not recs:
                        continue
                    if acks_enabled_for(tp.topic):
                        await self._gaps(tp, r_offset, recs)
                    if tp.topic in batch_topics:
                        commit_every = self._commit_every
                        if commit_every is not None and self._n_acked >= commit_every:
                            self._n_acked = 0
                            # In the background: Faust's commit flushes the producer and
                            # waits for the broker, and awaited here it stopped fetching
                            # for that long (decisions ~1 s late at 15,000 events/s).
                            self._commit_soon()
                        await sink.put(self, tp, recs, generation)
                    else:
                        await self._one_by_one(recs, tp)
                    read_offset[tp] = recs[-1].offset
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    def _commit_soon(self) -> None:
        task = asyncio.ensure_future(self.commit())
        self._commits.add(task)  # a reference until done (the loop holds tasks weakly)
        task.add_done_callback(self._commits.discard)

    async def _gaps(self, tp: TP, r_offset: int | None, recs: Sequence[Any]) -> None:
        """Offsets with no record (compaction, transaction markers) count as acked, as in
        Faust's loop; the records themselves are acked only when processed."""
        prev = r_offset
        if prev and recs[-1].offset - prev == len(recs):
            return  # the common case: no hole before or inside the batch
        for rec in recs:
            if prev and rec.offset - prev > 1:
                await self._add_gap(tp, prev + 1, rec.offset - 1)
            prev = rec.offset

    async def _one_by_one(self, recs: Sequence[Any], tp: TP) -> None:
        """Faust's own path, for topics read through its streams and tables."""
        callback, to_message = self.callback, self._to_message
        for rec in recs:
            await self.wait_first(callback(to_message(tp, rec)), self.suspend_flow.wait())


class BatchTransport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with :class:`BatchConsumer`."""

    Consumer = BatchConsumer
