"""Decoding at the edge: bytes -> a valid event, or a dead letter naming the broken rule."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
from pydantic import ValidationError

from schemas.events import EVENT_ADAPTER, EVENT_TYPES, EventView
from schemas.outputs import DeadLetter, DeadLetterReason
from schemas.wire import WIRE_DECODER

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Source:
    """Where a message came from: topic/partition/offset, or a file and line number."""

    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    key: bytes | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message was refused; becomes a DeadLetter when it has to leave the process."""

    reason: DeadLetterReason
    field: str | None
    detail: str


@dataclass(slots=True)
class Decoded:
    """Exactly one of ``event`` and ``rejection`` is set. ``event`` is a hot-path struct
    (schemas.wire) or, for messages only the reference path takes, a pydantic model."""

    event: EventView | None
    rejection: Rejection | None
    unknown_fields: tuple[str, ...] = ()
    ts: float = 0.0  # event.ts as POSIX seconds (computed once: it is not free)


TOO_DEEP = Rejection(
    "too_deep", None, "JSON nested deeper than the decoder's limit (an event is at most 3 deep)"
)
_TAGS = frozenset(EVENT_TYPES)
_TYPE_TAGS = frozenset({"str", "constrained-str", "bool", "int", "float"})


def _rejection_from(exc: ValidationError) -> Rejection:
    """Map pydantic's first error onto the contract's reason codes."""
    err = exc.errors(include_url=False)[0]
    etype = err["type"]
    loc = [str(p) for p in err["loc"]]
    if loc and loc[0] in _TAGS:  # the discriminated union prefixes the member's tag
        loc = loc[1:]
    if len(loc) > 1 and loc[-1] in _TYPE_TAGS:  # members of a value union (properties)
        loc = loc[:-1]
    field = ".".join(loc) or None
    msg = err["msg"]
    if etype == "json_invalid":
        if "recursion limit" in msg:
            return TOO_DEEP
        return Rejection("invalid_json", None, msg)
    if etype in ("dict_type", "model_type", "model_attributes_type") and not loc:
        return Rejection("not_an_object", None, "an event must be a JSON object")
    if etype == "union_tag_not_found":
        return Rejection("missing_field", "event_type", "event_type is required")
    if etype == "union_tag_invalid":
        return Rejection(
            "unknown_event_type",
            "event_type",
            f"event_type must be one of: {', '.join(EVENT_TYPES)}",
        )
    if field == "v":
        return Rejection("unsupported_version", "v", "only schema version v=1 is accepted")
    if etype == "timezone_aware":
        return Rejection("naive_timestamp", field, "timestamp needs an offset or Z (RFC 3339)")
    if etype == "missing":
        return Rejection("missing_field", field, f"{field} is required")
    return Rejection("invalid_field", field, msg)


class Decoder:
    """Turns raw message bytes into events. Never raises on bad input.

    Two paths, one verdict: the msgspec structs of :mod:`schemas.wire` decode and check a
    message in about a third of the time; whatever they refuse (a broken message, or one
    with unknown fields) is validated by the pydantic models, which name the broken rule
    or accept it and report the unknown fields.

    >>> d = Decoder(max_bytes=1024, max_future_skew=3600, clock=lambda: 1.9e9)
    >>> d.decode(b'{"event_id":"e1","user_id":"u1","event_type":"purchase",'
    ...          b'"ts":"2026-01-05T12:00:00Z","revenue":42.0}').event.revenue
    42.0
    >>> d.decode(b'{"event_id":"e1"}').rejection.reason
    'missing_field'
    """

    def __init__(self, max_bytes: int, max_future_skew: float, clock: Clock) -> None:
        self.max_bytes = max_bytes
        self.max_future_skew = max_future_skew
        self.clock = clock

    @classmethod
    def from_settings(cls, settings: Any, clock: Clock = time.time) -> Decoder:
        """The decoder every driver uses: limits from Settings, wall clock for the skew."""
        return cls(settings.max_message_bytes, settings.max_future_skew, clock)

    def decode(self, raw: bytes) -> Decoded:
        if len(raw) > self.max_bytes:
            return Decoded(
                None,
                Rejection(
                    "too_large", None, f"message is {len(raw)} bytes, limit {self.max_bytes}"
                ),
            )
        event: EventView
        extra: dict[str, Any] | None = None
        try:
            event = WIRE_DECODER.decode(raw)
            ts = event.ts.timestamp()
        except RecursionError:  # msgspec recurses per nesting level of an object
            return Decoded(None, TOO_DEEP)
        except (msgspec.ValidationError, msgspec.DecodeError, ValueError):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return Decoded(
                    None, Rejection("invalid_utf8", None, f"not UTF-8 at byte {exc.start}")
                )
            try:
                model = EVENT_ADAPTER.validate_json(text)
            except ValidationError as exc:
                return Decoded(None, _rejection_from(exc))
            event, extra = model, model.model_extra
            ts = model.ts.timestamp()
        if ts > self.clock() + self.max_future_skew:
            return Decoded(
                None,
                Rejection(
                    "future_timestamp",
                    "ts",
                    f"ts is more than {self.max_future_skew:.0f}s ahead of the wall clock",
                ),
            )
        return Decoded(event, None, tuple(extra) if extra else (), ts)


def dead_letter(
    raw: bytes,
    rejection: Rejection,
    source: Source,
    keep_bytes: int,
    received_at: float,
    event: EventView | None = None,
    hints: dict[str, Any] | None = None,
) -> DeadLetter:
    """Build the dead letter for a refused message, keeping a bounded copy of its bytes."""
    kept = raw[:keep_bytes]
    user_id = event.user_id if event is not None else None
    event_id = event.event_id if event is not None else None
    if hints:
        user_id = user_id or _str_or_none(hints.get("user_id"))
        event_id = event_id or _str_or_none(hints.get("event_id"))
    return DeadLetter(
        reason=rejection.reason,
        field=rejection.field,
        detail=rejection.detail,
        source_topic=source.topic,
        partition=source.partition,
        offset=source.offset,
        key=source.key.decode("utf-8", "replace")[:256] if source.key is not None else None,
        payload=kept.decode("utf-8", "replace"),
        payload_size=len(raw),
        truncated=len(raw) > keep_bytes,
        received_at=datetime.fromtimestamp(received_at, tz=UTC),
        event_id=event_id,
        user_id=user_id,
    )


def _str_or_none(value: object) -> str | None:
    return value[:128] if isinstance(value, str) else None
