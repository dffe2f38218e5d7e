"""A user state as one compact bytes object, for users at rest in memory.

A :class:`UserState` in Python objects costs about 5.6 KB (measured on the bench's users:
open training snapshots 2.3 KB, category counts 1.0 KB, the dedup ring 0.6 KB, policy
state 0.6 KB, decayed sums 0.4 KB, the rest in boxed floats and object headers). Most
tracked users are silent at any moment, so the ``memory://`` store keeps them as the bytes
made here and turns them back into objects when an event or a timer touches them
(runtime/user_cache.py). This form never leaves the process: the changelog and RocksDB keep
the JSON of :meth:`UserState.to_dict`, so nothing here needs to read untrusted input or stay
compatible across versions.

The round trip is exact: every float keeps its bits, ``extra`` goes through JSON as it does
on the changelog, and the user id is the table key (not stored twice).
"""

from __future__ import annotations

import math
import struct
import sys

import msgspec

from stream_app.core.features import Pending, UserState, sparse_pack, sparse_unpack

# anchor, first_ts, last_ts, last_purchase_ts, rating_sum, due, last_scored_ts, last_p,
# last_snapshot_ts; offset; sessions_total, events_total, purchases_total, rating_n,
# recent_pos, rescore_idx, spell_snapshots; lengths: packed sums, ring capacity in bytes,
# categories, pending, extra's JSON bytes.
_HEAD = struct.Struct("<9dq7IHIBHI")
# scored_at, p, resolved_at (NaN: None), model_version, label (-1: None), train
_SNAP = struct.Struct("<3dqbBH")
_NONE = 0xFF

_encode_json = msgspec.json.Encoder().encode
_decode_json = msgspec.json.Decoder().decode
_intern = sys.intern


def _put_str(out: bytearray, s: str | None) -> None:
    if s is None:
        out.append(_NONE)
        return
    raw = s.encode()
    if len(raw) >= _NONE:
        raise ValueError(f"compact state: label {s[:20]!r}... is too long")
    out.append(len(raw))
    out += raw


def _get_str(buf: bytes, i: int) -> tuple[str | None, int]:
    n = buf[i]
    if n == _NONE:
        return None, i + 1
    return _intern(buf[i + 1 : i + 1 + n].decode()), i + 1 + n


def pack(state: UserState) -> bytes:
    """``state`` as compact bytes (see the module's docstring)."""
    extra = _encode_json(state.extra) if state.extra else b""
    cats = state.categories
    sums = sparse_pack(state.sums)  # (a user who never returned or reviewed has zeros)
    ring = state.recent
    # Slots fill from the start: a user with fewer events than slots keeps only those.
    used = min(len(ring), 8 * state.events_total)
    if ring[used:].strip(b"\0"):  # (not as expected: keep every slot)
        used = len(ring)
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
            len(cats),
            len(state.pending),
            len(extra),
        )
    )
    out += sums
    out += used.to_bytes(4, "little")
    out += ring[:used]
    for name, count in cats.items():
        raw = name.encode()
        out += len(raw).to_bytes(2, "little")
        out += raw
        out += struct.pack("<d", count)
    for snap in state.pending:
        out += _SNAP.pack(
            snap.scored_at,
            snap.p,
            math.nan if snap.resolved_at is None else snap.resolved_at,
            snap.model_version,
            -1 if snap.label is None else snap.label,
            1 if snap.train else 0,
            len(snap.packed),
        )
        _put_str(out, snap.group)
        _put_str(out, snap.segment)
        _put_str(out, snap.action)
        out += snap.packed
    out += extra
    return bytes(out)


def unpack(user_id: str, buf: bytes) -> UserState:
    """The state :func:`pack` made, as objects again."""
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
        n_cats,
        n_pending,
        n_extra,
    ) = _HEAD.unpack_from(buf)
    i = _HEAD.size
    s.sums = sparse_unpack(buf[i : i + n_sums])
    i += n_sums
    used = int.from_bytes(buf[i : i + 4], "little")
    i += 4
    ring = bytearray(n_ring)
    ring[:used] = buf[i : i + used]
    s.recent = ring
    i += used
    cats: dict[str, float] = {}
    for _ in range(n_cats):
        n = int.from_bytes(buf[i : i + 2], "little")
        name = _intern(buf[i + 2 : i + 2 + n].decode())
        i += 2 + n
        (cats[name],) = struct.unpack_from("<d", buf, i)
        i += 8
    s.categories = cats
    pending = []
    for _ in range(n_pending):
        scored_at, p, resolved_at, version, label, train, n_packed = _SNAP.unpack_from(buf, i)
        i += _SNAP.size
        group, i = _get_str(buf, i)
        segment, i = _get_str(buf, i)
        action, i = _get_str(buf, i)
        pending.append(
            Pending(
                scored_at,
                p,
                buf[i : i + n_packed],
                group or "none",
                version,
                None if label < 0 else label,
                None if math.isnan(resolved_at) else resolved_at,
                bool(train),
                segment,
                action,
            )
        )
        i += n_packed
    s.pending = pending
    s.extra = _decode_json(buf[i : i + n_extra]) if n_extra else {}
    if i + n_extra != len(buf):
        raise ValueError("compact state: length does not match its contents")
    return s
