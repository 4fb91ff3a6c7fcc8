"""Keeps a :class:`~p2pstate.storage.Storage` equal to a node's replica.

The runtime calls :meth:`Persister.persist` after every step of the core and
before it sends what the step produced, so no acknowledgement leaves for a
change that is not stored. What it stores: every key but ephemeral ones
(they belong to players who are gone by the time a store is read again),
with its version, owner and flags; a key with a ttl is stored with the wall
clock time it expires, and is dropped on load once that has passed. The
session's access state (admin, modes, lists, limits) goes to ``Batch.meta``
as ``"access"`` whenever it changes, for a store that keeps it
(``MetaStorage``).
"""

from __future__ import annotations

import logging
from typing import Any

from .codec import decode, encode, normalize
from .core.access import Access
from .core.node import Node
from .core.ops import Delete, Restore, Set, SetOpts
from .core.replica import Entry, Replica
from .errors import ProtocolError, StorageError
from .messages import EPHEMERAL, Change
from .storage import Batch, MetaStorage, Storage, StoredEntry

__all__ = ["ACCESS", "InitialState", "Persister"]

log = logging.getLogger(__name__)

#: The name of the access state in ``Batch.meta``.
ACCESS = "access"
#: (key, value, version, owner, flags, seconds of ttl left or 0), as Snapshot.data.
InitialState = tuple[tuple[str, Any, int, str, int, float], ...]

#: The ops that change one key: the keys a batch puts or deletes.
_KEYED = (Set, SetOpts, Delete)
# A stored value is our own encoding; this only bounds a damaged file.
_MAX_STORED_VALUE = 256 * 1024 * 1024


class Persister:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        # (seq, epoch, origin) of the last change stored; None: unknown, so the
        # next write replaces the store's contents with the replica's.
        self._point: tuple[int, int, str] | None = None
        self._expired: tuple[str, ...] = ()
        # The access state last stored (None: not yet, or the store keeps none).
        self._access: Access | None = None
        self._keeps_meta = isinstance(storage, MetaStorage)
        #: The access state the store held when opened (None: none, as in a
        #: store written before access states were stored).
        self.stored_access: Access | None = None
        self.batches = 0

    def initial(self, wall_now: float) -> tuple[InitialState, int]:
        """What a session created from this store starts with, and the last
        sequence number stored (the session numbers its changes after it)."""
        stored = self.storage.load()
        seq = self.storage.last_seq()
        out: list[tuple[str, Any, int, str, int, float]] = []
        expired: list[str] = []
        for key, entry in stored.items():
            if entry.flags & EPHEMERAL:
                expired.append(key)
                continue
            left = 0.0
            if entry.expires_at:
                left = entry.expires_at - wall_now
                if left <= 0:
                    expired.append(key)
                    continue
            try:
                value = normalize(decode(entry.value, max_size=_MAX_STORED_VALUE))
            except (TypeError, ValueError) as exc:
                raise StorageError(f"the store holds a bad value for {key!r}: {exc}") from None
            out.append((key, value, entry.version, entry.owner, entry.flags, left))
            seq = max(seq, entry.version)
        self._expired = tuple(expired)
        self.stored_access = self._load_access()
        return tuple(out), seq

    def _load_access(self) -> Access | None:
        if not self._keeps_meta:
            return None
        assert isinstance(self.storage, MetaStorage)
        packed = self.storage.load_meta().get(ACCESS)
        if packed is None:
            return None
        try:
            access = Access.from_wire(decode(packed, max_size=_MAX_STORED_VALUE))
        except (TypeError, ValueError, ProtocolError) as exc:
            raise StorageError(f"the store holds a bad access state: {exc}") from None
        return access if access.admin else None

    def _meta(self, replica: Replica) -> dict[str, bytes]:
        """The access state for the next batch, if it changed since the last."""
        if not self._keeps_meta or replica.access == self._access:
            return {}
        return {ACCESS: encode(replica.access.to_wire())}

    def started(self, replica: Replica) -> None:
        """The replica was just started from :meth:`initial`: the store already
        holds its keys, so record the new sequence number and drop what expired."""
        self.storage.apply(Batch(seq=replica.seq, delete=self._expired, meta=self._meta(replica)))
        self._expired = ()
        self._access = replica.access
        self._point = (replica.seq, replica.last_epoch, replica.last_origin)

    def persist(self, node: Node, wall_now: float) -> bool:
        """Bring the store up to the node's replica in one batch; False when it
        was already there."""
        replica = node.replica
        point = (replica.seq, replica.last_epoch, replica.last_origin)
        if point == self._point or not node.ready:
            return False
        changes = self._changes_since(replica)
        ttl_left = node.ttl_left()
        if changes is None or any(type(op) is Restore for c in changes for op in c.ops):
            # A snapshot (first welcome, a merge) or a restore: rewrite it all.
            put = {
                key: _record(key, entry, ttl_left, wall_now)
                for key, entry in replica.data.items()
                if not entry.flags & EPHEMERAL
            }
            batch = Batch(seq=replica.seq, put=put, replace=True, meta=self._meta(replica))
        else:
            touched = dict.fromkeys(
                op.key for c in changes for op in c.ops if isinstance(op, _KEYED)
            )
            put, delete = {}, []
            for key in touched:
                entry = replica.data.get(key)
                if entry is None or entry.flags & EPHEMERAL:
                    delete.append(key)
                else:
                    put[key] = _record(key, entry, ttl_left, wall_now)
            batch = Batch(seq=replica.seq, put=put, delete=tuple(delete), meta=self._meta(replica))
        self.storage.apply(batch)
        self._point = point
        self._access = replica.access
        self.batches += 1
        return True

    def _changes_since(self, replica: Replica) -> list[Change] | None:
        """The changes after the last one stored, or None when that one is not
        in the replica's history (a snapshot replaced it) or log."""
        if self._point is None:
            return None
        recent = replica.log
        n = replica.seq - self._point[0]
        if 0 < n < len(recent):
            # The usual case, a few changes: read the log's end, not all of it.
            last = recent[-n - 1]
            if (last.seq, last.epoch, last.origin) == self._point:
                return [recent[i] for i in range(-n, 0)]
        return replica.changes_after(*self._point)

    def close(self) -> None:
        self.storage.close()


def _record(key: str, entry: Entry, ttl_left: dict[str, float], wall_now: float) -> StoredEntry:
    expires_at = 0.0
    if entry.ttl:
        expires_at = wall_now + ttl_left.get(key, entry.ttl)
    packed = entry.packed if entry.packed is not None else encode(entry.value)
    return StoredEntry(packed, entry.version, entry.owner, entry.flags, expires_at)
