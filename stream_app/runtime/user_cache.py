"""A write-back cache in front of the users table (what Kafka Streams' record cache does).

The engine reads and writes user states through :class:`UserCache`, a ``MutableMapping``.
A write only marks the user dirty. Each flush (runtime/committer.py) then writes each dirty
user once to the changelog topic and, once confirmed, to the table's store, however many
events changed it since the last flush. Before this, every event wrote the user's whole
state (about 1.5 KB of JSON) to the changelog: that write, not the model, was most of a
worker's cost per event.

Durability is kept by the committer (runtime/committer.py): a batch's offsets become
committable only after the broker confirmed the changelog writes of the flush that covers
it (and every other record the batch caused). A crash loses at most the work since the last
confirmed flush, and that work is redone from the uncommitted offsets.

Two backends, chosen by the table's store URL:

- memory:// — the store's dict holds every user: a ``UserState`` while the user is in use,
  else the compact bytes of core/compact.py (about 1.6 KB against 4.7 KB of objects;
  recovery loads users compact, see runtime/table.py). A user read by an event or a timer
  becomes an object again; after a flush, once more than ``capacity`` users are objects,
  the clean ones are packed back. The cache also keeps faust's key -> partition index up
  to date, so a revoked partition's users are dropped from memory after the next recovery.
- rocksdb:// — states live serialized in one RocksDB per partition. The cache keeps the
  objects used since the last flush (at least ``capacity`` of them) and writes dirty ones
  to the partition's database once their changelog write is confirmed, so resident memory
  does not grow with users.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

from faust.types import TP

from stream_app.core import compact
from stream_app.core.features import FeatureSpace, UserState

log = logging.getLogger(__name__)

Encode = Callable[[UserState], bytes]
Decode = Callable[[bytes], UserState]

PACK_PER_FLUSH = 2_000  # memory://: users packed at most per flush (about 40 ms)


class UserCache(MutableMapping[str, UserState]):
    """Dirty tracking and write-back for the users table.

    ``partition`` must be set to the partition whose event is being applied before the
    engine runs (every user an event touches lives on that event's partition)."""

    def __init__(
        self,
        table: Any,
        encode: Encode,
        decode: Decode,
        partition_of: Callable[[str], int],
        capacity: int = 100_000,
    ) -> None:
        self.table = table
        self.encode_state = encode
        self.decode = decode
        self.partition_of = partition_of
        self.capacity = capacity
        self.partition = 0
        # The engine's feature space: packed users keep no vector a snapshot can have
        # made again from the state (core/compact.py). Set by the app; None: keep all.
        self.space: FeatureSpace | None = None
        self.dirty: dict[str, int] = {}  # user_id -> partition, in first-write order
        self._store: Any = None
        self._rocks = False
        # memory://: the store's dict (UserState or compact bytes); rocksdb://: the objects
        # in use, over the databases.
        self._live: dict[str, Any] = {}
        # memory://: users held as objects, packed back after a flush beyond ``capacity``.
        self._hot: set[str] = set()
        # rocksdb://: erased users whose delete is not in RocksDB yet (a read must not
        # bring the old state back from there).
        self._erased: set[str] = set()

    # --- backend ------------------------------------------------------------------------
    def bind(self) -> None:
        """Attach to the table's store (created when the app starts, not with the table)."""
        store = self.table.data
        if store is self._store:
            return
        self._store = store
        self._rocks = hasattr(store, "_db_for_partition")
        # memory://: the store's own dict is the set of live objects.
        self._live = {} if self._rocks else store.data

    @property
    def rocks(self) -> bool:
        self.bind()
        return self._rocks

    def _key(self, user_id: str) -> bytes:
        return bytes(self._store._encode_key(user_id))

    def _load(self, user_id: str, partition: int) -> UserState | None:
        raw = self._store._db_for_partition(partition).get(self._key(user_id))
        return None if raw is None else self.decode(raw)

    # --- mapping ------------------------------------------------------------------------
    def __getitem__(self, user_id: str) -> UserState:
        state: UserState | None = self.get(user_id)
        if state is None:
            raise KeyError(user_id)
        return state

    def get(self, user_id: str, default: Any = None) -> Any:  # hot path: no bind() call
        state = self._live.get(user_id)
        if state is not None:
            if state.__class__ is bytes:  # memory://, at rest
                state = compact.unpack(user_id, state, self.space)
                self._live[user_id] = state
                self._hot.add(user_id)
            return state
        if not self._rocks:
            return default
        if user_id in self._erased:
            return default
        state = self._load(user_id, self.partition)
        if state is None:
            return default
        self._live[user_id] = state
        return state

    def __setitem__(self, user_id: str, state: UserState) -> None:
        self._live[user_id] = state
        if user_id not in self.dirty:
            self.dirty[user_id] = self.partition

    def __delitem__(self, user_id: str) -> None:
        self.erase(user_id)

    def __iter__(self) -> Iterator[str]:
        self.bind()
        if not self._rocks:
            return iter(list(self._live))
        seen: set[str] = set(self._live)
        keys = list(self._live)
        for partition in list(self._store._dbs):
            for state in self._partition_states(partition):
                if state.user_id not in seen:
                    seen.add(state.user_id)
                    keys.append(state.user_id)
        return iter(keys)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def lookup(self, user_id: str) -> UserState | None:
        """A user's current state from any partition this worker holds (HTTP views)."""
        self.bind()
        state = self._live.get(user_id)
        if state is not None or not self._rocks:
            found: UserState | None = self._object(user_id, state)
            return found
        partition = self.partition_of(user_id)
        if user_id in self._erased or partition not in self._store._dbs:
            return None
        return self._load(user_id, partition)

    # --- partitions ---------------------------------------------------------------------
    def _partition_states(self, partition: int) -> Iterator[UserState]:
        db = self._store._dbs.get(partition)
        if db is None:
            return
        erased, offset_key = self._erased, self._store.offset_key
        for key, raw in db.items():
            # (Faust keeps the changelog offset recovery resumes from in the same database)
            if raw is not None and key != offset_key:
                state = self.decode(raw)
                if state.user_id not in erased:
                    yield state

    def users_in(self, partition: int) -> dict[str, UserState]:
        """Every user of ``partition`` this worker holds, with unflushed changes (all at
        once: see :meth:`partition_users` to walk them one at a time)."""
        return dict(self.partition_users(partition))

    def partition_users(self, partition: int) -> Iterator[tuple[str, UserState]]:
        """(user_id, state) of every user of ``partition`` this worker holds, one at a
        time. A user kept packed (memory://) is unpacked for its turn only, and a change
        the caller made to it before asking for the next one (the deadline index sets
        ``due``) is packed back: rebuilding a partition's deadlines never holds its users
        as objects all at once. Deleting the user just yielded is allowed."""
        self.bind()
        if self._rocks:
            out: dict[str, Any] = {}
            for state in self._partition_states(partition):
                out[state.user_id] = state
            for uid, state in self._live.items():
                if self.partition_of(uid) == partition:
                    out[uid] = state
            yield from out.items()
            return
        index, dirty, live = self._store._key_partition, self.dirty, self._live
        mine = []
        for uid in live:
            p = index.get(uid)
            if p is None:
                p = dirty.get(uid)
            if p is None:
                p = self.partition_of(uid)
            if p == partition:
                mine.append(uid)
        for uid in mine:
            held = live.get(uid)
            if held is None:
                continue
            if held.__class__ is not bytes:
                yield uid, held
                continue
            state = compact.unpack(uid, held, self.space)
            due = state.due
            yield uid, state
            if state.due != due and live.get(uid) is held:
                live[uid] = compact.pack(state, self.space)

    # --- write-back ---------------------------------------------------------------------
    def swap_dirty(self) -> dict[str, int]:
        """The dirty users (user_id -> partition), and a fresh dirty set for the next
        flush. A user changed again after this is dirty again."""
        self.bind()
        dirty, self.dirty = self.dirty, {}
        return dirty

    def encode(self, users: list[tuple[str, int]]) -> list[tuple[str, int, bytes | None]]:
        """(user_id, partition, changelog value) of each user as it is now, a tombstone for
        one that is gone. The committer encodes a flush in chunks and lets the score loop
        run between them: a state encoded later than the swap holds more than the flushed
        batches caused, never less. Nothing is written locally until :meth:`persist`:
        RocksDB's copy must never run ahead of the changelog."""
        live, encode = self._live, self.encode_state
        out: list[tuple[str, int, bytes | None]] = []
        for uid, partition in users:
            state = live.get(uid)
            if state is None:
                out.append((uid, partition, None))
            else:
                out.append((uid, partition, encode(self._object(uid, state))))
        if not self._rocks:
            index, hot = self._store._key_partition, self._hot
            for uid, partition, payload in out:
                if payload is None:
                    index.pop(uid, None)
                else:
                    index[uid] = partition
                    hot.add(uid)
        return out

    def persist(self, rows: list[tuple[str, int, bytes | None]], metas: list[Any]) -> None:
        """After the broker confirmed ``rows`` (``metas``: their delivery futures, done):
        write them to RocksDB with the changelog offsets recovery resumes from. The
        memory store has nothing to write."""
        if not self._rocks:
            self._pack_clean()
            return
        if not rows:
            return
        store = self._store
        batches: dict[int, list[tuple[bytes, bytes | None]]] = {}
        for uid, partition, payload in rows:
            batches.setdefault(partition, []).append((self._key(uid), payload))
        for partition, kvs in batches.items():
            db = store._db_for_partition(partition)
            for key, payload in kvs:
                if payload is None:
                    db.delete(key)
                else:
                    db.put(key, payload)
        for uid, _partition, payload in rows:
            if payload is None:
                self._erased.discard(uid)
        newest: dict[Any, int] = {}
        for fut in metas:
            meta = fut.result()
            tp = (meta.topic, meta.partition)
            if meta.offset > newest.get(tp, -1):
                newest[tp] = meta.offset
        for (topic, partition), offset in newest.items():
            store.set_persisted_offset(TP(topic, partition), offset)
        live = self._live
        if len(live) > self.capacity:
            # Clean objects come back from RocksDB on their next read; users changed
            # while these rows were in flight are dirty again and stay.
            dirty = self.dirty
            for uid in [u for u in live if u not in dirty]:
                del live[uid]

    def _pack_clean(self) -> None:
        """memory://: beyond ``capacity`` users held as objects, pack the clean ones (a
        user changed since the last flush stays an object until the flush after it), at
        most :data:`PACK_PER_FLUSH` a flush: packing costs ~19 us a user and runs on the
        score loop, so 100,000 at once would stall it for about two seconds; the rest wait
        for the next flushes."""
        hot = self._hot
        if len(hot) <= self.capacity:
            return
        live, dirty, space = self._live, self.dirty, self.space
        done: list[str] = []
        for uid in hot:
            if uid in dirty:
                continue
            state = live.get(uid)
            if state is not None and state.__class__ is not bytes:
                if len(done) == PACK_PER_FLUSH:
                    break
                live[uid] = compact.pack(state, space)
            done.append(uid)
        hot.difference_update(done)

    def _object(self, user_id: str, state: Any) -> Any:
        """A state as an object whether the store holds it packed or not (read only: a
        changed copy of packed bytes is not written back)."""
        if state.__class__ is bytes:
            return compact.unpack(user_id, state, self.space)
        return state

    def erase(self, user_id: str) -> bool:
        """Forget a user (GDPR erasure); the next flush writes a tombstone. True when the
        user was known."""
        self.bind()
        partition = self.partition_of(user_id)
        known = self._live.pop(user_id, None) is not None
        self._hot.discard(user_id)
        if self._rocks:
            if not known and user_id not in self._erased and partition in self._store._dbs:
                known = self._load(user_id, partition) is not None
            self._erased.add(user_id)
        self.dirty[user_id] = partition
        return known
