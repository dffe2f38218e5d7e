"""The one per-event step both drivers run, and the prequential loop of the offline one.

:func:`step` applies one event through the engine, then fires the partition's due timers.
It yields the event's result first and the timer sweep's second, so a driver acts on each
before the next is computed: offline, the event's labels are learned (and a snapshot they
complete swaps the model) before the sweep scores anyone; live, both go out as messages.
Neither driver keeps a loop of its own around the engine.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping

from schemas.events import EventView
from stream_app.core.engine import Engine, StepResult
from stream_app.core.features import UserState
from stream_app.core.labels import Label
from stream_app.core.learner import Learner
from stream_app.core.timers import PartitionClock


def step(
    engine: Engine,
    store: MutableMapping[str, UserState],
    clock: PartitionClock,
    event: EventView,
    ts: float | None = None,
    offset: int = -1,
) -> Iterator[StepResult]:
    """The event's result (status ``applied``, ``duplicate`` or ``late``), then, for an
    applied event that moved the watermark past a deadline, the timer sweep's."""
    result = engine.process(store, clock, event, ts, offset)
    yield result
    if result.status != "applied":
        return
    due = engine.advance(store, clock)
    if due is not None:
        yield due


def prequential(engine: Engine, learner: Learner, result: StepResult) -> Iterator[Label]:
    """Evaluate-then-learn each resolved label of ``result`` in order; a snapshot the
    learner completes becomes the engine's model at once (the offline driver; live, the
    learner runs on the worker that owns the training partition)."""
    for label in result.labels:
        snapshot = learner.learn(label)
        if snapshot is not None:
            engine.use_snapshot(snapshot)
        yield label
