"""What a SharedState reads: an immutable view of the replica, published by
the I/O thread after each pass that changed something.

User threads never read the core's live structures (the I/O thread mutates
them while it runs); they read the latest ``View``, and one attribute read
gives one moment: the entries, the members, the host, the role and the access
rules all belong together.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .core.access import Access
from .core.node import Node, Role
from .core.replica import Entry
from .events import Peer
from .messages import Member

__all__ = ["View", "ViewPublisher"]


@dataclass(frozen=True, slots=True)
class View:
    """One moment of a replica, never changed after it is made."""

    entries: Mapping[str, Entry]
    members: tuple[Member, ...]
    me: Member
    host_id: str
    role: Role
    epoch: int
    info: Mapping[str, Any]
    access: Access

    def peer(self, member: Member) -> Peer:
        return Peer(
            id=member.id,
            name=member.name,
            endpoint=member.endpoints[0] if member.endpoints else "",
            endpoints=member.endpoints,
            joined_seq=member.joined_seq,
            joined_at=member.joined_at,
            is_host=member.id == self.host_id,
            profile=dict(member.profile),
        )

    def member(self, node_id: str) -> Member | None:
        for m in self.members:
            if m.id == node_id:
                return m
        return None


class ViewPublisher:
    """Builds a new View only when the node changed since the last one.

    The replica replaces its ``info`` and ``access`` objects on every change
    and numbers every change of its entries (or replaces the dict whole), so
    identities and the sequence number tell what changed without a scan; the
    entries are copied only when they did. Entries themselves are never
    changed in place (a write makes a new Entry), so the copy can share them.
    """

    def __init__(self, node: Node) -> None:
        self._node = node
        # The live objects the last view was made from: kept, so that an
        # identity check can never match a new object at a reused address.
        self._data: object = None
        self._data_mark: tuple[int, int] = (-1, -1)
        self._members: tuple[Member, ...] = ()
        self._info: object = None
        self.view = self._build(None)

    def publish(self) -> bool:
        """Make a new view if anything a reader sees changed; True if it did."""
        node, replica = self._node, self._node.replica
        view = self.view
        data_changed = replica.data is not self._data or self._data_mark != (
            replica.seq,
            len(replica.data),
        )
        if not (
            data_changed
            or not _same(replica.members, self._members)
            or node.me is not view.me
            or replica.host_id != view.host_id
            or node.role is not view.role
            or node.epoch != view.epoch
            or replica.access is not view.access
            or replica.info is not self._info
        ):
            return False
        self.view = self._build(None if data_changed else view.entries)
        return True

    def _build(self, entries: Mapping[str, Entry] | None) -> View:
        node, replica = self._node, self._node.replica
        if entries is None:
            self._data = replica.data
            self._data_mark = (replica.seq, len(replica.data))
            entries = MappingProxyType(dict(replica.data))
        self._members = tuple(replica.members)
        self._info = replica.info
        return View(
            entries=entries,
            members=self._members,
            me=node.me,
            host_id=replica.host_id,
            role=node.role,
            epoch=node.epoch,
            info=MappingProxyType(dict(replica.info)),
            access=replica.access,
        )


def _same(live: list[Member], kept: tuple[Member, ...]) -> bool:
    # By identity: a profile change replaces the Member, and Member's
    # equality ignores the profile.
    return len(live) == len(kept) and all(a is b for a, b in zip(live, kept, strict=True))
