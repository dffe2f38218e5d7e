"""The hot-path decoder (schemas.wire) never accepts what the pydantic contract refuses, and
reads what both accept as the same values. This is what makes it safe to decode with msgspec
first: the fast path can only be slower (fall back), never disagree."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.events import EVENT_ADAPTER, EVENT_TYPES
from schemas.wire import WIRE_DECODER, WireEvent
from stream_app.ingest import Decoder

FIELDS = ("v", "event_id", "user_id", "event_type", "ts", "session_id", "product_id",
          "category", "price", "quantity", "properties", "revenue", "rating", "query")  # fmt: skip


def _wire(raw: bytes) -> WireEvent | None:
    """The fast path exactly as the Decoder takes it: decode, then read the time."""
    try:
        event = WIRE_DECODER.decode(raw)
        event.ts.timestamp()
    except (msgspec.ValidationError, msgspec.DecodeError, ValueError):
        return None
    return event


def _reference(raw: bytes) -> Any:
    try:
        return EVENT_ADAPTER.validate_json(raw)
    except ValidationError:
        return None


def assert_same_verdict(raw: bytes) -> bool:
    """The property itself; returns whether the fast path accepted ``raw``."""
    fast, ref = _wire(raw), _reference(raw)
    if fast is None:
        return False
    assert ref is not None, f"fast path accepted what the contract refuses: {raw!r}"
    for name in FIELDS:
        a, b = getattr(fast, name, None), getattr(ref, name, None)
        assert a == b and type(a) is type(b), f"{name}: {a!r} != {b!r} in {raw!r}"
        if isinstance(a, datetime):
            assert a.utcoffset() == b.utcoffset() and a.timestamp() == b.timestamp()
    assert not ref.model_extra, "unknown fields must take the reference path"
    return True


# --- generated messages ---------------------------------------------------------------
_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=0, max_size=140
)
_number = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, 1, 5, 6, 10000, 10001, 0.0, -0.0, 1.0, 2.5, -1, 1e308, True, False]),
)
EDGE_TS = [
    "2026-01-05T12:00:00Z", "2026-01-05T12:00:00+02:00", "2026-01-05T12:00:00-00:00",
    "2026-01-05T12:00:00.123456Z", "2026-01-05T12:00:00.1234567Z", "2026-01-05T12:00:00.5Z",
        "2026-01-05t12:00:00z", "2026-01-05 12:00:00Z", "2026-01-05T12:00Z", "2026-01-05",
    "2026-01-05T12:00:00", "2026-01-05T12:00:00+0200", "2026-01-05T12:00:00+02",
        "2026-01-05T24:00:00Z", "2026-01-05T23:59:60Z", "2026-02-30T12:00:00Z",
    "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "2026-01-05T12:00:00+23:59",
        "2026-01-05T12:00:00+24:00", "2026-01-05T12:00:00.Z", "20260105T120000Z",
    "2026-01-05T12:00:00.000000001Z", "2026-01-05T12:00:00,5Z", "2026-W02-1T12:00:00Z",
        "2026-01-05T12:00:00.1234567Z", "２０２６-01-05T12:00:00Z", "2026-01-05T12:00:00+99:00",
    "2026-01-05T12:00:00.123+05:30", "1970-01-01T00:00:00Z", "2026-01-05T12:00:00 Z",
]  # fmt: skip
EDGE_SCALARS = ["", "u1\n", "u\x00", "u\x7f", "a" * 64, "a" * 65, "a" * 128, "a" * 129,
                "é" * 64, "😀" * 65, "a" * 256, "a" * 257, " ", "\t", None, True, False,
                0, 1, 5, 6, 10000, 10001, 0.0, -0.0, 1.0, 2.5, -1, 1e308, 2**64, [], {}]  # fmt: skip  # noqa: E501
_edgy_text = st.one_of(_text, st.sampled_from([v for v in EDGE_SCALARS if isinstance(v, str)]))
_scalar = st.one_of(st.none(), st.booleans(), _number, _edgy_text)
_ts = st.one_of(
    st.sampled_from(EDGE_TS),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.integers(min_value=0, max_value=2**33),
    _scalar,
)
_props = st.one_of(
    st.none(),
    st.dictionaries(_edgy_text, _scalar, max_size=34),
    st.dictionaries(st.text(max_size=5), st.lists(st.integers(), max_size=2), max_size=2),
    _scalar,
)
_values: dict[str, st.SearchStrategy[Any]] = {
    "v": st.one_of(st.sampled_from([1, 1.0, 2, 0, "1", True]), _scalar),
    "event_id": _edgy_text,
    "user_id": _edgy_text,
    "event_type": st.one_of(st.sampled_from(EVENT_TYPES), _edgy_text),
    "ts": _ts,
    "session_id": _scalar,
    "product_id": _scalar,
    "category": _scalar,
    "price": _scalar,
    "quantity": _scalar,
    "properties": _props,
    "revenue": _scalar,
    "rating": _scalar,
    "query": _scalar,
    "colour": _scalar,  # not in the contract: accepted and counted by the reference path
}


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    """Mostly-valid events with some fields dropped, retyped or pushed past a limit."""
    event: dict[str, Any] = {
        "event_id": "e1",
        "user_id": "u1",
        "event_type": draw(st.sampled_from(EVENT_TYPES)),
        "ts": "2026-01-05T12:00:00Z",
    }
    if event["event_type"] in ("purchase", "return"):
        event["revenue"] = 10.0
    if event["event_type"] == "review":
        event["rating"] = 4
    for name in draw(st.lists(st.sampled_from(sorted(_values)), max_size=4)):
        if draw(st.booleans()) and name in event:
            del event[name]
        else:
            event[name] = draw(_values[name])
    return json.dumps(event, ensure_ascii=draw(st.booleans())).encode()


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages())
@example(
    b'{"event_id":"e1","user_id":"u1\\n","event_type":"page_view","ts":"2026-01-05T12:00:00Z"}'
)
@example(
    b'{"event_id":"e1","user_id":"u1","event_type":"purchase","ts":"2026-01-05T12:00:00Z","revenue":1e999}'
)
@example(
    b'{"event_id":"e1","user_id":"u1","event_type":"purchase","ts":"2026-01-05T12:00:00Z","revenue":1,"revenue":-1}'
)
@example(
    b'{"event_id":"e1","user_id":"u1","event_type":"page_view","event_type":"purchase","ts":"2026-01-05T12:00:00Z"}'
)
@example(
    b'{"event_id":"\\ud800","user_id":"u1","event_type":"page_view","ts":"2026-01-05T12:00:00Z"}'
)
@example(b'{"event_id":"e1","user_id":"u1","event_type":"page_view","ts":"2026-01-05T12:00:00Z"} x')
@example(
    b'{"event_id":"e1","user_id":"u1","event_type":"page_view","ts":"2026-01-05T12:00:00Z","price":NaN}'
)
@example(
    b'{"event_id":"e1","user_id":"u1","event_type":"page_view","ts":"2026-01-05T12:00:00Z","quantity":2.0}'
)
def test_fast_path_never_disagrees_with_the_contract(raw: bytes) -> None:  # noqa: E501
    assert_same_verdict(raw)


def _base(event_type: str = "page_view") -> dict[str, Any]:
    event: dict[str, Any] = {"event_id": "e1", "user_id": "u1", "event_type": event_type,
                             "ts": "2026-01-05T12:00:00Z"}  # fmt: skip
    if event_type in ("purchase", "return"):
        event["revenue"] = 10.0
    if event_type == "review":
        event["rating"] = 4
    return event


@pytest.mark.parametrize("ts", EDGE_TS)
def test_timestamp_spellings(ts: str) -> None:
    assert_same_verdict(json.dumps({**_base(), "ts": ts}).encode())


@pytest.mark.parametrize("event_type", ["page_view", "purchase", "review", "search"])
@pytest.mark.parametrize("name", [n for n in FIELDS if n != "event_type"])
def test_edge_values_of_every_field(event_type: str, name: str) -> None:
    """Every field of every member set to each edge value, one at a time (and removed)."""
    for value in EDGE_SCALARS:
        assert_same_verdict(json.dumps({**_base(event_type), name: value}).encode())
    without = _base(event_type)
    without.pop(name, None)
    assert_same_verdict(json.dumps(without).encode())
    props = {f"k{i}": value for i, value in enumerate(EDGE_SCALARS)}
    assert_same_verdict(json.dumps({**_base(event_type), "properties": props}).encode())
    for value in EDGE_SCALARS:
        assert_same_verdict(json.dumps({**_base(event_type), "properties": {"k": value}}).encode())
    assert_same_verdict(
        json.dumps({**_base(event_type), "properties": {f"k{i}": 1 for i in range(33)}}).encode()
    )


@pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")
def test_generator_reaches_both_verdicts() -> None:
    """Guard against a strategy that only ever produces one kind of message."""
    accepted = refused = 0
    for raw in (messages().example() for _ in range(300)):
        if assert_same_verdict(raw):
            accepted += 1
        else:
            refused += 1
    assert accepted > 30 and refused > 30


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_event_type_takes_the_fast_path(event_type: str) -> None:
    event: dict[str, Any] = {"event_id": "e1", "user_id": "u1", "event_type": event_type,
                             "ts": "2026-01-05T12:00:00+02:00", "category": "garden",
                             "properties": {"a": 1, "b": "x", "c": True, "d": 1.5}}  # fmt: skip
    if event_type in ("purchase", "return"):
        event["revenue"] = 12.5
    if event_type == "review":
        event["rating"] = 5
    raw = json.dumps(event).encode()
    assert assert_same_verdict(raw)
    assert _wire(raw).event_type == event_type  # type: ignore[union-attr]


def test_unknown_fields_take_the_reference_path_and_are_counted() -> None:
    raw = b'{"event_id":"e1","user_id":"u1","event_type":"page_view","ts":"2026-01-05T12:00:00Z","colour":"red"}'  # noqa: E501
    assert _wire(raw) is None
    d = Decoder(4096, 3600, lambda: 1.9e9).decode(raw)
    assert d.rejection is None and d.unknown_fields == ("colour",)
