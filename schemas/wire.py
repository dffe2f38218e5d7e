"""The hot-path decoder of the v1 contract: msgspec structs mirroring ``schemas.events``.

The pydantic models in :mod:`schemas.events` are the reference: they define the contract,
generate the JSON Schemas and name the broken rule of a refused message. Validating with them
costs about 4 us per event on the reference machine, close to half of the 10 us an event may
take in total (issue #4), while msgspec decodes *and* checks the same rules in about 1.5 us.

So every message is first decoded here. A message this decoder accepts is one the pydantic
models accept with the same values (``tests/unit/test_wire.py`` checks that on generated valid
and broken messages); anything it refuses, including a message with unknown top-level fields
(which the contract accepts and counts), goes to the pydantic models, which accept it or
name the rule. The fast path can therefore only cost speed, never change a verdict.

Keep this file in step with :mod:`schemas.events`; the differential test fails otherwise.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Annotated, ClassVar, Literal, Union, get_args

import msgspec
from msgspec import Meta, Struct

from schemas.events import BrowseEvent

_FLOAT_MAX = sys.float_info.max  # an upper bound refuses 1e999, which JSON parsers read as inf

# ``\Z``, not ``$``: Python's ``$`` also matches before a trailing newline, which the
# reference (Rust regex) does not, so "u1\n" would slip through.
UserId = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+\Z")]
EventId = Annotated[str, Meta(min_length=1, max_length=128)]
Str64 = Annotated[str, Meta(max_length=64)]
Str128 = Annotated[str, Meta(max_length=128)]
Str256 = Annotated[str, Meta(max_length=256)]
Money = Annotated[float, Meta(ge=0.0, le=_FLOAT_MAX)]
# RFC 3339 in its common form only: the reference reads more spellings (those take the
# reference path), and rounds nothing: msgspec's own datetime rounds a 7th fractional digit
# (.NET writes seven), where pydantic truncates to microseconds. ASCII digits only: ``\d``
# would also match other scripts' digits.
TsText = Annotated[
    str,
    Meta(
        pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})\Z"
    ),
]
PropValue = Str256 | bool | int | Annotated[float, Meta(ge=-_FLOAT_MAX, le=_FLOAT_MAX)]


class WireEvent(
    Struct, frozen=True, kw_only=True, tag_field="event_type", forbid_unknown_fields=True
):
    """Fields every event carries (see schemas.events._EventBase)."""

    event_type: ClassVar[str]
    event_id: EventId
    user_id: UserId
    ts_text: TsText = msgspec.field(name="ts")
    v: Literal[1] = 1
    session_id: Str128 | None = None
    product_id: Str128 | None = None
    category: Str64 | None = None
    price: Money | None = None
    quantity: Annotated[int, Meta(ge=1, le=10000)] | None = None
    properties: Annotated[dict[Str64, PropValue], Meta(max_length=32)] | None = None
    revenue: Money | None = None

    @property
    def ts(self) -> datetime:
        """Event time; raises ValueError for a date that does not exist (Feb 30), which
        the decoder sends to the reference path."""
        return datetime.fromisoformat(self.ts_text)

    @property
    def model_extra(self) -> None:
        """Never any: a message with unknown fields takes the reference path."""
        return None


def _tagged(tag: str) -> type[WireEvent]:
    return type(  # a subclass per event type; the tag is also the ``event_type`` attribute
        f"Wire_{tag}", (WireEvent,), {"event_type": tag}, tag=tag, frozen=True
    )


class WireSearch(WireEvent, tag="search", frozen=True):
    event_type: ClassVar[str] = "search"
    query: Str256 | None = None


class WirePurchase(WireEvent, tag="purchase", frozen=True):
    event_type: ClassVar[str] = "purchase"
    revenue: Money  # required here, optional in the base


class WireReturn(WireEvent, tag="return", frozen=True):
    event_type: ClassVar[str] = "return"
    revenue: Money


class WireReview(WireEvent, tag="review", frozen=True):
    event_type: ClassVar[str] = "review"
    rating: Annotated[int, Meta(ge=1, le=5)]


# The event types with no fields of their own, read from the reference model.
_BROWSE: tuple[str, ...] = get_args(BrowseEvent.model_fields["event_type"].annotation)
WIRE_TYPES: tuple[type[WireEvent], ...] = (
    *(_tagged(t) for t in _BROWSE),
    WireSearch,
    WirePurchase,
    WireReturn,
    WireReview,
)

WIRE_DECODER: msgspec.json.Decoder[WireEvent] = msgspec.json.Decoder(
    Union[WIRE_TYPES]  # noqa: UP007  (a union built from a tuple)
)
