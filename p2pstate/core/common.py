"""The small types and constants that the node's parts share: its roles, what
it sends, the host's view of a member's connection, where an acknowledged
write of ours sits, and the bounds on what a node remembers of strangers."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from ..messages import MAX_COUNTER, Message
from .quorum import Streak

__all__ = [
    "ACCESS_REFUSALS",
    "EPOCH_CEILING",
    "UNSYNCED",
    "Acked",
    "Conn",
    "Fence",
    "Role",
    "Send",
    "remember",
]


class Role(enum.Enum):
    IDLE = "idle"
    JOINING = "joining"
    PEER = "peer"
    HOST = "host"
    LEAVING = "leaving"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Send:
    """A message for the adapter to deliver to node ``to`` at ``endpoints``."""

    to: str
    endpoints: tuple[str, ...]
    msg: Message


@dataclass(frozen=True, slots=True)
class Acked:
    """One of our writes the host acknowledged, and the change that holds it."""

    req: int
    seq: int
    epoch: int
    origin: str
    keys: tuple[str, ...]


@dataclass(slots=True)
class Conn:
    """The host's view of one member's connection."""

    last_heard: float  # when its silence started to count (peer_timeout)
    synced: bool = False
    heard: Streak = field(default_factory=Streak)  # its messages, for liveness
    seq: int = 0  # the last change of ours it said it holds (host.note_holds)


@dataclass(slots=True)
class Fence:
    """Host: our successor was replaced from change *seq* on. Members that
    lack that change may still vote for *old*, which lacks what the new
    successor holds: its acknowledgements count once the members of
    *members* (the membership they may vote in) that lack *seq* are no
    majority of it."""

    seq: int
    members: frozenset[str]
    old: str


UNSYNCED = Conn(last_heard=0.0)

ACCESS_REFUSALS = ("banned", "not_authorized")
#: Epochs grow by one a change of host: no session comes near this, and a
#: wire number above it (a lie) could push a counter past what encodes.
EPOCH_CEILING = MAX_COUNTER >> 8
#: Node ids or identities a node remembers in rivals and foreign.
_REMEMBERED = 256


def remember(seen: dict[str, Any], key: str, value: Any) -> None:
    """Set *key* in an insertion-ordered dict bounded to _REMEMBERED entries."""
    seen.pop(key, None)
    seen[key] = value
    if len(seen) > _REMEMBERED:
        del seen[next(iter(seen))]
