"""Early warning (issue #19): on a small case worked out by hand, the figures say how many
churners the policy reached, how early, and how precisely."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stream_app.offline.early_warning import (
    DAY,
    Flag,
    Truth,
    early_warning,
    early_warning_for,
    parse_truth,
)

START, END = 0.0, 120 * DAY


def churner(uid: str, onset_day: float, last_day: float) -> Truth:
    return Truth(uid, True, onset_day * DAY, last_day * DAY)


def stayer(uid: str) -> Truth:
    return Truth(uid, False, None, 119 * DAY)


# Five churners (last events on days 50-80, all observable) and five users who stay.
TRUTH = {
    t.user_id: t
    for t in (
        churner("a", 40, 60),  # flagged on day 55: 5 days before leaving
        churner("b", 40, 60),  # flagged on day 65: 5 days after
        churner("c", 40, 60),  # flagged on day 70: 10 days after
        churner("d", 40, 60),  # flagged on day 30 (before the onset: not a warning) only
        churner("e", 50, 80),  # never flagged
        *(stayer(f"s{i}") for i in range(5)),
    )
}
FLAGS = [
    Flag("a", 55 * DAY, "treatment"),
    Flag("a", 62 * DAY, "treatment"),  # a second flag does not change a's warning
    Flag("b", 65 * DAY, "holdout"),  # the holdout is flagged too, only not sent
    Flag("c", 70 * DAY, "treatment"),
    Flag("d", 30 * DAY, "treatment"),
    Flag("s0", 20 * DAY, "treatment"),
    Flag("s1", 20 * DAY, "suppressed"),  # a suppressed decision is no flag
]


def test_shares_of_churners_reached_before_and_after_their_last_event() -> None:
    got = early_warning(FLAGS, TRUTH, START, END)
    assert got["churners"] == 5
    assert got["flagged_before_last_event"] == 0.2  # a
    assert got["flagged_within_7d"] == 0.4  # a, b
    assert got["flagged_within_14d"] == 0.6  # a, b, c
    assert got["flagged_ever"] == 0.6  # d's flag came before the churn began


def test_lead_time_is_last_event_minus_the_first_warning() -> None:
    got = early_warning(FLAGS, TRUTH, START, END)
    # Leads of a, b, c: +5, -5, -10 days (positive: flagged while still active); d and e
    # have no warning. Quantiles interpolate between the three.
    assert got["lead_time_days"] == {
        "p10": -9.0,
        "p25": -7.5,
        "p50": -5.0,
        "p75": 0.0,
        "p90": 3.0,
    }


def test_precision_against_the_base_rate() -> None:
    got = early_warning(FLAGS, TRUTH, START, END)
    # Flagged users a, b, c, d, s0 (s1 was only suppressed): 4 of 5 churn; 5 of 10 do.
    assert got["flagged_users"] == 5
    assert got["precision"] == 0.8
    assert got["base_rate"] == 0.5
    assert got["precision_over_base_rate"] == 1.6


def test_flags_and_interventions_per_user_month() -> None:
    got = early_warning(FLAGS, TRUTH, START, END)
    # 6 flags (5 treatment, 1 holdout) over 10 users and 4 months.
    assert got["flags_per_user_month"] == 0.15
    assert got["interventions_per_user_month"] == 0.125


def test_a_churner_too_close_to_the_end_is_not_judged() -> None:
    late = {**TRUTH, "z": churner("z", 100, 110)}  # last event 10 days before the end
    assert early_warning(FLAGS, late, START, END)["churners"] == 5


def test_truth_file_next_to_the_events_is_read_and_bad_rows_counted(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("")
    assert early_warning_for(events, FLAGS, START, END) is None  # a real log has no truth
    rows = [
        {"user_id": "a", "churner": True, "churn_onset": "1970-02-10T00:00:00Z",
         "last_event": "1970-03-02T00:00:00Z"},
        {"user_id": "s0", "churner": False, "churn_onset": None,
         "last_event": "1970-04-30T00:00:00Z"},
    ]  # fmt: skip
    text = "".join(json.dumps(r) + "\n" for r in rows) + '{"user_id": 3}\nnot json\n'
    (tmp_path / "events.jsonl.truth.jsonl").write_text(text)
    got = early_warning_for(events, FLAGS, START, END)
    assert got is not None
    assert got["truth_invalid_rows"] == 2
    assert got["churners"] == 1 and got["flagged_before_last_event"] == 1.0
    truth, bad = parse_truth(text.splitlines())
    assert set(truth) == {"a", "s0"} and bad == 2
    assert truth["a"].last_event == pytest.approx(60 * DAY)


def test_the_windows_include_their_last_day() -> None:
    """A flag exactly 14 days after the last event (the default 14-day silence deadline) is
    within 14 days; one a second later is not."""
    truth = {"a": churner("a", 40, 60), "b": churner("b", 40, 60)}
    flags = [Flag("a", 74 * DAY, "treatment"), Flag("b", 74 * DAY + 1, "treatment")]
    got = early_warning(flags, truth, START, END)
    assert got["flagged_within_14d"] == 0.5
    assert got["flagged_within_7d"] == 0.0
