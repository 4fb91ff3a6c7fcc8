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
    "Run",
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
    """A message for the adapter to deliver to node ``to`` at ``endpoints``;
    *fresh*: over a new connection of its own, not the link to ``to`` (a
    probe of a silent host: that link may be stuck in TCP's retransmission
    backoff after a blip, a new connection is not), the answer coming back
    over it (``failover.probe_silent_host``)."""

    to: str
    endpoints: tuple[str, ...]
    msg: Message
    fresh: bool = False


@dataclass(frozen=True, slots=True)
class Acked:
    """One of our writes the host acknowledged, and the change that holds it."""

    req: int
    seq: int
    epoch: int
    origin: str
    keys: tuple[str, ...]


@dataclass(slots=True)
class Run:
    """Acknowledged writes of ours kept without detail: requests ``first`` to
    ``last`` but those marked in ``gaps`` (bit i for request first + i: one
    not acknowledged with keys, or not in this history), all made by
    changes of one term (epoch, origin) after change ``after``, the last at
    ``last_seq``. A run costs the same for one write or a million, plus a
    bit a request from its first gap to its last (core/rollback.py)."""

    first: int
    last: int
    epoch: int
    origin: str
    after: int
    last_seq: int
    gaps: bytearray = field(default_factory=bytearray)

    @property
    def count(self) -> int:
        return self.last - self.first + 1 - int.from_bytes(self.gaps, "little").bit_count()

    def skip_to(self, req: int) -> None:
        """Extend the run to *req*, the requests between it and ``last`` gaps."""
        for gap in range(self.last + 1 - self.first, req - self.first):
            byte = gap >> 3
            if byte >= len(self.gaps):
                self.gaps.extend(bytes(byte + 1 - len(self.gaps)))
            self.gaps[byte] |= 1 << (gap & 7)
        self.last = req

    def split(self, cut: int) -> tuple[Run | None, Run | None]:
        """Its requests up to *cut* and those after, as runs (None for a
        part without a write)."""
        span = cut - self.first + 1
        bits = int.from_bytes(self.gaps, "little")
        low = Run(self.first, cut, self.epoch, self.origin, self.after, self.last_seq)
        low.gaps = bytearray((bits & ((1 << span) - 1)).to_bytes((span + 7) // 8, "little"))
        high = Run(cut + 1, self.last, self.epoch, self.origin, self.after, self.last_seq)
        rest = self.last - cut
        high.gaps = bytearray((bits >> span).to_bytes((rest + 7) // 8, "little"))
        return (low if span > 0 and low.count else None), (
            high if rest > 0 and high.count else None
        )


@dataclass(slots=True)
class Conn:
    """The host's view of one member's connection."""

    last_heard: float  # when its silence started to count (peer_timeout)
    synced: bool = False
    heard: Streak = field(default_factory=Streak)  # its messages, for liveness
    #: our epoch when we last welcomed it: what it sent before is of an
    #: older membership (a Leave held by TCP must not remove it now)
    epoch: int = 0
    seq: int = 0  # the last change of ours it said it holds (host.note_holds)
    #: it resent a write our successor was to answer: that answer does not
    #: reach it, so we answer its writes ourselves (host.release_durable)
    answer_writes: bool = False


@dataclass(slots=True)
class Fence:
    """Host: our successor was replaced from change *seq* on. Members that
    lack that change may still vote for *old*, which lacks what the new
    successor holds: its acknowledgements count once the members of
    *members* (the membership they may vote in) that lack *seq* are no
    majority of it. *since*: when the first fence of a nested run went up
    (``host.outwait_fence``)."""

    seq: int
    members: frozenset[str]
    old: str
    since: float


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
