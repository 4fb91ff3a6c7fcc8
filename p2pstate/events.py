"""What a SharedState reports: small frozen dataclasses, delivered through
``SharedState.poll()`` and ``on_change`` callbacks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Event",
    "Expelled",
    "HostChanged",
    "IsolationChanged",
    "KeyChanged",
    "KeyDeleted",
    "Message",
    "Peer",
    "PeerJoined",
    "PeerLeft",
    "PeerUpdated",
    "RolledBackWrite",
    "WritesRestored",
    "WritesRolledBack",
]


@dataclass(frozen=True, kw_only=True)
class Peer:
    """One member of a session."""

    id: str
    name: str
    endpoint: str
    endpoints: tuple[str, ...] = ()
    joined_seq: int = 0
    #: When it joined, in seconds since the Unix epoch (by its own clock).
    joined_at: float = 0.0
    is_host: bool = False
    profile: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True, kw_only=True)
class KeyChanged:
    key: str
    value: Any
    version: int


@dataclass(frozen=True, kw_only=True)
class KeyDeleted:
    key: str
    version: int


@dataclass(frozen=True, kw_only=True)
class PeerJoined:
    peer: Peer


@dataclass(frozen=True, kw_only=True)
class PeerLeft:
    peer: Peer
    reason: str  # "left", "timeout" or "failed" (a host that died)


@dataclass(frozen=True, kw_only=True)
class PeerUpdated:
    """A peer changed its profile (``SharedState.set_profile``)."""

    peer: Peer


@dataclass(frozen=True, kw_only=True)
class Message:
    """A message from ``broadcast`` (``to`` is None) or ``send`` (``to`` is our id)."""

    sender: Peer
    payload: Any
    to: str | None = None


@dataclass(frozen=True, kw_only=True)
class HostChanged:
    old: Peer | None
    new: Peer
    epoch: int


@dataclass(frozen=True, kw_only=True)
class RolledBackWrite:
    """One write that a merge of two halves of a split session undid."""

    writer: str
    request: int
    keys: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class WritesRolledBack:
    """Two hosts of one session met and this peer's half gave way to the other:
    these acknowledged writes were undone. ``mine`` lists the ones this peer made.
    ``more`` counts this peer's writes undone besides those listed: a peer
    keeps the details of its latest 4,096 acknowledged writes only, and
    older ones by number, so a long session's memory stays bounded."""

    writes: tuple[RolledBackWrite, ...]
    mine: tuple[RolledBackWrite, ...]
    more: int = 0


@dataclass(frozen=True, kw_only=True)
class WritesRestored:
    """A later merge brought back writes that a :class:`WritesRolledBack`
    reported undone: the history that won holds them after all (the session
    changed host more than once while its halves met). The writes undone are
    those reported rolled back and not restored since. It also names a write
    a host declined (a conflict, say) that the history that won applied: a
    host of the other half applied it, and its answer was lost. ``more``
    counts the writes brought back besides those listed (reported in a
    ``more``)."""

    writes: tuple[RolledBackWrite, ...]
    mine: tuple[RolledBackWrite, ...]
    more: int = 0


@dataclass(frozen=True, kw_only=True)
class Expelled:
    """This peer may no longer be in the session and was removed from it:
    ``reason`` is "banned" (the admin banned its identity) or
    "not_authorized" (the session's readmode no longer lets it in). Later
    writes raise BannedError or PermissionDeniedError; reads show the state
    as it was."""

    reason: str


@dataclass(frozen=True, kw_only=True)
class IsolationChanged:
    """This copy hosts and has heard from no majority of its session within
    ``host_timeout`` (``isolated``: its cable is out, it was paused, the others
    are gone), or hears from one again. While isolated it acknowledges no
    write (they wait) and removes nobody; it goes on alone after
    ``isolation_timeout`` unless durability is "majority"."""

    isolated: bool


Event = (
    KeyChanged
    | KeyDeleted
    | PeerJoined
    | PeerLeft
    | PeerUpdated
    | HostChanged
    | Message
    | WritesRolledBack
    | WritesRestored
    | Expelled
    | IsolationChanged
)
