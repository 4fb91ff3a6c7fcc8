"""Red-team schedules of the failover and merge rules (issue 17, issue 16
item 1): the schedule families of redteam.py over sessions of 2, 3, 4 and 7
players in both durability modes, and the defects they found, each pinned
as a targeted scenario. Reproduce one schedule with::

    PYTHONPATH=. python -c "import sys; sys.path.insert(0, 'tests/core'); \\
        from redteam import run_red_schedule; run_red_schedule(SEED)"
"""

from __future__ import annotations

import os

import pytest
from redteam import FAMILIES, run_red_schedule

from p2pstate.core.config import Config
from p2pstate.core.node import Role
from p2pstate.core.writer import Outcome
from p2pstate.sim import SimNetwork

FACTOR = int(os.environ.get("P2PSTATE_SCHEDULES", "1"))
SCHEDULES = 210 * FACTOR


@pytest.mark.parametrize("seed", range(SCHEDULES))
def test_red_team_schedules(seed: int) -> None:
    """One family per seed in turn (then mixed), both modes, 2-7 players."""
    family = FAMILIES[seed % len(FAMILIES)] if seed % 3 else None
    run_red_schedule(700_000 + seed, family=family)


#: Schedules that broke a rule before the fixes (each failed on the code
#: the red team started from): a member removed while cut off, or a Handoff
#: held by TCP, left a copy asking a closed host for ever in "majority"
#: durability (2, 118, 144, 230); a side that went on alone claimed a
#: majority in the merge and undid what the real majority acknowledged
#: (680); stale votes held by TCP made a second host at the same epoch,
#: and the merge undid writes a majority had acknowledged (1230).
FOUND = [2, 118, 144, 230, 680, 1230]


@pytest.mark.parametrize("seed", FOUND)
def test_red_team_findings(seed: int) -> None:
    run_red_schedule(seed)


@pytest.mark.xfail(
    strict=True,
    reason="majority durability acknowledges once host and successor hold a "
    "write; cut off together with a third member, the majority goes on "
    "without it and the merge undoes it (acks would need a majority)",
)
def test_majority_durability_keeps_what_host_and_successor_alone_held() -> None:
    run_red_schedule(2699)


@pytest.mark.parametrize("durability", ["default", "majority"])
def test_a_handoff_held_by_a_cut_reaches_a_peer_that_lost_its_host(durability: str) -> None:
    """A game of two: the peer's cable is out long enough that it gives up
    on its host and asks again (JOINING); the host then closes, handing over
    to it. The Handoff, held by TCP, arrives when the cable is back: the
    peer must take over, not ask a closed host for ever (majority mode has
    no isolation timeout to rescue it)."""
    config = Config(durability=durability)  # type: ignore[arg-type]
    net = SimNetwork(2, config=config)
    host, peer = net.add_node(), net.add_node()
    assert net.run_until(net.quiet, 5.0)
    net.cut(peer.me.id)
    net.run(config.host_timeout + 0.2)
    assert peer.role is Role.JOINING
    net.leave(host.me.id)
    net.run(config.leave_timeout + 0.2)
    assert host.role is Role.CLOSED
    net.reconnect(peer.me.id)
    out: list[Outcome] = []
    net.write(peer.me.id, (("set", "k", 1),), (), out.append)
    assert net.run_until(lambda: peer.role is Role.HOST and bool(out), 3.0), net.trace_tail()
    assert out[0].status == "ok"


@pytest.mark.parametrize("players", [3, 7])
def test_a_member_removed_while_cut_off_finds_the_host_that_took_over(players: int) -> None:
    """durability="majority": the successor's cable is out long enough that
    the host removes it; the host then closes and hands over to the next.
    Back, the old successor believes it is next in line and waits for votes
    that never come (everyone follows the new host): it must find that host
    and rejoin, not ask the closed one for ever."""
    config = Config(durability="majority")
    net = SimNetwork(230, config=config)
    nodes = [net.add_node()]
    for _ in range(players - 1):
        net.run(0.02)
        nodes.append(net.add_node())
    assert net.run_until(net.quiet, 5.0)
    host = nodes[0]
    succ = net.nodes[host.successor_id or ""]
    net.cut(succ.me.id)
    assert net.run_until(lambda: host.replica.member(succ.me.id) is None, 3.0)
    net.leave(host.me.id)
    net.run(config.leave_timeout + 0.2)
    net.reconnect(succ.me.id)
    out: list[Outcome] = []
    assert net.run_until(lambda: succ.role is Role.PEER, 5.0), net.trace_tail()
    net.write(succ.me.id, (("set", "k", 1),), (), out.append)
    assert net.run_until(lambda: bool(out) and net.quiet(), 5.0), net.trace_tail()
    assert out[0].status == "ok"
