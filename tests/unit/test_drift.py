"""The drift detector is River's ADWIN, step for step, and its state survives a restart:
a detector rebuilt from its saved state flags drifts at the same values as one that never
stopped."""

from __future__ import annotations

import json
import math
import random

import pytest
from river import drift

from schemas.outputs import DriftState
from stream_app.core.drift import Adwin


def streams() -> dict[str, list[float]]:
    rng = random.Random(1)
    doc = random.Random(12345)  # River's own doctest stream: drift flagged at index 1023
    return {
        "river_doctest": [
            float(x) for x in doc.choices([0, 1], k=1000) + doc.choices(range(4, 8), k=1000)
        ],
        "gauss_shift": [rng.gauss(0.3, 0.1) for _ in range(3000)]
        + [rng.gauss(0.6, 0.1) for _ in range(3000)],
        "log_losses": [
            -math.log(max(1e-9, rng.random())) * (1.0 if i < 20_000 else 1.5) for i in range(40_000)
        ],
        "alternating_rates": [
            float(rng.random() < (0.2 if (i // 5000) % 2 else 0.4)) for i in range(30_000)
        ],
    }


def hits(det: Adwin, xs: list[float], offset: int = 0) -> list[int]:
    return [offset + i for i, x in enumerate(xs) if det.update(x)]


@pytest.mark.parametrize("name", sorted(streams()))
def test_flags_the_same_drifts_as_rivers_adwin(name: str) -> None:
    xs = streams()[name]
    river = drift.ADWIN()
    expected = []
    for i, x in enumerate(xs):
        river.update(x)
        if river.drift_detected:
            expected.append(i)
    ours = Adwin()
    assert hits(ours, xs) == expected
    assert expected  # every stream drifts at least once
    assert (ours.width, ours.total, ours.variance) == (river.width, river.total, river.variance)


@pytest.mark.parametrize("name", sorted(streams()))
def test_a_detector_rebuilt_from_its_state_continues_exactly(name: str) -> None:
    xs = streams()[name]
    straight = hits(Adwin(), xs)
    for cut in (len(xs) // 7, len(xs) // 2, straight[0], straight[0] + 1):
        first = Adwin()
        before = hits(first, xs[:cut])
        saved = DriftState.model_validate_json(
            json.dumps(DriftState.model_validate(first.state()).model_dump(mode="json"))
        )
        resumed = Adwin.from_state(saved.model_dump())
        assert before + hits(resumed, xs[cut:], cut) == straight, cut


def test_a_blank_detector_after_a_restart_misses_or_delays_the_drift() -> None:
    xs = streams()["gauss_shift"]
    straight = hits(Adwin(), xs)
    cut = 3020  # the shift began at 3000; a detector that never stopped flags it at 3039
    assert straight == [3039]
    blank = Adwin()  # what the learner did before its checkpoint held the detector
    assert hits(blank, xs[cut:], cut) == []  # it never saw the old mean: no drift at all


def test_an_inconsistent_state_is_refused() -> None:
    det = Adwin()
    for x in range(100):
        det.update(float(x % 3))
    state = det.state() | {"width": det.width + 1}
    with pytest.raises(ValueError, match="width"):
        Adwin.from_state(state)
