"""Issue 17, one test per row of its table, on the core under the simulator:
pauses and link cuts must not undo acknowledged writes, and what a merge
does undo is reported exactly."""

from __future__ import annotations

import pytest
from lanfaults import party

from p2pstate.core.node import Role


@pytest.mark.parametrize("seconds", [0.6, 1.0, 1.5, 3.0, 8.0, 20.0])
def test_host_paused(seconds: float) -> None:
    p = party(1)
    host = p.host
    p.net.pause(host.me.id)
    p.run(seconds)
    p.net.resume(host.me.id)
    p.check()


def test_host_and_successor_paused_together() -> None:
    """Two at once: the rest (a majority) go on; what only the paused pair
    held may be undone, and is then reported exactly."""
    p = party(2)
    host, succ = p.host, p.successor()
    p.net.pause(host.me.id)
    p.net.pause(succ.me.id)
    p.run(1.5)
    p.net.resume(host.me.id)
    p.net.resume(succ.me.id)
    p.check(may_lose=True)


def test_host_closes_while_its_successor_is_paused() -> None:
    p = party(3)
    host, succ = p.host, p.successor()
    p.net.pause(succ.me.id)
    p.run(0.2)
    p.net.leave(host.me.id)
    p.run(3.0)
    p.net.resume(succ.me.id)
    p.check()


@pytest.mark.parametrize("seconds", [1.2, 2.0])
def test_a_writers_link_cut(seconds: float) -> None:
    p = party(4)
    w = p.writer()
    p.net.cut(w.me.id)
    p.run(seconds)
    p.net.reconnect(w.me.id)
    p.check()


@pytest.mark.parametrize("seconds", [0.8, 1.5, 3.0])
def test_the_successors_link_cut(seconds: float) -> None:
    p = party(5)
    succ = p.successor()
    p.net.cut(succ.me.id)
    p.run(seconds)
    p.net.reconnect(succ.me.id)
    p.check()


def test_repeated_short_blips_on_the_hosts_link_cause_no_failover() -> None:
    p = party(6)
    host = p.host
    for _ in range(5):
        p.net.cut(host.me.id)
        p.run(0.3)
        p.net.reconnect(host.me.id)
        p.run(0.5)
    p.check()
    assert p.host is host and host.epoch == 1


def test_the_link_of_a_host_that_writes_cut() -> None:
    """The host writes too; cut off, it must stop acknowledging its own
    writes (it has no majority), so the others' takeover undoes nothing."""
    p = party(7, writers=7)
    host = p.host
    p.net.cut(host.me.id)
    p.run(1.5)
    p.net.reconnect(host.me.id)
    p.check()
    assert host.role is Role.PEER
