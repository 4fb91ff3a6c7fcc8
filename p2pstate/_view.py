"""What a SharedState reads: an immutable view of the replica, published by
the I/O thread after each pass that changed something.

User threads never read the core's live structures (the I/O thread mutates
them while it runs); they read the latest ``View``, and one attribute read
gives one moment: the entries, the members, the host, the role and the access
rules all belong together.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .core.access import Access
from .core.node import Node, Role
from .core.replica import Entry, peer_of
from .events import Peer
from .messages import Member

__all__ = ["Entries", "View", "ViewPublisher"]


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
    isolated: bool

    def peer(self, member: Member) -> Peer:
        return peer_of(member, self.host_id)

    def member(self, node_id: str) -> Member | None:
        for m in self.members:
            if m.id == node_id:
                return m
        return None


class Entries(Mapping[str, Entry]):
    """The entries of one view: a frozen base and the frozen changes since
    (None for a key deleted). Neither dict is changed once made, so this
    mapping never changes either; a later view shares the base."""

    __slots__ = ("_base", "_delta", "_len")

    def __init__(self, base: dict[str, Entry], delta: dict[str, Entry | None], size: int) -> None:
        self._base, self._delta, self._len = base, delta, size

    def __getitem__(self, key: str) -> Entry:
        delta = self._delta
        if key in delta:
            entry = delta[key]
            if entry is None:
                raise KeyError(key)
            return entry
        return self._base[key]

    def get(self, key: str, default: Any = None) -> Any:
        entry = self._delta.get(key, _ABSENT)
        if entry is _ABSENT:
            return self._base.get(key, default)
        return default if entry is None else entry

    def __contains__(self, key: object) -> bool:
        entry = self._delta.get(key, _ABSENT)  # type: ignore[call-overload]
        return key in self._base if entry is _ABSENT else entry is not None

    def __iter__(self) -> Iterator[str]:
        delta = self._delta
        if not delta:
            yield from self._base
            return
        for key in self._base:
            if key not in delta:
                yield key
        for key, entry in delta.items():
            if entry is not None:
                yield key

    def __len__(self) -> int:
        return self._len


_ABSENT: Any = object()


class _Tracked(dict[str, Entry]):
    """The replica's entries, noting which keys the core changes, so that a
    new view copies only those. Every mutating method is covered."""

    dirty: set[str]

    def __init__(self, data: dict[str, Entry]) -> None:
        super().__init__(data)
        self.dirty = set()

    def __setitem__(self, key: str, entry: Entry) -> None:
        self.dirty.add(key)
        super().__setitem__(key, entry)

    def __delitem__(self, key: str) -> None:
        self.dirty.add(key)
        super().__delitem__(key)

    def pop(self, key: str, *default: Any) -> Any:
        self.dirty.add(key)
        return super().pop(key, *default)

    def popitem(self) -> tuple[str, Entry]:
        key, entry = super().popitem()
        self.dirty.add(key)
        return key, entry

    def setdefault(self, key: str, default: Any = None) -> Any:
        self.dirty.add(key)
        return super().setdefault(key, default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        changes = dict(*args, **kwargs)
        self.dirty.update(changes)
        super().update(changes)

    def clear(self) -> None:
        self.dirty.update(self)
        super().clear()

    def __ior__(self, other: Any) -> _Tracked:  # type: ignore[override,misc]
        self.update(other)
        return self


class ViewPublisher:
    """Builds a new View only when the node changed since the last one.

    The replica replaces its ``info`` and ``access`` objects on every change;
    its entries dict is replaced by one that notes the keys the core changes
    (or the core replaces it whole: then everything is copied once). A new
    view copies only the keys changed since the last full copy, and makes a
    full copy again once those grow past about the square root of the size,
    so a pass that changes a few keys of a large state stays cheap. Entries
    themselves are never changed in place (a write makes a new Entry), so
    every copy can share them.
    """

    def __init__(self, node: Node) -> None:
        self._node = node
        # The live objects the last view was made from: kept, so that an
        # identity check can never match a new object at a reused address.
        self._data: _Tracked | None = None
        self._members: tuple[Member, ...] = ()
        self._info: object = None
        self.view = self._build(self._entries())

    def publish(self) -> bool:
        """Make a new view if anything a reader sees changed; True if it did."""
        node, replica = self._node, self._node.replica
        view = self.view
        data_changed = replica.data is not self._data or bool(self._data.dirty)
        if not (
            data_changed
            or not _same(replica.members, self._members)
            or node.me is not view.me
            or replica.host_id != view.host_id
            or node.role is not view.role
            or node.epoch != view.epoch
            or node.isolated != view.isolated
            or replica.access is not view.access
            or replica.info is not self._info
        ):
            return False
        self.view = self._build(self._entries() if data_changed else view.entries)
        return True

    def _entries(self) -> Entries:
        replica = self._node.replica
        data = self._data
        if data is None or replica.data is not data:
            data = self._data = _Tracked(replica.data)
            replica.data = data
            return Entries(dict(data), {}, len(data))
        dirty, data.dirty = data.dirty, set()
        old = self.view.entries
        assert isinstance(old, Entries)
        delta = dict(old._delta)
        for key in dirty:
            delta[key] = data.get(key)
        if len(delta) * len(delta) > max(4096, len(data)):
            return Entries(dict(data), {}, len(data))  # a full copy again
        return Entries(old._base, delta, len(data))

    def _build(self, entries: Mapping[str, Entry]) -> View:
        node, replica = self._node, self._node.replica
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
            isolated=node.isolated,
        )


def _same(live: list[Member], kept: tuple[Member, ...]) -> bool:
    # By identity: a profile change replaces the Member, and Member's
    # equality ignores the profile.
    return len(live) == len(kept) and all(a is b for a, b in zip(live, kept, strict=True))
