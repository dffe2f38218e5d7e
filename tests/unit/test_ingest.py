"""The decoder: every kind of bad input becomes a rejection with the contract's reason."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app.ingest import Decoder, Source, dead_letter
from tests.conftest import make_event

NOW = 1.9e9  # 2030-03-17: every test timestamp is in the past
DEC = Decoder(max_bytes=2048, max_future_skew=3600, clock=lambda: NOW)


def enc(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_minimal_event_from_the_contract_is_valid() -> None:
    raw = (
        b'{"event_id":"e1","user_id":"u1","event_type":"purchase",'
        b'"ts":"2026-01-05T12:00:00Z","revenue":42.0}'
    )
    d = DEC.decode(raw)
    assert d.rejection is None and d.event is not None
    assert d.event.revenue == 42.0
    assert d.ts == 1767614400.0


def test_offsets_are_normalised_to_the_same_instant() -> None:
    a = DEC.decode(enc(make_event(ts="2026-01-05T14:00:00+02:00")))
    b = DEC.decode(enc(make_event(ts="2026-01-05T12:00:00Z")))
    assert a.ts == b.ts


@pytest.mark.parametrize(
    ("raw", "reason", "field"),
    [
        (b"x" * 3000, "too_large", None),
        (b'{"user_id":"\xff"}', "invalid_utf8", None),
        (b'{"event_id": ', "invalid_json", None),
        (b"[1, 2]", "not_an_object", None),
        (b'"just a string"', "not_an_object", None),
        (
            enc({"event_id": "e", "user_id": "u", "ts": "2026-01-05T12:00:00Z"}),
            "missing_field",
            "event_type",
        ),
        (enc(make_event(event_type="teleport")), "unknown_event_type", "event_type"),
        (enc(make_event(v=2)), "unsupported_version", "v"),
        (enc(make_event(ts="2026-01-05T12:00:00")), "naive_timestamp", "ts"),
        (enc(make_event(ts=1767614400)), "invalid_field", "ts"),
        (enc(make_event(ts="2031-01-01T00:00:00Z")), "future_timestamp", "ts"),
        (enc(make_event(event_type="purchase")), "missing_field", "revenue"),
        (enc(make_event(event_type="return")), "missing_field", "revenue"),
        (enc(make_event(event_type="review")), "missing_field", "rating"),
        (enc(make_event(event_type="review", rating=6)), "invalid_field", "rating"),
        (enc(make_event(user_id="")), "invalid_field", "user_id"),
        (enc(make_event(user_id="a\u0007b")), "invalid_field", "user_id"),
        (enc(make_event(user_id="u" * 129)), "invalid_field", "user_id"),
        (enc(make_event(event_id="e" * 129)), "invalid_field", "event_id"),
        (enc(make_event(price=-1)), "invalid_field", "price"),
        (enc(make_event(quantity=0)), "invalid_field", "quantity"),
        (enc(make_event(quantity="2")), "invalid_field", "quantity"),
        (enc(make_event(category="c" * 65)), "invalid_field", "category"),
        (enc(make_event(event_type="search", query="q" * 257)), "invalid_field", "query"),
        (
            enc(make_event(properties={f"k{i}": i for i in range(33)})),
            "invalid_field",
            "properties",
        ),
        (enc(make_event(properties={"k": {"nested": 1}})), "invalid_field", "properties.k"),
        (
            b'{"event_id":"e","user_id":"u","event_type":"purchase",'
            b'"ts":"2026-01-05T12:00:00Z","revenue":NaN}',
            "invalid_field",
            "revenue",
        ),
        (
            b'{"event_id":"e","user_id":"u","event_type":"purchase",'
            b'"ts":"2026-01-05T12:00:00Z","revenue":Infinity}',
            "invalid_field",
            "revenue",
        ),
    ],
)
def test_bad_input_is_rejected_with_reason(raw: bytes, reason: str, field: str | None) -> None:
    d = DEC.decode(raw)
    assert d.event is None and d.rejection is not None
    assert d.rejection.reason == reason
    if field is not None:
        assert d.rejection.field == field
    assert d.rejection.detail


def test_unknown_fields_are_ignored_and_reported() -> None:
    d = DEC.decode(enc(make_event(colour="red", utm="x")))
    assert d.event is not None
    assert set(d.unknown_fields) == {"colour", "utm"}


def test_properties_accept_the_documented_value_types() -> None:
    d = DEC.decode(enc(make_event(properties={"a": "x", "b": 1.5, "c": True, "d": 3})))
    assert d.event is not None and d.event.properties == {"a": "x", "b": 1.5, "c": True, "d": 3}


def test_dead_letter_keeps_source_and_truncates_payload() -> None:
    raw = b'{"bad": "' + b"x" * 100 + b'"}'
    d = DEC.decode(raw)
    assert d.rejection is not None
    letter = dead_letter(
        raw,
        d.rejection,
        Source("clickstream", 3, 42, b"k"),
        16,
        NOW,
        hints={"user_id": "u9", "event_id": "e9"},
    )
    assert (letter.source_topic, letter.partition, letter.offset) == ("clickstream", 3, 42)
    assert letter.truncated and len(letter.payload) == 16 and letter.payload_size == len(raw)
    assert letter.user_id == "u9" and letter.event_id == "e9"
    assert letter.received_at.tzinfo is not None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    d = DEC.decode(raw)
    assert (d.event is None) != (d.rejection is None)


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=200),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
_FIELDS = [
    "v",
    "event_id",
    "user_id",
    "event_type",
    "ts",
    "session_id",
    "product_id",
    "category",
    "price",
    "quantity",
    "revenue",
    "rating",
    "query",
    "properties",
]


@settings(max_examples=400, deadline=None)
@given(
    base=st.sampled_from(
        [
            make_event(event_type="purchase", revenue=10.0),
            make_event(event_type="review", rating=4),
            make_event(event_type="search", query="shoes"),
            make_event(properties={"a": 1}),
        ]
    ),
    changes=st.dictionaries(st.sampled_from(_FIELDS), _VALUES, max_size=4),
    drop=st.lists(st.sampled_from(_FIELDS), max_size=3),
)
def test_mutated_valid_events_give_event_or_dead_letter(
    base: dict[str, object], changes: dict[str, object], drop: list[str]
) -> None:
    obj = {**base, **changes}
    for name in drop:
        obj.pop(name, None)
    raw = json.dumps(obj, allow_nan=True).encode()
    d = DEC.decode(raw)
    assert (d.event is None) != (d.rejection is None)
    if d.event is not None:
        # Whatever got through satisfies the contract's numeric rules.
        for name in ("price", "revenue"):
            value = getattr(d.event, name, None)
            assert value is None or (math.isfinite(value) and value >= 0)
        assert d.event.ts.tzinfo is not None


DEEP = 10_000
HOSTILE_NESTING = {
    "array": b"[" * DEEP + b"]" * DEEP,
    "object": b'{"a":' * DEEP + b"1" + b"}" * DEEP,
    "properties": json.dumps(make_event()).encode()[:-1]
    + b',"properties":'
    + b'{"a":' * DEEP
    + b"1"
    + b"}" * DEEP
    + b"}",
}


@pytest.mark.parametrize("shape", sorted(HOSTILE_NESTING))
def test_json_nested_ten_thousand_deep_is_a_too_deep_dead_letter(shape: str) -> None:
    decoded = Decoder(1 << 20, 3600.0, lambda: 1.9e9).decode(HOSTILE_NESTING[shape])
    assert decoded.event is None and decoded.rejection is not None
    assert decoded.rejection.reason == "too_deep"
