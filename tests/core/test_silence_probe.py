"""Issue 17: a blip below host_timeout causes no failover.

After a short cut of a link, TCP's retransmissions back off and the old
connection stays silent for a while (the simulator's ``reconnect(backoff=)``
delivers what it held that late). A peer whose host is silent probes it over
a fresh connection (``failover.probe_silent_host``), which is not stuck
behind that backlog, and a live host's answer counts as heard; a frozen or
unreachable host answers nothing and is lost after host_timeout and the
probe window (``suspect_after``). Times are simulated seconds."""

from __future__ import annotations

import pytest
from lanfaults import Party, party

from p2pstate.core.config import Config
from p2pstate.core.node import Node, Role

CONFIG = Config()
WINDOW = CONFIG.suspect_after


def _epochs(p: Party) -> set[int]:
    return {n.epoch for n in p.net.live_nodes()}


def _more_acked(p: Party, seconds: float) -> int:
    before = p.acked()
    p.run(seconds)
    return p.acked() - before


@pytest.mark.parametrize("seconds", [0.3, 0.38, 0.45])
@pytest.mark.parametrize("seed", range(4))
def test_a_short_cut_of_the_hosts_link_is_no_failover(seed: int, seconds: float) -> None:
    """The host's link cut below host_timeout, its old connections silent up
    to 0.8 s more: every peer's probe is answered, nobody takes over, and
    writes go on. The host, which hears no member on the old connections
    either, takes each probe as its member's word (a Hello it welcomes,
    which counts as heard). (A member whose own link to the host stays
    silent while it hears the host probes nothing, and may be removed after
    peer_timeout and say hello again: no failover, nothing lost.)"""
    p = party(seed)
    host = p.host
    welcomed = host.stats["welcome_catchup"]
    p.net.cut(host.me.id)
    p.run(seconds)
    p.net.reconnect(host.me.id, backoff=0.8)
    p.run(1.2)
    assert p.host is host and _epochs(p) == {1}, p.net.trace_tail(60)
    assert set(p.net.hosts_by_epoch) == {1}
    assert all(n.role is Role.PEER for n in p.nodes[1:]), p.net.trace_tail(60)
    assert len(host.replica.members) == len(p.nodes)
    assert host.stats["welcome_catchup"] > welcomed
    assert sum(n.stats["probe_answered"] for n in p.nodes) > 0
    assert _more_acked(p, 0.5) > 0
    p.check()
    assert _epochs(p) == {1}


@pytest.mark.parametrize("seed", range(4))
def test_repeated_blips_with_late_delivery_are_no_failover(seed: int) -> None:
    """Six 0.3 s cuts 0.4 s apart, each link delivering what it held up to
    0.8 s later: the host's old connections are silent most of the time;
    its fresh ones answer every probe."""
    p = party(seed)
    host = p.host
    for _ in range(6):
        p.net.cut(host.me.id)
        p.run(0.3)
        p.net.reconnect(host.me.id, backoff=0.8)
        p.run(0.4)
    p.check()
    assert p.host is host and _epochs(p) == {1}, p.net.trace_tail(60)


def _took_over(p: Party, old: Node, fault_seconds: float, cut: bool) -> float:
    """Pause or cut *old* (the host) and return how long until another hosts."""
    start = p.net.now
    if cut:
        p.net.cut(old.me.id)
    else:
        p.net.pause(old.me.id)

    def other_hosts() -> bool:
        return any(n.role is Role.HOST and n is not old for n in p.net.live_nodes())

    assert p.net.run_until(other_hosts, fault_seconds), p.net.trace_tail(60)
    took = p.net.now - start
    p.run(fault_seconds - took)
    if cut:
        p.net.reconnect(old.me.id)
    else:
        p.net.resume(old.me.id)
    return took


@pytest.mark.parametrize("cut", [False, True], ids=["frozen", "cut"])
@pytest.mark.parametrize("seed", range(4))
def test_a_frozen_or_cut_off_host_is_lost_after_host_timeout_and_the_window(
    seed: int, cut: bool
) -> None:
    """No probe is answered: the successor hosts once the host was silent
    for host_timeout and the window, plus the votes (message delays, a
    tick of 10 ms, half a heartbeat for a voter's streak), no sooner."""
    p = party(seed)
    old = p.host
    took = _took_over(p, old, 1.5, cut)
    assert CONFIG.host_timeout + WINDOW <= took <= CONFIG.host_timeout + WINDOW + 0.1, took
    p.check()
    assert p.host is not old and old.role is Role.PEER
    assert sum(n.stats["probe_answered"] for n in p.nodes) == 0


def test_a_probing_peer_asks_to_be_ticked_for_its_next_probe() -> None:
    """The runtime sleeps until ``next_deadline``: while a peer probes, that
    is its next probe (or the loss of its host), not a later tick."""
    p = party(1)
    p.net.pause(p.host.me.id)
    peer = p.nodes[-1]
    assert p.net.run_until(lambda: peer.probe_at is not None, 1.0)
    probed = peer.probe_at
    assert probed is not None
    p.net.run(WINDOW * 2 / 3)  # a tick would come later than the next probe is due
    assert peer.probe_at == probed and peer.stats["silence_probes"] == 1
    assert peer.next_deadline(p.net.now) == pytest.approx(probed + WINDOW)
