"""Majorities and liveness: who a node can count on *now*.

A node decides from what it heard, never from a list it holds: a member
counts as live only when a message from it arrived within ``host_timeout``
and after this node last woke from a pause (what it handled while frozen
says nothing about now). The one switch between the two durability modes
is :func:`may_go_alone`."""

from __future__ import annotations

from collections.abc import Iterable

from .config import Config

__all__ = ["has_majority", "live_count", "majority", "may_go_alone"]


def majority(members: int) -> int:
    """How many of *members* make a majority (always at least one)."""
    return max(1, members) // 2 + 1


def has_majority(live: int, members: int) -> bool:
    """Whether *live* nodes (this one included) are a majority of the last
    agreed membership, *members* nodes (this one included)."""
    return live >= majority(members)


def live_count(heard: Iterable[float], now: float, woke_at: float, config: Config) -> int:
    """This node plus every member heard within ``host_timeout`` of *now*, by
    a message that came at least one heartbeat after *woke_at* (a backlog
    handled on waking from a pause is stale news)."""
    fresh_after = max(now - config.host_timeout, woke_at + config.heartbeat_interval)
    return 1 + sum(1 for at in heard if at >= fresh_after)


def may_go_alone(isolated_since: float | None, now: float, config: Config) -> bool:
    """The lone-node exception, in one place: a node that has reached no
    majority since *isolated_since* may host or acknowledge on its own once
    ``isolation_timeout`` has passed, unless durability is "majority"."""
    if config.durability == "majority" or isolated_since is None:
        return False
    return now - isolated_since >= config.lone_after
