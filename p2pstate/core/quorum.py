"""Majorities and liveness: who a node can count on *now*.

A node decides from what it heard, never from a list it holds: a member
counts as live only while it keeps talking: a *streak* of its messages, none
more than ``host_timeout`` apart, that lasts at least half a heartbeat
interval and has a message within ``host_timeout`` of now, and more than
``host_timeout`` after this node last woke from a pause. A burst of old
messages (what TCP held during a cut, or what waited while we were paused)
is not a streak: it is delivered at once (or, on a busy machine, read over
a while after waking), and the member it comes from may long have moved on. The one switch
between the two durability modes is :func:`may_go_alone`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .config import Config

__all__ = ["Streak", "has_majority", "is_live", "live_count", "majority", "may_go_alone"]

_NEVER = -1e18


@dataclass(slots=True)
class Streak:
    """When one member's current run of messages began, and its latest."""

    since: float = _NEVER
    last: float = _NEVER

    def hear(self, now: float, config: Config) -> None:
        if now - self.last > config.host_timeout:
            self.since = now  # a silence broke the streak: a new one starts
        self.last = now


def majority(members: int) -> int:
    """How many of *members* make a majority (always at least one)."""
    return max(1, members) // 2 + 1


def has_majority(live: int, members: int) -> bool:
    """Whether *live* nodes (this one included) are a majority of the last
    agreed membership, *members* nodes (this one included)."""
    return live >= majority(members)


def live_count(
    streaks: Iterable[Streak],
    now: float,
    woke_at: float,
    config: Config,
    *,
    within: float | None = None,
) -> int:
    """This node plus every member whose streak is live (see the module):
    heard within *within* seconds (default ``host_timeout``)."""
    return 1 + sum(1 for s in streaks if is_live(s, now, woke_at, config, within=within))


def is_live(
    streak: Streak, now: float, woke_at: float, config: Config, *, within: float | None = None
) -> bool:
    """Whether one member's streak is live (see :func:`live_count`)."""
    window = config.host_timeout if within is None else within
    # After a pause, what waited in our sockets comes first, and on a busy
    # machine it takes a while to read: a member counts only once it has
    # kept talking for host_timeout after we woke (a backlog has ended by then)
    fresh_after = max(now - window, woke_at + config.host_timeout)
    span = config.heartbeat_interval / 2
    return streak.last >= fresh_after and streak.last - streak.since >= span


def may_go_alone(isolated_since: float | None, now: float, config: Config) -> bool:
    """The lone-node exception, in one place: a node that has reached no
    majority since *isolated_since* may host or acknowledge on its own once
    ``isolation_timeout`` has passed, unless durability is "majority"."""
    if config.durability == "majority" or isolated_since is None:
        return False
    return now - isolated_since >= config.lone_after
