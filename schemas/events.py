"""Pydantic models of the v1 clickstream event contract (shared/EVENTS.md)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Literal, Protocol

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter

EVENT_TYPES: tuple[str, ...] = (
    "session_start",
    "page_view",
    "product_view",
    "search",
    "add_to_cart",
    "remove_from_cart",
    "checkout_start",
    "purchase",
    "review",
    "support_contact",
    "return",
)

# Control characters (C0, DEL) are refused in user ids: they break logs, CSV exports and
# terminals downstream.
UserId = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")
]
EventId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
PropKey = Annotated[str, StringConstraints(max_length=64)]
PropValue = Annotated[str, StringConstraints(max_length=256)] | bool | int | float
Money = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _EventBase(BaseModel):
    """Fields every event carries. Strict: no silent coercion of "12" into 12."""

    model_config = ConfigDict(
        frozen=True,
        strict=True,
        extra="allow",
        allow_inf_nan=False,
        json_schema_extra={"additionalProperties": True},
    )

    v: Literal[1] = Field(1, description="Schema version; only 1 is accepted.")
    event_id: EventId = Field(description="Unique per event (producer UUID); the dedup key.")
    user_id: UserId = Field(description="The user; also the Kafka message key.")
    ts: AwareDatetime = Field(description="Event time, RFC 3339 with offset or Z.")
    session_id: Annotated[str, StringConstraints(max_length=128)] | None = None
    product_id: Annotated[str, StringConstraints(max_length=128)] | None = None
    category: Annotated[str, StringConstraints(max_length=64)] | None = None
    price: Money | None = None
    quantity: Annotated[int, Field(ge=1, le=10000)] | None = None
    properties: Annotated[dict[PropKey, PropValue], Field(max_length=32)] | None = None


class BrowseEvent(_EventBase):
    """Navigation, cart and support events: no extra required fields."""

    event_type: Literal[
        "session_start",
        "page_view",
        "product_view",
        "add_to_cart",
        "remove_from_cart",
        "checkout_start",
        "support_contact",
    ]
    revenue: Money | None = None


class SearchEvent(_EventBase):
    event_type: Literal["search"]
    query: Annotated[str, StringConstraints(max_length=256)] | None = None
    revenue: Money | None = None


class PurchaseEvent(_EventBase):
    event_type: Literal["purchase"]
    revenue: Money = Field(description="Order total.")


class ReturnEvent(_EventBase):
    event_type: Literal["return"]
    revenue: Money = Field(description="Value returned.")


class ReviewEvent(_EventBase):
    event_type: Literal["review"]
    rating: Annotated[int, Field(ge=1, le=5)]
    revenue: Money | None = None


Event = Annotated[
    BrowseEvent | SearchEvent | PurchaseEvent | ReturnEvent | ReviewEvent,
    Field(discriminator="event_type"),
]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


class EventView(Protocol):
    """What the engine reads of an event: satisfied by the pydantic models above and by the
    hot-path structs of :mod:`schemas.wire`. ``rating`` is read only from reviews;
    ``properties`` only by the treatment simulation of generated files."""

    @property
    def event_id(self) -> str: ...
    @property
    def user_id(self) -> str: ...
    @property
    def event_type(self) -> str: ...
    @property
    def ts(self) -> datetime: ...
    @property
    def category(self) -> str | None: ...
    @property
    def revenue(self) -> float | None: ...
    @property
    def properties(self) -> Mapping[str, str | bool | int | float] | None: ...
