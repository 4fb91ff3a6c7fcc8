"""Timing and size settings of one node. Times are in seconds of the caller's
monotonic clock: the core never reads a clock itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Config", "Durability"]

#: "default": a peer cut off from the majority of its session may go on alone
#: after ``isolation_timeout`` (the last player of a game keeps playing);
#: "majority": never, so nothing acknowledged is undone even by a true split.
Durability = Literal["default", "majority"]


@dataclass(frozen=True, kw_only=True)
class Config:
    #: How often the host and its peers send a heartbeat when idle.
    heartbeat_interval: float = 0.1
    #: A host silent this long is taken for dead and the next peer takes over.
    host_timeout: float = 0.5
    #: A peer silent this long is removed by the host.
    peer_timeout: float = 0.5
    #: How long a peer whose connection to its host dropped (the transport
    #: saw it reset: ``Node.suspect``) waits for the host to answer its probe
    #: before it takes the host for lost. A reset is a suspicion, not proof:
    #: a host that is alive answers within a reconnect and a round trip.
    #: None: 60 ms, kept from half a heartbeat (so that the probe and the
    #: vote that follows it make a streak at the successor, core/quorum.py;
    #: the rest is slack for the two messages' jitter) to host_timeout.
    suspect_timeout: float | None = None
    #: How often a joining peer repeats its hello.
    hello_retry: float = 0.1
    #: A write unanswered this long is sent again (the host drops duplicates).
    write_retry: float = 0.3
    #: How long a leaving node waits for its goodbye to be confirmed.
    leave_timeout: float = 1.0
    #: Largest encoded value accepted in a write.
    max_value_size: int = 64 * 1024
    #: Changes kept for peers that reconnect and catch up instead of resyncing.
    log_keep: int = 4096
    #: Bytes of changes kept in that log (values counted as max_total_bytes
    #: counts them): the oldest go past it; a bigger change is not kept.
    log_bytes: int = 32 * 1024 * 1024
    #: Bytes of the mDNS record the session's settings may take (see
    #: core/advert.py); the runtime works it out from the app and session names.
    advert_room: int = 900
    #: The largest snapshot a newcomer can take (max_frame_size): the host
    #: refuses writes that would make the state outgrow it (see core/bounds.py).
    max_snapshot_bytes: int = 16 * 1024 * 1024
    #: How long a node that reaches no majority of its session (a pulled
    #: cable, a pause, everyone else gone) waits before it goes on alone, in
    #: the "default" durability; None: eight ``host_timeout``s. Eight, not
    #: fewer: a cable out for 1.5 s silences TCP for about 2.2 s (its
    #: retransmissions back off), and a lone host must not go on in that.
    isolation_timeout: float | None = None
    #: Whether a lone node may ever host or acknowledge (see ``Durability``).
    durability: Durability = "default"

    @property
    def lone_after(self) -> float:
        """The isolation timeout in seconds."""
        if self.isolation_timeout is not None:
            return self.isolation_timeout
        return 8 * self.host_timeout

    @property
    def suspect_after(self) -> float:
        """The suspect timeout in seconds."""
        wanted = 0.06 if self.suspect_timeout is None else self.suspect_timeout
        return max(self.heartbeat_interval / 2, min(wanted, self.host_timeout))

    def __post_init__(self) -> None:
        for name in (
            "heartbeat_interval",
            "host_timeout",
            "peer_timeout",
            "hello_retry",
            "write_retry",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.host_timeout <= self.heartbeat_interval:
            raise ValueError("host_timeout must be longer than heartbeat_interval")
        if self.peer_timeout <= self.heartbeat_interval:
            raise ValueError("peer_timeout must be longer than heartbeat_interval")
        if self.max_value_size <= 0 or self.log_keep <= 0 or self.log_bytes <= 0:
            raise ValueError("max_value_size, log_keep and log_bytes must be positive")
        if self.isolation_timeout is not None and self.isolation_timeout < self.host_timeout:
            raise ValueError("isolation_timeout must be at least host_timeout")
        if self.suspect_timeout is not None and self.suspect_timeout <= 0:
            raise ValueError("suspect_timeout must be positive")
        if self.durability not in ("default", "majority"):
            raise ValueError('durability must be "default" or "majority"')
