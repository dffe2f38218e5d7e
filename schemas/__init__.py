"""Pydantic models of the event contract and of every output, plus JSON Schema export."""

from schemas.events import (
    EVENT_ADAPTER,
    EVENT_TYPES,
    BrowseEvent,
    Event,
    PurchaseEvent,
    ReturnEvent,
    ReviewEvent,
    SearchEvent,
)
from schemas.outputs import (
    DeadLetter,
    Decision,
    Intervention,
    ModelSnapshot,
    TrainingExample,
)

__all__ = [
    "EVENT_ADAPTER",
    "EVENT_TYPES",
    "BrowseEvent",
    "DeadLetter",
    "Decision",
    "Event",
    "Intervention",
    "ModelSnapshot",
    "PurchaseEvent",
    "ReturnEvent",
    "ReviewEvent",
    "SearchEvent",
    "TrainingExample",
]
