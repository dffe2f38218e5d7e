"""Per-user state and behavioural features, in constant memory per user.

Decayed counters use a fixed *anchor* time A per user: an event of weight w at time t adds
``w * 2**((t - A) / h)`` to the stored sum; reading at time s multiplies by
``2**(-(s - A) / h)``. That equals the exponentially decayed count ``sum w_i 2**(-(s-t_i)/h)``
for any arrival order, so out-of-order events are exact and an update touches only the
counters of the event's type (no decay pass over every counter). The anchor is moved forward
before the stored sums could overflow.
"""

from __future__ import annotations

import base64
import hashlib
import math
import sys
from array import array
from collections.abc import Sequence
from typing import Any

from schemas.events import EVENT_TYPES, EventView

DAY = 86400.0
LN2 = math.log(2.0)
log1p = math.log1p
log = math.log

PLURALS: dict[str, str] = {
    "session_start": "session_starts",
    "page_view": "page_views",
    "product_view": "product_views",
    "search": "searches",
    "add_to_cart": "cart_adds",
    "remove_from_cart": "cart_removes",
    "checkout_start": "checkouts",
    "purchase": "purchases",
    "review": "reviews",
    "support_contact": "support_contacts",
    "return": "returns",
}
TYPE_INDEX: dict[str, int] = {t: i for i, t in enumerate(EVENT_TYPES)}
N_TYPES = len(EVENT_TYPES)
REVENUE = N_TYPES  # slot of the decayed revenue sum
SESSIONS = N_TYPES + 1  # slot of the decayed (gap-based) session count
N_SLOTS = N_TYPES + 2
_PURCHASE = TYPE_INDEX["purchase"]
_CART_ADD = TYPE_INDEX["add_to_cart"]
_RETURN = TYPE_INDEX["return"]
_REVIEW = TYPE_INDEX["review"]
TOP_CATEGORIES = 8
_REANCHOR = 600.0  # re-anchor before 2**(dt/h) exceeds 2**600 (float max is ~2**1024)


def half_life_label(seconds: float) -> str:
    """``86400 -> '1d'``, ``43200 -> '12h'``: the suffix of feature names."""
    for unit, size in (("d", DAY), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def feature_names(half_lives: Sequence[float]) -> list[str]:
    """The stable, ordered feature names for these half-lives (see docs/features.md)."""
    names: list[str] = []
    for h in half_lives:
        lab = half_life_label(h)
        names += [f"{PLURALS[t]}_{lab}" for t in EVENT_TYPES]  # slot order
        names += [f"revenue_{lab}", f"sessions_{lab}"]  # slots REVENUE, SESSIONS
    names += [
        "days_since_last_event",
        "log_days_since_last_event",
        "days_since_last_purchase",
        "has_purchased",
        "tenure_days",
        "log_sessions_total",
        "log_purchases_total",
        "silence_vs_usual_gap",
        "events_per_session",
        "cart_abandonment",
        "activity_trend",
        "rating_mean",
        "return_ratio",
        "distinct_categories",
        "sessions_missed",
        "session_trend",
    ]
    return names


def schema_hash(names: Sequence[str]) -> str:
    """Short hash of the ordered feature names: a snapshot only loads into the same space."""
    return hashlib.sha256(",".join(names).encode()).hexdigest()[:16]


class FeatureSpace:
    """The fixed configuration of features: half-lives, session gap, precomputed names."""

    def __init__(
        self, half_lives: Sequence[float], session_gap: float = 1800.0, dedup_capacity: int = 64
    ) -> None:
        if not half_lives:
            raise ValueError("at least one half-life is needed")
        self.half_lives = tuple(float(h) for h in half_lives)
        self.inv = tuple(1.0 / h for h in self.half_lives)
        self.session_gap = float(session_gap)
        self.dedup_capacity = dedup_capacity
        self.names = feature_names(self.half_lives)
        self.schema = schema_hash(self.names)
        # Decayed count -> events per day at the shortest and longest half-life.
        self.rate_short = LN2 / (self.half_lives[0] / DAY)
        self.rate_long = LN2 / (self.half_lives[-1] / DAY)
        # The second-longest half-life (the longest when there is one): session_trend.
        self.mid = max(0, len(self.half_lives) - 2)
        self.rate_mid = LN2 / (self.half_lives[self.mid] / DAY)

    def session_rate(self, state: UserState) -> float:
        """Sessions a day as of the user's last event, over the longest half-life (the
        decayed session count times ln 2 / half-life); 0 before the first event."""
        if not state.sessions_total:
            return 0.0
        long_base = (len(self.half_lives) - 1) * N_SLOTS
        decay = 2.0 ** (-(state.last_ts - state.anchor) * self.inv[-1])
        return float(state.sums[long_base + SESSIONS] * decay * self.rate_long)

    def new_state(self, user_id: str) -> UserState:
        return UserState(user_id, len(self.half_lives), self.dedup_capacity)


_EMPTY_SLOT = bytes(8)


def event_hash(event_id: str) -> bytes:
    """Stable 8-byte digest of an event id for dedup (Python's hash() is salted per
    process, so it could not survive a restart)."""
    h = hashlib.blake2b(event_id.encode(), digest_size=8).digest()
    return h if h != _EMPTY_SLOT else b"\x00" * 7 + b"\x01"  # all-zero marks an empty slot


def ring_contains(ring: bytearray, digest: bytes) -> bool:
    """Whether an 8-byte ``digest`` is one of the slots of ``ring`` (one C-level search;
    a match straddling two slots is not a match)."""
    i = ring.find(digest)
    while i % 8 and i != -1:
        i = ring.find(digest, i + 1)
    return i != -1


class Pending:
    """One open training snapshot of a user: the score and features at ``scored_at``, and
    its label once activity resolved it (see labels.py)."""

    __slots__ = (
        "scored_at",
        "p",
        "packed",
        "group",
        "model_version",
        "label",
        "resolved_at",
        "train",
        "segment",
        "action",
    )

    def __init__(
        self,
        scored_at: float,
        p: float,
        features: Sequence[float] | bytes,
        group: str,
        model_version: int,
        label: int | None = None,
        resolved_at: float | None = None,
        train: bool = True,
        segment: str | None = None,
        action: str | None = None,
    ) -> None:
        """``features`` as a vector, or already packed (bytes of :func:`snapshot_pack`)."""
        self.scored_at = scored_at
        self.p = p
        # Kept packed, in single precision (snapshot_pack): a user holds several open
        # snapshots (3.3 on the bench's users), they were 40% of a state's memory in
        # doubles, and the vector is only read back when the snapshot becomes a training
        # example, where 7 significant digits are far below any feature's noise.
        self.packed = features if isinstance(features, bytes) else snapshot_pack(features)
        self.group = group  # "none", or the policy's "treatment" / "holdout" at scored_at
        self.model_version = model_version
        self.label = label
        self.resolved_at = resolved_at
        self.train = train  # False: judged, not learned from (LabelBook.max_per_silence)
        # The arm of the decision that set ``group`` (its segment and action), which the
        # bandit learns from; None when no decision marked the snapshot.
        self.segment = segment
        self.action = action

    @property
    def features(self) -> array[float]:
        return snapshot_unpack(self.packed)

    def to_list(self) -> list[Any]:
        """The changelog form: a positional JSON list, as written since 0.1 (``train``
        appended in 0.3; features sparse-packed, "~" + base64, since 0.4; the marking
        decision's segment and action appended with issue #20, only when there is one)."""
        row = [
            self.scored_at,
            self.p,
            "~" + base64.b64encode(_widen(self.packed)).decode(),
            self.group,
            self.model_version,
            self.label,
            self.resolved_at,
            self.train,
        ]
        if self.action is not None:
            row += [self.segment, self.action]
        return row

    @classmethod
    def from_list(cls, row: list[Any]) -> Pending:
        scored_at, p, features, group, version, label, resolved_at = row[:7]
        train = bool(row[7]) if len(row) > 7 else True  # 0.2 learned from every snapshot
        segment, action = (row[8], row[9]) if len(row) > 9 else (None, None)  # before issue #20
        if isinstance(group, bool):  # 0.2 stored a "treated" flag here
            group = "treatment" if group else "none"
        text = str(features)
        wide = (
            base64.b64decode(text[1:], validate=True)
            if text.startswith("~")
            else sparse_pack(_unpack(text))  # dense, as written before 0.4
        )
        sparse_unpack(wide)  # validate now, not when the snapshot is labelled
        packed = _narrow(wide)
        return cls(
            float(scored_at),
            float(p),
            packed,
            str(group),
            int(version),
            None if label is None else int(label),
            None if resolved_at is None else float(resolved_at),
            train,
            None if segment is None else str(segment),
            None if action is None else str(action),
        )


class UserState:
    """Everything kept about one user. ``apply`` is O(#half-lives); memory is bounded."""

    __slots__ = (
        "user_id",
        "anchor",
        "sums",
        "first_ts",
        "last_ts",
        "last_purchase_ts",
        "sessions_total",
        "events_total",
        "recent_pos",
        "offset",
        "due",
        "purchases_total",
        "rating_sum",
        "rating_n",
        "categories",
        "recent",
        "last_scored_ts",
        "last_p",
        "rescore_idx",
        "pending",
        "last_snapshot_ts",
        "spell_snapshots",
        "extra",
    )

    def __init__(self, user_id: str, n_half_lives: int, dedup_capacity: int = 64) -> None:
        self.user_id = user_id
        self.anchor = 0.0
        # Decayed sums, N_SLOTS per half-life, in one flat block of doubles: a list of float
        # objects scattered over the heap made reading them cache-bound (vector() took
        # ~10 us on a few thousand users, ~5 us from one array).
        self.sums = array("d", bytes(8 * N_SLOTS * n_half_lives))
        self.first_ts = math.nan
        self.last_ts = math.nan
        self.last_purchase_ts = math.nan
        self.sessions_total = 0
        self.events_total = 0
        self.purchases_total = 0
        self.rating_sum = 0.0
        self.rating_n = 0
        self.categories: dict[str, float] = {}
        # Ring of recent event-id digests, 8 bytes each: 512 bytes for 64 ids, and
        # membership is one C-level substring search.
        self.recent = bytearray(8 * dedup_capacity)
        self.recent_pos = 0
        # Source offset of the last event applied (live only; -1: none). A user lives on
        # one partition, so a redelivered event is any at or below it, however many.
        self.offset = -1
        self.due = math.inf  # cached next event-time deadline (set by the engine)
        self.last_scored_ts = math.nan
        self.last_p = math.nan
        self.rescore_idx = 0
        self.pending: list[Pending] = []  # open training snapshots (labels.py)
        self.last_snapshot_ts = math.nan
        self.spell_snapshots = 0  # training snapshots since the last activity (labels.py)
        self.extra: dict[str, Any] = {}  # room for later modules (policy state)

    # --- dedup ------------------------------------------------------------------------
    def seen(self, digest: bytes) -> bool:
        return ring_contains(self.recent, digest)

    def remember(self, digest: bytes) -> None:
        pos = self.recent_pos
        self.recent[pos : pos + 8] = digest
        self.recent_pos = (pos + 8) % len(self.recent)

    # --- updates ----------------------------------------------------------------------
    def apply(self, event: EventView, ts: float, h_id: bytes, space: FeatureSpace) -> bool:
        """Fold one event in; returns True when it starts a new (gap-based) session.

        This and :meth:`vector` run for every event; they are written for CPython's speed
        (locals, no helper calls) rather than for looks."""
        self.remember(h_id)
        last_ts = self.last_ts
        if self.events_total == 0:
            self.anchor = ts
            self.first_ts = self.last_ts = ts
            new_session = True
        else:
            new_session = ts - last_ts >= space.session_gap
            if ts > last_ts:
                self.last_ts = ts
            elif ts < self.first_ts:
                self.first_ts = ts
            if (ts - self.anchor) * space.inv[0] > _REANCHOR:
                self._reanchor(ts, space.inv)
        self.events_total += 1
        slot = TYPE_INDEX[event.event_type]
        revenue = event.revenue if slot != _RETURN else None  # returns: counted, not revenue
        age = ts - self.anchor
        sums = self.sums
        base = 0
        for inv_h in space.inv:
            g = 2.0 ** (age * inv_h)
            sums[base + slot] += g
            if revenue:
                sums[base + REVENUE] += revenue * g
            if new_session:
                sums[base + SESSIONS] += g
            base += N_SLOTS
        if new_session:
            self.sessions_total += 1
        if slot == _PURCHASE:
            self.purchases_total += 1
            if not ts <= self.last_purchase_ts:  # also true when NaN (never purchased)
                self.last_purchase_ts = ts
        elif slot == _REVIEW:
            self.rating_sum += event.rating  # type: ignore[attr-defined]  # reviews have it
            self.rating_n += 1
        category = event.category
        if category:
            cats = self.categories
            if category in cats:
                cats[category] += 1.0
            elif len(cats) < TOP_CATEGORIES:
                cats[category] = 1.0
            else:  # bounded "space-saving" top-k: replace the weakest, inheriting its count
                weakest = min(cats, key=cats.__getitem__)
                cats[category] = cats.pop(weakest) + 1.0
        return new_session

    def _reanchor(self, ts: float, inv_half_lives: Sequence[float]) -> None:
        for k, inv_h in enumerate(inv_half_lives):
            f = 2.0 ** (-(ts - self.anchor) * inv_h)
            for i in range(k * N_SLOTS, (k + 1) * N_SLOTS):
                self.sums[i] *= f
        self.anchor = ts

    def top_categories(self, k: int = 3) -> list[str]:
        return sorted(self.categories, key=lambda c: (-self.categories[c], c))[:k]

    # --- features ---------------------------------------------------------------------
    def features(self, at: float, space: FeatureSpace) -> dict[str, float]:
        """Feature dict as of time ``at`` (names from ``space.names``)."""
        return dict(zip(space.names, self.vector(at, space), strict=True))

    def vector(self, at: float, space: FeatureSpace) -> list[float]:
        """Feature values as of time ``at``, in ``space.names`` order. Recency is measured
        to ``at`` (never before the last event); counts and revenue are log1p of the
        decayed sums."""
        last_ts = self.last_ts
        if at < last_ts:
            at = last_ts
        age = at - self.anchor
        sums = self.sums
        out: list[float] = []
        decay = [2.0 ** (-age * inv_h) for inv_h in space.inv]
        base = 0
        for f in decay:
            out += [log1p(v * f) for v in sums[base : base + N_SLOTS]]
            base += N_SLOTS
        f_short = decay[0]
        f = decay[-1]
        long_base = base - N_SLOTS
        since_last = (at - last_ts) / DAY
        tenure = (at - self.first_ts) / DAY
        n_purchases = self.purchases_total
        n_sessions = self.sessions_total
        since_purchase = (at - self.last_purchase_ts) / DAY if n_purchases else tenure
        usual_gap = tenure / (n_sessions - 1) if n_sessions > 1 else 30.0
        long_events = sum(sums[long_base : long_base + N_TYPES]) * f
        short_rate = sum(sums[:N_TYPES]) * f_short * space.rate_short
        long_rate = long_events * space.rate_long
        long_sessions = sums[long_base + SESSIONS] * f
        long_session_rate = long_sessions * space.rate_long
        mid_session_rate = sums[space.mid * N_SLOTS + SESSIONS] * decay[space.mid] * space.rate_mid
        adds = sums[long_base + _CART_ADD] * f
        purchases = sums[long_base + _PURCHASE] * f
        out += (
            since_last,
            log1p(since_last),
            since_purchase,
            1.0 if n_purchases else 0.0,
            tenure,
            log1p(n_sessions),
            log1p(n_purchases),
            log((since_last + 0.1) / (usual_gap + 0.1)),
            long_events / long_sessions if long_sessions > 1e-9 else 0.0,
            max(0.0, adds - purchases) / (adds + 1.0),
            log((short_rate + 0.05) / (long_rate + 0.05)),
            self.rating_sum / self.rating_n if self.rating_n else 3.0,
            sums[long_base + _RETURN] * f / (purchases + 1.0),
            float(len(self.categories)),
            since_last * long_session_rate,
            log((mid_session_rate + 0.05) / (long_session_rate + 0.05)),
        )
        return out

    # --- persistence (JSON-compatible; no pickle) ---------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "u": self.user_id,
            "a": self.anchor,
            "s": _pack(self.sums),
            "f": _nan_out(self.first_ts),
            "l": _nan_out(self.last_ts),
            "lp": _nan_out(self.last_purchase_ts),
            "st": self.sessions_total,
            "et": self.events_total,
            "pt": self.purchases_total,
            "rs": self.rating_sum,
            "rn": self.rating_n,
            "c": self.categories,
            "r": base64.b64encode(self.recent).decode(),
            "rp": self.recent_pos,
            "o": self.offset,
            "d": _nan_out(self.due),
            "ls": _nan_out(self.last_scored_ts),
            "lpp": _nan_out(self.last_p),
            "ri": self.rescore_idx,
            "p": [snap.to_list() for snap in self.pending],
            "lsn": _nan_out(self.last_snapshot_ts),
            "ss": self.spell_snapshots,
            "x": self.extra,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UserState:
        s = cls.__new__(cls)
        s.user_id = str(d["u"])
        s.anchor = float(d["a"])
        raw_sums = d["s"]
        if isinstance(raw_sums, str):
            s.sums = _unpack(raw_sums)
        else:  # states written before 0.2 kept one JSON list per half-life
            s.sums = array("d", (float(v) for row in raw_sums for v in row))
        if not s.sums or len(s.sums) % N_SLOTS:
            raise ValueError(f"user state: decayed sums must be a multiple of {N_SLOTS} values")
        s.first_ts = _nan_in(d["f"])
        s.last_ts = _nan_in(d["l"])
        s.last_purchase_ts = _nan_in(d["lp"])
        s.sessions_total = int(d["st"])
        s.events_total = int(d["et"])
        s.purchases_total = int(d["pt"])
        s.rating_sum = float(d["rs"])
        s.rating_n = int(d["rn"])
        s.categories = {str(k): float(v) for k, v in d["c"].items()}
        s.recent = bytearray(base64.b64decode(d["r"], validate=True))
        if not s.recent or len(s.recent) % 8:
            raise ValueError("user state: dedup ring must be a non-empty multiple of 8 bytes")
        s.recent_pos = int(d["rp"]) % len(s.recent)
        s.offset = int(d.get("o", -1))
        s.due = math.inf if d.get("d") is None else float(d["d"])
        s.last_scored_ts = _nan_in(d["ls"])
        s.last_p = _nan_in(d["lpp"])
        s.rescore_idx = int(d["ri"])
        s.pending = [Pending.from_list(p) for p in d["p"]]
        s.last_snapshot_ts = _nan_in(d["lsn"])
        s.spell_snapshots = int(d.get("ss", 0))  # absent in states written before 0.3
        s.extra = dict(d.get("x") or {})
        return s


def _pack(values: Sequence[float]) -> str:
    """A float64 vector as base64 of its little-endian bytes: exact, and about half the
    size of a JSON list (the state is written to the changelog on every event)."""
    vec = array("d", values)
    if sys.byteorder != "little":
        vec.byteswap()
    return base64.b64encode(vec.tobytes()).decode()


def sparse_pack(values: Sequence[float]) -> bytes:
    """A float64 vector, exactly, in few bytes when most entries are zero: a 2-byte
    length, a bitmap of the non-zero entries, then those entries (little-endian)."""
    n = len(values)
    bitmap = bytearray((n + 7) // 8)
    nonzero = array("d")
    for i, v in enumerate(values):
        if v != 0.0 or math.copysign(1.0, v) < 0:  # -0.0 kept: exact round trip
            bitmap[i >> 3] |= 1 << (i & 7)
            nonzero.append(v)
    if sys.byteorder != "little":
        nonzero.byteswap()
    return n.to_bytes(2, "little") + bytes(bitmap) + nonzero.tobytes()


def snapshot_pack(values: Sequence[float]) -> bytes:
    """A training snapshot's vector as :func:`sparse_pack` lays it out, with its entries
    rounded to single precision (4 bytes each)."""
    return _narrow(sparse_pack(values))


def snapshot_unpack(packed: bytes) -> array[float]:
    return sparse_unpack(_widen(packed))


def _narrow(wide: bytes) -> bytes:
    """A :func:`sparse_pack` vector with its entries rounded to float32 (exact when they
    already are: what the changelog keeps, so narrowing on load loses nothing)."""
    return _recast(wide, "d", "f")


def _widen(packed: bytes) -> bytes:
    """:func:`_narrow` undone: the float64 layout the changelog has always carried."""
    return _recast(packed, "f", "d")


def _recast(packed: bytes, source: str, target: str) -> bytes:
    """A sparse-packed vector with its entries (little-endian ``array`` typecode
    ``source``) converted to ``target``; the length and bitmap stay as they are."""
    head = 2 + (int.from_bytes(packed[:2], "little") + 7) // 8
    values = array(source, packed[head:])
    if sys.byteorder != "little":
        values.byteswap()
    out = array(target, values)
    if sys.byteorder != "little":
        out.byteswap()
    return packed[:head] + out.tobytes()


def sparse_unpack(packed: bytes) -> array[float]:
    if len(packed) < 2:
        raise ValueError("packed vector: too short")
    n = int.from_bytes(packed[:2], "little")
    nb = (n + 7) // 8
    bitmap = packed[2 : 2 + nb]
    nonzero = array("d", packed[2 + nb :])
    if sys.byteorder != "little":
        nonzero.byteswap()
    out = array("d", bytes(8 * n))
    j = 0
    for i in range(n):
        if bitmap[i >> 3] >> (i & 7) & 1:
            if j >= len(nonzero):
                raise ValueError("packed vector: fewer values than its bitmap says")
            out[i] = nonzero[j]
            j += 1
    if j != len(nonzero) or len(bitmap) != nb:
        raise ValueError("packed vector: length does not match its bitmap")
    return out


def _unpack(text: str) -> array[float]:
    vec = array("d", base64.b64decode(text, validate=True))
    if sys.byteorder != "little":
        vec.byteswap()
    return vec


def _nan_out(v: float) -> float | None:
    return None if not math.isfinite(v) else v


def _nan_in(v: object) -> float:
    return math.nan if v is None else float(v)  # type: ignore[arg-type]
