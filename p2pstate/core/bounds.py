"""How big a snapshot of the state can get: the host holds the state to what
one frame (max_frame_size) carries, so a newcomer can always take it. Pure
functions, no I/O.

Values and profiles count as ``max_total_bytes`` counts them; keys, owners
and member records by their length plus a fixed overhead each (kept in
``Replica.record_bytes``); the access lists, terms and writers by count at
their widest; the rest (settings, ids, headers) within a fixed reserve."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..messages import MAX_ID_CHARS, Member
from .access import MAX_IDENTITY_CHARS

if TYPE_CHECKING:
    from .replica import Replica

__all__ = ["ENTRY_BYTES", "NEW_KEY_BYTES", "key_bytes", "member_bytes", "snapshot_bytes"]

#: A key's entry besides its key, owner and value: version, flags, ttl, headers.
ENTRY_BYTES = 24
#: What a key a write adds counts for besides its name (its owner at its widest).
NEW_KEY_BYTES = ENTRY_BYTES + MAX_ID_CHARS
#: A member besides its id, name, endpoints and profile: numbers and headers.
_MEMBER_BYTES = 40
#: The settings (about the size of their mDNS record), session and host ids,
#: numbers, and the Welcome and frame around the snapshot.
_FIXED_BYTES = 2048


def key_bytes(key: str, owner: str) -> int:
    return len(key) + len(owner) + ENTRY_BYTES


def member_bytes(member: Member) -> int:
    """A member's record besides its profile (which counts in max_total_bytes)."""
    ends = sum(len(e) + 2 for e in member.endpoints)
    return len(member.id) + len(member.name.encode()) + ends + _MEMBER_BYTES


def snapshot_bytes(replica: Replica, data_bytes: int, record_bytes: int) -> int:
    """An upper estimate of a snapshot of *replica* were its values and
    profiles to take *data_bytes* and its keys and members *record_bytes*."""
    access = replica.access
    lists = (len(access.authorized) + len(access.banned)) * (MAX_IDENTITY_CHARS + 3)
    history = (len(replica.terms) + len(replica.dedupe)) * (MAX_ID_CHARS + 32)
    return data_bytes + record_bytes + lists + history + _FIXED_BYTES
