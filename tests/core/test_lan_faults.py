"""Issue 17, one test per row of its table, on the core under the simulator:
pauses and link cuts must not undo acknowledged writes, and what a merge
does undo is reported exactly."""

from __future__ import annotations

import pytest
from lanfaults import Party, party

from p2pstate.core.config import Config
from p2pstate.core.node import Role
from p2pstate.core.writer import Outcome
from p2pstate.events import IsolationChanged
from p2pstate.sim import SimNetwork

CONFIG = Config()


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


def test_a_game_of_two_goes_on_alone_after_the_isolation_timeout() -> None:
    """Default durability: the peer of a game of two dies; the host is
    isolated and its write waits, then after isolation_timeout it goes on."""
    net = SimNetwork(8)
    host, peer = net.add_node(), net.add_node()
    assert net.run_until(net.quiet, 5.0)
    net.crash(peer.me.id)
    net.run(CONFIG.host_timeout + 0.1)
    assert host.isolated
    out: list[Outcome] = []
    net.write(host.me.id, (("set", "k", 1),), (), out.append)
    net.run(CONFIG.lone_after - CONFIG.host_timeout)
    assert not out  # waits: no majority yet
    assert net.run_until(lambda: bool(out), CONFIG.lone_after), net.trace_tail()
    assert out[0].status == "ok" and not host.isolated
    assert IsolationChanged(isolated=True) in net.events[host.me.id]


def test_majority_durability_never_lets_a_minority_host() -> None:
    """durability="majority": the host of a game of two never goes on alone
    (its write waits for good), and a peer cut off alone never takes over;
    when the link is back it rejoins the host and nothing is undone."""
    config = Config(durability="majority")
    net = SimNetwork(9, config=config)
    host, peer = net.add_node(), net.add_node()
    third = net.add_node()
    assert net.run_until(net.quiet, 5.0)
    out: list[Outcome] = []
    net.cut(third.me.id)
    net.run(3 * config.lone_after)
    assert third.role is not Role.HOST and host.role is Role.HOST and not host.isolated
    net.write(third.me.id, (("set", "from-third", 1),), (), out.append)
    net.reconnect(third.me.id)
    assert net.run_until(lambda: bool(out) and net.quiet(), 10.0), net.trace_tail()
    assert out[0].status == "ok"
    net.crash(peer.me.id)
    net.crash(third.me.id)
    late: list[Outcome] = []
    net.write(host.me.id, (("set", "alone", 1),), (), late.append)
    net.run(3 * config.lone_after)
    assert host.isolated and not late  # never acknowledged by a minority


@pytest.mark.parametrize("seed", [12, 13, 15, 16])
def test_the_member_holding_more_takes_over_when_host_and_successor_are_cut(seed: int) -> None:
    """Host, successor, a peer and a writer. The peer is paused and misses
    changes the writer applied (its increments, acknowledged through the
    successor); as it wakes, host and successor are cut off past the
    isolation timeout. The peer is next in succession but holds less than
    the writer: taking over itself would undo the writer's acknowledged
    increments, report them, and a later merge with the host's side could
    bring them back (a report of writes that are not lost, issue 17). The
    writer takes over instead. Both sides go on alone; whichever wins the
    merge, the reports are exactly what it undid."""
    p = party(seed, players=4, writers=1)
    host, succ = p.host, p.successor()
    peer, writer = (n for n in p.nodes if n not in (host, succ))
    p.net.pause(peer.me.id)
    p.run(0.3)
    assert writer.replica.seq > peer.replica.seq
    p.net.resume(peer.me.id)
    p.net.cut(host.me.id)
    p.net.cut(succ.me.id)
    p.run(2.5 * CONFIG.lone_after)
    p.net.reconnect(host.me.id)
    p.net.reconnect(succ.me.id)
    p.check(may_lose=True)
    assert writer.me.id in p.net.hosts_by_epoch[2], p.net.trace_tail(60)


@pytest.mark.parametrize("seed", [3, 4, 6])
def test_a_host_woken_on_a_busy_machine_does_not_win_on_its_backlog(seed: int) -> None:
    """The host is paused 1.5 s and, woken on a busy machine, reads what
    waited in its sockets over 150 ms. Those old messages came in a row:
    counted as live members they gave it a majority, it won the merge over
    the successor that took over, and undid what that side acknowledged
    (seed 4: 219 undone, 220 reported; issue 17's host-pause rows on real
    processes). The successor's side stays."""
    p = party(seed)
    host = p.host
    p.net.pause(host.me.id)
    p.run(1.5)
    p.net.resume(host.me.id, drain=0.15)
    p.check()
    assert p.host is not host and sorted(p.net.hosts_by_epoch) == [1, 2], p.net.trace_tail(40)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_writing_host_cut_off_steps_down_before_discovery_shows_the_other(seed: int) -> None:
    """The host writes; its cable is out 1.5 s and the successor takes over.
    When the cable is back, TCP delivers at once what the successor sent it:
    acks, then its takeover notice. That burst made the successor look like
    a live member of ours, whose announcement is not weighed: the host stayed,
    went on alone after the isolation timeout and acknowledged its own writes
    until discovery (mDNS, slow on a real LAN; 30 s here) showed the other
    host: about 330 undone in every seed. It must weigh the notice and step
    down at once."""
    p = party(seed, writers=7, discovery_interval=30.0)
    host = p.host
    p.net.cut(host.me.id)
    p.run(1.5)
    p.net.reconnect(host.me.id)
    p.check()
    assert host.role is Role.PEER


@pytest.mark.parametrize("seed", [5, 13, 19])
def test_blips_on_the_hosts_link_with_late_delivery_leave_one_host_per_epoch(seed: int) -> None:
    """Issue 17's CI row host-blips: six 0.3 s cuts of the host's link, 0.4 s
    apart, each link delivering what it held up to 0.4 s later (TCP's
    retransmission backoff): up to 0.7 s of silence, so a successor may take
    over while the old host comes back. The old host stepped down to it,
    and when the new host blipped in turn, went back to hosting at the epoch
    it had just given way to (13, 19: two hosts at one epoch). Going back
    above it, writers that followed the new host then followed the old one,
    whose history lacked their acknowledged writes: reported undone, and
    silently restored when the new host won the merge (5: 11 reported, 5
    undone). Nothing may be reported that is not undone, nothing
    acknowledged undone (the next test), and an epoch has one host."""
    p = party(seed)
    for _ in range(6):
        host = p.host.me.id
        p.net.cut(host)
        p.run(0.3)
        p.net.reconnect(host, backoff=0.4)
        p.run(0.4)
    p.check()
    two = {epoch: sorted(ids) for (_, epoch), ids in p.net.hosts_by_term.items() if len(ids) > 1}
    assert not two, (two, p.net.trace_tail(60))


def test_a_player_who_leaves_does_not_leave_the_host_isolated() -> None:
    """A game of two: the peer leaves on purpose (`p2pstate set` from the
    command line joins, writes and leaves). Its Leave is agreed by the one
    who leaves: the host must not count it as a lost member, go isolated and
    hold the next player's writes for isolation_timeout."""
    net = SimNetwork(9)
    host, peer = net.add_node(), net.add_node()
    assert net.run_until(net.quiet, 5.0)
    net.leave(peer.me.id)
    net.run(CONFIG.host_timeout + 0.5)
    assert not host.isolated, net.trace_tail()
    newcomer = net.add_node()
    out: list[Outcome] = []
    assert net.run_until(lambda: newcomer.role is Role.PEER, 2.0), net.trace_tail()
    net.write(newcomer.me.id, (("set", "k", 1),), (), out.append)
    assert net.run_until(lambda: bool(out), CONFIG.host_timeout), net.trace_tail()
    assert out[0].status == "ok"
    assert IsolationChanged(isolated=True) not in net.events[host.me.id]


def _blips(p: Party, times: int, cut: float, backoff: float, gap: float) -> None:
    """Cut the host's link *times* times, each for *cut* seconds, its links
    delivering what they held up to *backoff* seconds late."""
    for _ in range(times):
        p.run_until_one_host()
        host = p.host.me.id
        p.net.cut(host)
        p.run(cut)
        p.net.reconnect(host, backoff=backoff)
        p.run(gap)


@pytest.mark.parametrize("seed", [6, 8, 17, 19, 21, 24, 28, 29])
def test_late_delivered_blips_of_the_hosts_link_undo_nothing_acknowledged(seed: int) -> None:
    """Six 0.3 s cuts of the host's link with late delivery (issue 17's
    host-blips row). Links are asymmetric while they deliver what they
    held: a peer whose messages reach the host while the host's do not
    reach it votes for the successor, and the host counts it live for
    host_timeout more. Two ways that undid acknowledged writes: (6, 17,
    28) the old host removed its successor, silent to it because it was
    gathering votes, and acknowledged with the next member, while the old
    one took over without those writes; (8, 19, 21, 24, 29) the host that
    took over with a majority's votes stepped down to the old host, which
    still counted the voters live, and its own writes were undone."""
    p = party(seed)
    _blips(p, times=6, cut=0.3, backoff=0.4, gap=0.4)
    p.check()
