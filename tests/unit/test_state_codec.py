"""The changelog form of a user's state: exact round trips, old states still readable."""

from __future__ import annotations

import math
import random
import struct
from array import array

import pytest

from stream_app.app import UserStateCodec
from stream_app.core.features import Pending, _pack, sparse_pack, sparse_unpack


def bits(values: array[float] | list[float]) -> list[bytes]:
    return [struct.pack("<d", v) for v in values]


@pytest.mark.parametrize("seed", range(20))
def test_sparse_pack_round_trips_every_bit(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(0, 70)
    pool = [0.0, 0.0, 0.0, -0.0, 1.5, -2.25, 1e-300, 1e300, math.inf, -math.inf, math.nan]
    values = [rng.choice(pool) if rng.random() < 0.5 else rng.uniform(-5, 5) for _ in range(n)]
    packed = sparse_pack(values)
    assert bits(sparse_unpack(packed)) == bits(values)
    zeros = sum(1 for v in values if v == 0.0 and math.copysign(1.0, v) > 0)
    assert len(packed) == 2 + (n + 7) // 8 + 8 * (n - zeros)


@pytest.mark.parametrize(
    "bad", [b"", b"\x05", b"\x03\x00\x07" + b"\x00" * 8, b"\x01\x00\x00" + b"\x00" * 8]
)
def test_a_corrupt_packed_vector_is_rejected(bad: bytes) -> None:
    with pytest.raises(ValueError):
        sparse_unpack(bad)


def test_a_snapshot_written_densely_before_0_4_reads_back_the_same() -> None:
    vec = [0.0, 1.25, 0.0, -3.5, 0.0]
    old = [1.7e9, 0.25, _pack(vec), "none", 3, None, None, True]
    snap = Pending.from_list(old)
    assert list(snap.features) == vec
    again = Pending.from_list(snap.to_list())
    assert list(again.features) == vec and again.to_list() == snap.to_list()
    assert snap.to_list()[2].startswith("~")


def test_state_codec_round_trips_a_live_state() -> None:
    from stream_app.core.features import FeatureSpace

    space = FeatureSpace((86400.0, 7 * 86400.0), 1800.0, 64)
    state = space.new_state("u1")
    state.pending.append(Pending(1.7e9, 0.3, [0.0] * 10 + [2.0], "treatment", 2))
    codec = UserStateCodec()
    raw = codec._dumps(state)
    back = codec._loads(raw)
    assert codec._dumps(back) == raw
    assert list(back.pending[0].features) == [0.0] * 10 + [2.0]
