"""The CDNOW conversion keeps every purchase, in the event contract, one time per event."""

from __future__ import annotations

import json

from bench.real_data import parse, to_events
from schemas.events import EVENT_ADAPTER

SAMPLE = """ 00004 0001 19970101  2   29.33
 00004 0001 19970101  1   11.77
 00021 0002 19970101  3   63.34
 00004 0001 19970118  2    0.00
"""
MASTER = """ customer_id  date number_of_cds  dollar_value
 00001 19970101  1   11.77
"""


def test_both_file_layouts_parse_to_the_master_id() -> None:
    assert list(parse(SAMPLE, sample=True))[0] == ("00004", "19970101", 2, 29.33)
    assert list(parse(MASTER, sample=False)) == [("00001", "19970101", 1, 11.77)]


def test_rows_become_valid_purchases_at_noon_one_second_apart() -> None:
    """Sorted by time: the offline driver streams a sorted file in one pass."""
    events = to_events(parse(SAMPLE, sample=True))
    assert [(e["user_id"], e["ts"]) for e in events] == [
        ("c00004", "1997-01-01T12:00:00Z"),
        ("c00021", "1997-01-01T12:00:00Z"),
        ("c00004", "1997-01-01T12:00:01Z"),
        ("c00004", "1997-01-18T12:00:00Z"),
    ]
    assert len({e["event_id"] for e in events}) == 4
    for e in events:
        parsed = EVENT_ADAPTER.validate_json(json.dumps(e))
        assert parsed.event_type == "purchase"
    assert (events[0]["quantity"], events[0]["revenue"]) == (2, 29.33)
