"""Patches for faust-streaming 0.15.3 defects that lose events after a rebalance.

Applied once by :func:`stream_app.app.create_app` (:func:`apply`), which first checks that
the installed faust-streaming, aiokafka and mode-streaming are exactly the versions the
patches were written against (:data:`WRITTEN_FOR`, pinned in ``pyproject.toml``): a patch
of another version's private code could silently do nothing, or the wrong thing. Remove
this module when faust-streaming fixes it upstream (0.15.3 is the latest release, and its
master branch has the same code).

**The defect** (faust-streaming 0.15.3 with aiokafka 0.14; upstream reports of the symptom:
faust-streaming#629, and the prefetch-during-rebalance family #216 and #221). During a
rebalance Faust pauses every partition *on its own side only* (``Consumer.pause_partitions``
edits a set) and stops the flow, while aiokafka keeps prefetching every assigned partition:

1. Faust's fetcher passes its live ``_active_partitions`` set to aiokafka's
   ``Fetcher.fetched_records`` (``faust/transport/consumer.py``, ``_wait_next_records``,
   and ``faust/transport/drivers/aiokafka.py``, ``_fetch_records``). The rebalance empties
   that set while the call waits (up to 1 s), and aiokafka reads an empty set as "every
   partition" (``aiokafka/consumer/fetcher.py``, ``if partitions and tp not in
   partitions``): it hands out the prefetched records of the paused partitions and moves
   their positions past them.
2. Faust drops those records ("getmany called while flow not active. Seek back to committed
   offsets.", or its ``tp in active_partitions`` filter) and relies on
   ``Consumer.perform_seek`` -> ``seek_to_committed`` to fetch them again. aiokafka's
   ``seek_to_committed`` only seeks a partition whose committed offset is > 0
   (``aiokafka/consumer/consumer.py``, ``if offset and offset > 0``): a partition the worker
   has not committed yet keeps the advanced position, and the dropped events are never
   fetched again. The worker looks healthy ("Worker ready", fetches at the new position)
   while those users are silently not scored. This is scale-out of a young worker, which
   keeps partitions it has not committed yet (``broker_commit_interval`` is 2.8 s):
   ``tests/integration/test_scale_out.py``.
3. At the end of recovery Faust resumes the stream partitions, seeks them to committed
   offsets while the flow is already on, and only then calls ``app.flow_control.resume()``
   (``faust/tables/recovery.py``, ``on_recovery_completed``), which clears every agent
   queue (``mode/utils/queues.py``, ``FlowControlEvent.resume``) although the flow was not
   suspended: events delivered during the seek are dropped after Faust recorded them as
   read, so they are not fetched again either. Seen as one lost event in 3 of 11
   scale-out runs with a first version of fixes 1 and 2 whose seek took 1.5 s.

**The fixes**, one per step (``tests/integration/test_faust_fixes.py`` tests each with its
patch, and shows its defect after :func:`remove`):

1. :func:`_fetch_records`: give aiokafka a view of the active set that is never empty, so
   it only ever hands out records of partitions Faust currently consumes; the records of
   paused partitions stay prefetched in aiokafka, at their position.
2. :func:`_seek_to_committed`: after aiokafka's seek to committed offsets, seek every
   stream partition without a committed offset to offset 0; an offset below the log start
   makes aiokafka reset to the earliest offset, which is ``consumer_auto_offset_reset``
   here (with ``latest`` the partition is left where it is, as a fresh consumer would
   skip those events too). Faust's "seek back to committed offsets" then does what it
   says. Changelog partitions are left to recovery, which seeks them itself. Replays are
   harmless here: events are deduplicated by ``event_id`` (at-least-once). The seek is
   local: looking the log start up would wait behind the fetcher's long poll (1.5 s) and
   widen the window of step 3.
3. :func:`_resume`: resuming a flow that is not suspended leaves the queues alone; the
   first resume after a suspension still clears them, as Faust means it to.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Set
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from mode.utils.queues import FlowControlEvent

from stream_app.errors import DependencyError

log = logging.getLogger(__name__)

_original_seek_to_committed = AIOKafkaConsumerThread.seek_to_committed
_original_fetch_records = AIOKafkaConsumerThread._fetch_records
_original_resume = FlowControlEvent.resume
_APPLIED = "_churn_stream_fixes"

# The distributions whose private code the patches replace or rely on, at the versions they
# were written and tested against (tests/integration/test_faust_fixes.py shows each defect
# on exactly these). Keep in step with the == pins in pyproject.toml.
WRITTEN_FOR = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0", "mode-streaming": "0.7.1"}


class OnlyThese(Set[Any]):
    """A live, read-only view of Faust's active partitions that is never falsy: aiokafka
    treats an empty partition set as "all partitions"."""

    def __init__(self, live: Set[Any]) -> None:
        self._live = live

    def __contains__(self, tp: object) -> bool:
        return tp in self._live

    def __iter__(self) -> Iterator[Any]:
        return iter(set(self._live))

    def __len__(self) -> int:
        return len(self._live)

    def __bool__(self) -> bool:
        return True


async def _fetch_records(
    self: AIOKafkaConsumerThread,
    consumer: AIOKafkaConsumer,
    active_partitions: Set[Any] | None,
    timeout: float | None = None,
    max_records: int | None = None,
) -> Any:
    partitions = None if active_partitions is None else OnlyThese(active_partitions)
    return await _original_fetch_records(
        self,
        consumer,
        partitions,  # type: ignore[arg-type]
        timeout=timeout,
        max_records=max_records,
    )


async def rewind_uncommitted(
    consumer: AIOKafkaConsumer, reset: str, skip_topics: frozenset[str]
) -> Mapping[TopicPartition, int | None]:
    """``consumer.seek_to_committed()``, then seek every assigned partition without a
    committed offset (outside ``skip_topics``) back to offset 0 (a committed 0 too, which
    aiokafka also skips); with ``reset == "latest"`` only the committed 0s. Runs on the
    consumer's own event loop. Returns what ``seek_to_committed`` returned."""
    committed: Mapping[TopicPartition, int | None] = await consumer.seek_to_committed()
    rewind = [
        tp
        for tp, off in committed.items()
        if tp.topic not in skip_topics and (off == 0 or (off is None and reset != "latest"))
    ]
    for tp in rewind:
        consumer.seek(tp, 0)
    if rewind:
        log.debug("no committed offset, back to 0: %s", sorted(map(str, rewind)))
    return committed


async def _seek_to_committed(self: AIOKafkaConsumerThread) -> Mapping[Any, int]:
    app = self.app
    skip = frozenset(app.tables.changelog_topics)
    reset = str(app.conf.consumer_auto_offset_reset)
    committed: Mapping[Any, int] = await self.call_thread(
        rewind_uncommitted, self._ensure_consumer(), reset, skip
    )
    return committed


def _resume(self: FlowControlEvent) -> None:
    if self.is_active():
        return  # not suspended: the queues hold events delivered since, keep them
    _original_resume(self)


def _installed(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def check_versions(installed: Callable[[str], str] | None = None) -> None:
    """Raise DependencyError unless every distribution of :data:`WRITTEN_FOR` is installed
    (``installed(name)``: its version) at exactly its version; the message says what was
    found and what to do."""
    lookup = installed or _installed
    found = {name: lookup(name) for name in WRITTEN_FOR}
    wrong = {name: got for name, got in found.items() if got != WRITTEN_FOR[name]}
    if not wrong:
        return
    pins = [f"{n}=={v}" for n, v in WRITTEN_FOR.items()]
    got = ", ".join(f"{n} {v}" for n, v in wrong.items())
    raise DependencyError(
        f"stream_app/runtime/faust_fixes.py patches private code of {', '.join(pins)}, but found "
        f"{got}. Install the pinned versions (pip install -e . or pip install "
        f"{' '.join(pins)}); to upgrade instead, check each patch against the new code, "
        "run tests/integration/test_faust_fixes.py, then update WRITTEN_FOR and the pins "
        "in pyproject.toml"
    )


def apply() -> None:
    """Check the installed versions (:func:`check_versions`), then install the patches
    (idempotent)."""
    check_versions()
    if getattr(AIOKafkaConsumerThread, _APPLIED, False):
        return
    AIOKafkaConsumerThread.seek_to_committed = _seek_to_committed  # type: ignore[method-assign]
    AIOKafkaConsumerThread._fetch_records = _fetch_records  # type: ignore[method-assign]
    FlowControlEvent.resume = _resume  # type: ignore[method-assign]
    setattr(AIOKafkaConsumerThread, _APPLIED, True)  # noqa: B010


def remove() -> None:
    """Undo :func:`apply` (for tests that show the defect)."""
    AIOKafkaConsumerThread.seek_to_committed = _original_seek_to_committed  # type: ignore[method-assign]
    AIOKafkaConsumerThread._fetch_records = _original_fetch_records  # type: ignore[method-assign]
    FlowControlEvent.resume = _original_resume  # type: ignore[method-assign]
    setattr(AIOKafkaConsumerThread, _APPLIED, False)  # noqa: B010
