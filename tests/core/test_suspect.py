"""A crashed host is replaced within the suspect window (issue 14, goal 6).

When a host's process dies, its kernel resets its connections and every
peer's transport reports the drop at once (``Node.suspect``). That is a
suspicion: the peer probes its host and takes it for lost only if it does
not answer within ``suspect_after``; the successor then takes over on the
others' votes, under the usual quorum rule. A reset of a live host's
connections (a blip) changes nothing, and a silent crash is still found by
host_timeout. Times here are simulated seconds: deterministic."""

from __future__ import annotations

import pytest
from simsession import CONFIG, Session

from p2pstate.core.node import Node, Role
from p2pstate.sim import Counter

WINDOW = CONFIG.suspect_after
#: A failover after a reset waits for the window, the votes (a few message
#: delays) and, in the simulator, the next tick of 10 ms.
RESET_FAILOVER = WINDOW + 0.03


def _other_host(s: Session, old: Node) -> bool:
    hosts = [n for n in s.live() if n.role is Role.HOST]
    return len(hosts) == 1 and hosts[0] is not old


def _new_host_after(s: Session, old: Node, *, reset: bool) -> float:
    start = s.net.now
    s.net.crash(old.me.id, reset=reset)
    assert s.run_until(lambda: _other_host(s, old), 5.0), s.tail()
    return s.net.now - start


@pytest.mark.parametrize("players", [3, 4, 7])
@pytest.mark.parametrize("seed", range(8))
def test_crash_with_reset_gives_a_new_host_within_the_window(seed: int, players: int) -> None:
    s = Session(seed)
    nodes = s.start(players)
    s.net.run(0.3)
    took = _new_host_after(s, nodes[0], reset=True)
    assert took <= RESET_FAILOVER, (took, s.tail())
    new = s.host()
    assert new is nodes[1], s.tail()  # the successor, as after a timeout
    # and the session works: a survivor's write is acknowledged
    assert s.put(nodes[-1], "after", 1).status == "ok", s.tail()
    assert s.settle(), s.tail()
    assert len(s.digests()) == 1


@pytest.mark.parametrize("seed", range(4))
def test_silent_crash_still_waits_for_host_timeout(seed: int) -> None:
    """The control: no reset, no suspicion; the heartbeat timeout finds it."""
    s = Session(seed)
    nodes = s.start(3)
    s.net.run(0.3)
    took = _new_host_after(s, nodes[0], reset=False)
    assert took > CONFIG.host_timeout, (took, s.tail())
    assert sum(n.stats["suspected"] for n in s.live()) == 0


@pytest.mark.parametrize("players", [2, 3, 5])
@pytest.mark.parametrize("seed", range(8))
def test_a_reset_while_the_host_lives_changes_nothing(seed: int, players: int) -> None:
    """A blip: every link to the host resets, the host is alive and answers
    the probes; nobody takes over, and writes go on."""
    s = Session(seed)
    nodes = s.start(players)
    host = nodes[0]
    epoch = host.epoch
    for _ in range(3):
        s.net.run(0.2)
        s.net.reset_links(host.me.id)
        s.net.run(3 * WINDOW)
    assert s.host() is host and host.epoch == epoch, s.tail()
    assert all(n.role is Role.PEER for n in nodes[1:]), s.tail()
    assert sum(n.stats["suspected"] for n in nodes) == 3 * (players - 1)
    assert sum(n.stats["suspicion_cleared"] for n in nodes) == 3 * (players - 1)
    assert s.put(nodes[-1], "still", 1).status == "ok", s.tail()


@pytest.mark.parametrize("seed", range(6))
def test_counters_stay_exact_through_crashes_with_reset(seed: int) -> None:
    """Four writers count through two crashes of the host with reset, one
    after the other: no acknowledged increment is lost or doubled."""
    s = Session(seed)
    nodes = s.start(6)
    counters = [Counter(s.net, n.me.id, "count", 40) for n in nodes[2:]]

    def pump() -> bool:
        for c in counters:
            c.pump()
        return False

    for _ in range(2):
        s.net.run_until(pump, 0.3)
        s.net.crash(s.host().me.id, reset=True)
        s.net.run_until(pump, 0.3)

    def done() -> bool:
        pump()
        return all(c.left == 0 for c in counters) and s.net.quiet()

    assert s.run_until(done, 30.0), s.tail()
    host = s.host()
    assert host.replica.data["count"].value == sum(c.acked for c in counters) == 160


def test_a_paused_successor_makes_the_others_wait_for_a_majority() -> None:
    """Crash with reset while the successor is paused: two of five remain
    reachable votes plus the paused one; the quorum rule still holds (the
    next standing member takes over only with a majority of votes)."""
    s = Session(3)
    nodes = s.start(5)
    s.net.run(0.3)
    s.net.pause(nodes[1].me.id)
    s.net.crash(nodes[0].me.id, reset=True)
    assert s.run_until(lambda: any(n.role is Role.HOST for n in nodes[2:]), 5.0), s.tail()
    s.net.resume(nodes[1].me.id)
    assert s.settle(), s.tail()
    assert s.host() is not nodes[0] and len(s.digests()) == 1


@pytest.mark.parametrize("seed", range(6))
def test_a_host_that_hands_over_and_closes_is_never_taken_for_lost(seed: int) -> None:
    """A host leaves on purpose and its process ends, resetting its links:
    the peers follow the successor it chose (its notice, or its answer to
    their question), and none of them fails over on the suspicion."""
    s = Session(seed)
    nodes = s.start(4)
    s.net.run(0.3)
    s.net.leave(nodes[0].me.id)
    s.net.reset_links(nodes[0].me.id)
    assert s.settle(), s.tail()
    assert s.host() is nodes[1], s.tail()
    assert all(n.stats["host_lost"] == 0 for n in nodes[1:]), s.tail()
