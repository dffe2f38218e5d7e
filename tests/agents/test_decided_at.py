"""Live decisions and interventions carry the worker's wall clock as decided_at (issue #21
item 13). The message builders take it as a keyword (tests/unit/test_policy.py); the score
service passes its injected wall clock."""

from __future__ import annotations

import json
from pathlib import Path

import faust

from stream_app.app import create_app, wiring
from stream_app.settings import load_settings
from tests.unit.policy_harness import Harness


def test_the_score_agent_stamps_decisions_and_interventions_with_its_wall_clock(
    tmp_path: Path,
) -> None:
    app: faust.App = create_app(load_settings(data_dir=str(tmp_path)))
    handler = wiring(app).score
    handler.wall_clock = lambda: 1_796_083_200.0  # 2026-12-01T00:00:00Z
    h = Harness()
    h.score("u", 0, 0.1)
    out = h.score("u", 1, 0.5, has_purchased=1.0)
    assert out is not None and out.outcome == "treatment"
    sends = handler._decided(out)
    messages = {s.topic: json.loads(s.value) for s in sends}
    assert set(messages) == {"decisions", "interventions"}
    for msg in messages.values():
        assert msg["decided_at"] == "2026-12-01T00:00:00Z", msg
