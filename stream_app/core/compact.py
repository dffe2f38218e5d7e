"""A user state as one compact bytes object, for users at rest in memory.

A :class:`UserState` in Python objects costs about 4.7 KB on the bench's users (open
training snapshots, category counts, the dedup ring, policy state, decayed sums, boxed
floats and object headers); packed here, about 1.6 KB (docs/performance.md). Most
tracked users are silent at any moment, so the ``memory://`` store keeps them as the bytes
made here and turns them back into objects when an event or a timer touches them
(runtime/user_cache.py). This form never leaves the process: the changelog and RocksDB keep
the JSON of :meth:`UserState.to_dict`, so nothing here needs to read untrusted input or stay
compatible across versions.

The round trip is exact: every float keeps its bits (``extra`` goes through msgpack, which
keeps what the changelog's JSON keeps and more), and the user id is the table key (not
stored twice).
"""

from __future__ import annotations

import struct
import sys

import msgspec

from stream_app.core.features import (
    FeatureSpace,
    Pending,
    UserState,
    snapshot_pack,
    sparse_pack,
    sparse_unpack,
)

# anchor, first_ts, last_ts, last_purchase_ts, rating_sum, due, last_scored_ts, last_p,
# last_snapshot_ts; offset; sessions_total, events_total, purchases_total, rating_n,
# recent_pos, rescore_idx, spell_snapshots; lengths: packed sums, ring capacity and used
# bytes, open snapshots, the msgpack tail.
_HEAD = struct.Struct("<9dq7IHIIHI")
# scored_at, p, model_version, flags, length of the packed vector (_AGAIN: none kept, it
# is the state's own vector at scored_at); then resolved_at when the flags say so.
_SNAP = struct.Struct("<2dqBH")
_AGAIN = 0xFFFF
_TRAIN, _LABELLED, _LABEL_1, _RESOLVED = 1, 2, 4, 8
_TIME = struct.Struct("<d")
# The policy's groups as one byte in the tail (any other name is kept as text).
_GROUPS = ("none", "treatment", "holdout")
_GROUP_CODE = {g: i for i, g in enumerate(_GROUPS)}

# The tail, in msgpack (exact for floats, unlike JSON; a few bytes for small ints):
# [categories with whole counts as ints, extra, [[group, segment, action] per snapshot]]
_encode_tail = msgspec.msgpack.Encoder().encode
_decode_tail = msgspec.msgpack.Decoder().decode
_intern = sys.intern


def _again(state: UserState, scored_at: float, space: FeatureSpace) -> bytes:
    return snapshot_pack(state.vector(scored_at, space))


def pack(state: UserState, space: FeatureSpace | None = None) -> bytes:
    """``state`` as compact bytes (see the module's docstring).

    With ``space``: a snapshot taken since the user's last event holds the very vector
    the state gives at its ``scored_at`` (nothing it depends on changed since); such a
    vector is not kept but made again by :func:`unpack`. Checked, not assumed: a vector
    is dropped only when it equals the one made again, bit for bit."""
    ring = state.recent
    # Slots fill from the start: a user with fewer events than slots keeps only those.
    used = min(len(ring), 8 * state.events_total)
    if ring[used:].strip(b"\0"):  # (not as expected: keep every slot)
        used = len(ring)
    sums = sparse_pack(state.sums)  # (a user who never returned or reviewed has zeros)
    pending = state.pending
    cats = {
        k: int(v) if v.is_integer() and abs(v) < 2**53 else v for k, v in state.categories.items()
    }
    tail = _encode_tail(
        [
            cats,
            state.extra,
            [
                [_GROUP_CODE.get(snap.group, snap.group), snap.segment, snap.action]
                for snap in pending
            ],
        ]
    )
    out = bytearray(
        _HEAD.pack(
            state.anchor,
            state.first_ts,
            state.last_ts,
            state.last_purchase_ts,
            state.rating_sum,
            state.due,
            state.last_scored_ts,
            state.last_p,
            state.last_snapshot_ts,
            state.offset,
            state.sessions_total,
            state.events_total,
            state.purchases_total,
            state.rating_n,
            state.recent_pos,
            state.rescore_idx,
            state.spell_snapshots,
            len(sums),
            len(ring),
            used,
            len(pending),
            len(tail),
        )
    )
    out += sums
    out += ring[:used]
    last_ts = state.last_ts
    for snap in pending:
        vector = snap.packed
        again = (
            space is not None
            and snap.scored_at >= last_ts
            and _again(state, snap.scored_at, space) == vector
        )
        label, resolved_at = snap.label, snap.resolved_at
        if label not in (None, 0, 1):
            raise ValueError(f"compact state: label {label!r} is not 0, 1 or None")
        flags = (
            (_TRAIN if snap.train else 0)
            | (0 if label is None else _LABELLED | (_LABEL_1 if label else 0))
            | (0 if resolved_at is None else _RESOLVED)
        )
        out += _SNAP.pack(
            snap.scored_at, snap.p, snap.model_version, flags, _AGAIN if again else len(vector)
        )
        if resolved_at is not None:
            out += _TIME.pack(resolved_at)
        if not again:
            out += vector
    out += tail
    return bytes(out)


def unpack(user_id: str, buf: bytes, space: FeatureSpace | None = None) -> UserState:
    """The state :func:`pack` made, as objects again (``space``: the one it was packed
    with, needed when it dropped a vector)."""
    s = UserState.__new__(UserState)
    s.user_id = user_id
    (
        s.anchor,
        s.first_ts,
        s.last_ts,
        s.last_purchase_ts,
        s.rating_sum,
        s.due,
        s.last_scored_ts,
        s.last_p,
        s.last_snapshot_ts,
        s.offset,
        s.sessions_total,
        s.events_total,
        s.purchases_total,
        s.rating_n,
        s.recent_pos,
        s.rescore_idx,
        s.spell_snapshots,
        n_sums,
        n_ring,
        used,
        n_pending,
        n_tail,
    ) = _HEAD.unpack_from(buf)
    i = _HEAD.size
    s.sums = sparse_unpack(buf[i : i + n_sums])
    i += n_sums
    ring = bytearray(n_ring)
    ring[:used] = buf[i : i + used]
    s.recent = ring
    i += used
    snaps = []
    lazy = False
    for _ in range(n_pending):
        scored_at, p, version, flags, n_vector = _SNAP.unpack_from(buf, i)
        i += _SNAP.size
        resolved_at = None
        if flags & _RESOLVED:
            (resolved_at,) = _TIME.unpack_from(buf, i)
            i += _TIME.size
        row = (scored_at, p, version, flags, resolved_at)
        if n_vector == _AGAIN:
            snaps.append((row, b""))
            lazy = True
        else:
            snaps.append((row, buf[i : i + n_vector]))
            i += n_vector
    if i + n_tail != len(buf):
        raise ValueError("compact state: length does not match its contents")
    cats, extra, arms = _decode_tail(buf[i:])
    s.categories = {_intern(k): float(v) for k, v in cats.items()}
    s.extra = extra
    if lazy:
        if space is None:
            raise ValueError("compact state: a snapshot's vector must be made again (no space)")
        snaps = [(row, packed or _again(s, row[0], space)) for row, packed in snaps]
    pending = []
    for ((scored_at, p, version, flags, resolved_at), packed), arm in zip(snaps, arms, strict=True):
        group, segment, action = arm
        pending.append(
            Pending(
                scored_at,
                p,
                packed,
                _GROUPS[group] if isinstance(group, int) else _intern(group),
                version,
                (1 if flags & _LABEL_1 else 0) if flags & _LABELLED else None,
                resolved_at,
                bool(flags & _TRAIN),
                None if segment is None else _intern(segment),
                None if action is None else _intern(action),
            )
        )
    s.pending = pending
    return s
