"""The compact form of a user at rest (core/compact.py): exact, and invisible to results."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from stream_app.core import compact
from stream_app.core.features import FeatureSpace, Pending, UserState
from stream_app.offline.evaluate import EvaluateOptions, Replay
from stream_app.offline.generate import Generator
from stream_app.settings import load_settings


class PackedStore(MutableMapping[str, UserState]):
    """A store that packs every state the moment it is written and unpacks it on every
    read: the worst case of the memory:// cache, which packs users at rest."""

    def __init__(self, space: FeatureSpace) -> None:
        self.data: dict[str, bytes] = {}
        self.space = space

    def __getitem__(self, uid: str) -> UserState:
        return compact.unpack(uid, self.data[uid], self.space)

    def __setitem__(self, uid: str, state: UserState) -> None:
        self.data[uid] = compact.pack(state, self.space)

    def __delitem__(self, uid: str) -> None:
        del self.data[uid]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("compact") / "events.jsonl"
    with path.open("w") as fh:
        Generator(200, 120, 17, datetime(2026, 1, 5, tzinfo=UTC), duplicates=0.02).run(fh)
    return path


def replay(path: Path, store: MutableMapping[str, UserState] | None) -> tuple[Replay, list[Any]]:
    run = Replay(path, load_settings(), EvaluateOptions(), ordered=False)
    if store is not None:
        run.store = store  # type: ignore[assignment]
    labels = [(lab.example_id, lab.label, lab.p, lab.vector) for lab in run]
    return run, labels


def as_json(state: UserState) -> str:
    return json.dumps(state.to_dict(), sort_keys=True)


def test_every_state_of_a_replay_round_trips_exactly(events: Path) -> None:
    run, _ = replay(events, None)
    space = run.engine.space
    states = list(run.store.values())
    assert len(states) > 100
    assert any(s.pending for s in states) and any(s.extra for s in states)
    assert any(p.action is not None for s in states for p in s.pending)
    remade = 0
    for state in states:
        for with_space in (None, space):
            raw = compact.pack(state, with_space)
            assert isinstance(raw, bytes)
            again = compact.unpack(state.user_id, raw, with_space)
            assert as_json(again) == as_json(state)
            assert again.sums.tobytes() == state.sums.tobytes()
            assert [p.packed for p in again.pending] == [p.packed for p in state.pending]
            # smaller than the changelog's JSON of the same state
            assert len(raw) < len(json.dumps(state.to_dict()))
        remade += len(compact.pack(state)) - len(compact.pack(state, space))
    # snapshots taken since the user's last event keep no vector when packed with space
    assert remade > 0


def test_a_dropped_vector_cannot_be_unpacked_without_the_space(events: Path) -> None:
    run, _ = replay(events, None)
    space = run.engine.space
    state = next(
        s for s in run.store.values() if len(compact.pack(s, space)) < len(compact.pack(s))
    )
    with pytest.raises(ValueError, match="made again"):
        compact.unpack(state.user_id, compact.pack(state, space))


def test_a_replay_through_packed_states_gives_the_same_results(events: Path) -> None:
    """Packing after every event and unpacking before the next changes nothing: the
    same labels (ids, values, scores, feature vectors) and the same final states."""
    plain, labels = replay(events, None)
    packed_store = PackedStore(plain.engine.space)
    packed, packed_labels = replay(events, packed_store)
    assert packed_labels == labels and len(labels) > 100
    assert packed.decisions.outcomes == plain.decisions.outcomes
    assert set(packed_store) == set(plain.store)
    for uid, state in plain.store.items():
        assert as_json(packed_store[uid]) == as_json(state)


def test_edge_values_survive() -> None:
    s = UserState("ü-user", 3)
    s.extra["erased"] = [1.5, 2.5, 17]
    s.offset = 2**40
    s.due = math.inf
    s.categories = {"büro": 3.0, "x" * 300: 1.0}
    s.pending = [
        Pending(1.0, 0.25, [0.0, -0.0, 1e30, 5e-324], "holdout", 2**33, 1, 9.0, False, "s", "a"),
        Pending(2.0, 0.5, [1.0], "none", 0),
    ]
    again = compact.unpack("ü-user", compact.pack(s))
    assert as_json(again) == as_json(s)
    assert math.isnan(again.first_ts) and again.due == math.inf
    assert again.pending[0].packed == s.pending[0].packed
    assert [p.label for p in again.pending] == [1, None]


def test_a_truncated_form_is_refused() -> None:
    s = UserState("u", 3)
    raw = compact.pack(s)
    with pytest.raises(ValueError):
        compact.unpack("u", raw + b"x")
