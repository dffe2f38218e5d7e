"""Engine.catch_up fires a user's deadlines early without changing what the engine makes."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

from stream_app.core.config import EngineConfig
from stream_app.core.engine import Engine
from stream_app.core.features import UserState
from stream_app.ingest import Decoder
from stream_app.offline.generate import Generator
from stream_app.settings import load_settings


def stream(users: int = 80, days: int = 40) -> list[tuple[float, Any]]:
    buf = io.StringIO()
    Generator(users, days, 13, datetime(2026, 1, 1, tzinfo=UTC), duplicates=0.02).run(buf)
    decoder = Decoder.from_settings(load_settings())
    out = []
    for line in buf.getvalue().splitlines():
        d = decoder.decode(line.encode())
        out.append((d.ts, d.event))
    return out


def run(events: list[tuple[float, Any]], catch_up: bool) -> tuple[list[Any], list[Any], int]:
    engine = Engine(EngineConfig(rescore_after=(86400.0, 3 * 86400.0, 7 * 86400.0)))
    store: dict[str, UserState] = {}
    clock = engine.new_clock()
    scores: list[Any] = []
    labels: list[Any] = []
    early_fires = 0
    for ts, event in events:
        if catch_up:
            early = engine.catch_up(store, clock, event.user_id, ts)
            if early is not None:
                early_fires += 1
                scores += early.scores
                labels += early.labels
        result = engine.process(store, clock, event, ts)
        scores += result.scores
        labels += result.labels
        due = engine.advance(store, clock)
        if due is not None:
            scores += due.scores
            labels += due.labels
    key = [(s.user_id, s.ts, s.p, s.trigger) for s in scores]
    return key, [(lab.example_id, lab.label, lab.resolved_at) for lab in labels], early_fires


def test_catching_up_before_every_event_changes_no_score_and_no_label() -> None:
    events = stream()
    plain_scores, plain_labels, _ = run(events, catch_up=False)
    scores, labels, early = run(events, catch_up=True)
    assert early >= 10  # it did fire deadlines ahead of process()
    assert scores == plain_scores and labels == plain_labels
    assert any(trigger == "silence" for *_, trigger in scores)
