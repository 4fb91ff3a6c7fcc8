"""Residual defects of issue 17's merge and membership rules, each shown by
the smallest scenario under the simulator: a stale Leave, the lone-host
bookkeeping on a deliberate Leave, the backed change a successor claims,
and a copy of a "majority" session that lost track of its host."""

from __future__ import annotations

from redteam import run_red_schedule
from simsession import CONFIG, Session

from p2pstate.core.node import Node, Role
from p2pstate.messages import Leave


def test_a_leave_from_before_a_rejoin_does_not_remove_the_member() -> None:
    """A Leave is held by TCP (a link blip) and delivered after its sender
    came back at a later epoch (a host that stepped down sends one to the
    host that welcomed an old Hello of its: merge.on_welcome). It speaks of
    a membership that no longer exists: the member stays."""
    s = Session(3)
    a, b, c = s.start(3)
    s.net.crash(a.me.id)
    assert s.settle(), s.tail()
    assert b.role is Role.HOST and b.epoch == 2 and c.target_id == b.me.id
    seq = b.replica.seq
    b.receive(Leave(sender=c.me.id, epoch=1), s.net.now)
    assert c.me.id in s.members(b) and b.replica.seq == seq  # no removal
    assert b.stats["dropped: stale leave"] == 1
    s.net.flush(b)
    assert s.settle(), s.tail()
    assert c.role is Role.PEER and c.me.id in s.members(b)


def test_a_leave_at_the_members_epoch_still_removes_it() -> None:
    s = Session(3)
    a, b, c = s.start(3)
    s.net.crash(a.me.id)
    assert s.settle(), s.tail()
    s.net.leave(c.me.id)
    assert s.settle(), s.tail()
    assert s.members(b) == [b.me.id] and c.role is Role.CLOSED


def test_a_lone_host_whose_members_left_on_purpose_has_its_majority_back() -> None:
    """A host that went on alone keeps the membership it lost (lone_from)
    until it hears a majority of it again; members that then come back
    and leave on purpose vote no more, so they leave that membership too,
    as they leave the agreed one: with the last member back, it is the
    majority's side again."""
    s = Session(4)
    a, *others = s.start(5)
    for n in others:
        s.net.pause(n.me.id)
    assert s.run_until(lambda: a.liveness.lone_from is not None, CONFIG.lone_after + 2.0)
    assert s.run_until(lambda: s.members(a) == [a.me.id]), s.tail()
    for n in others[:3]:  # each comes back, then leaves on purpose
        s.net.resume(n.me.id)
        assert s.run_until(lambda n=n: _back(s, a, n)), s.tail()
        s.net.leave(n.me.id)
        assert s.run_until(lambda n=n: n.role is Role.CLOSED), s.tail()
    last = others[3]
    s.net.resume(last.me.id)
    assert s.run_until(lambda: _back(s, a, last)), s.tail()
    assert s.run_until(lambda: a.standing().majority, 2.0), a.liveness
    assert a.liveness.lone_from is None


def _back(s: Session, host: Node, n: Node) -> bool:
    """*n* is a member of *host* again, welcomed after it was removed."""
    return n.me.id in s.members(host) and n.role is Role.PEER and n.target_id == host.me.id


def test_a_member_cut_off_while_its_host_handed_over_finds_the_new_host() -> None:
    """Red seed 1198, "majority" durability: a member was cut off while its
    host removed it, took back a member it had removed before, and handed
    over to that one, then left. Back, the member knew neither the new host
    (the rejoin came after its cut) nor any majority that could answer: it
    asked the closed host for ever. Discovery shows the session's host; it
    asks that one, as it asks a member (a question, not a vote)."""
    run_red_schedule(1198, durability="majority")


def test_two_restarts_that_leave_no_majority_are_not_scheduled() -> None:
    """Red seed 1158, "majority" durability: the host restarted (a new
    instance, hosting a session of its own), and the red team's guard took
    that one-member session for the session, so it restarted a second of
    the four members: two of four can never take over in this durability
    (documented: the session waits). The guard now counts the copies that
    hold the first session; the schedule settles."""
    run_red_schedule(1158, durability="majority")


def test_a_successor_that_takes_over_a_lone_tail_claims_only_what_a_majority_backed() -> None:
    """Split {a, b} | {c, d, e}: c takes over with a majority and d's writes
    are acknowledged there; a goes on alone after isolation_timeout with
    b, which acknowledges a longer lone tail. Then d and e die (c loses
    its majority) and a dies (b takes over, alone). Neither side has a
    majority when they meet, so rule 3 decides: b used to claim its last
    change as backed, the end of a's lone tail, which c's history lacks;
    the rule fell through, b won on the longer history and undid the
    majority's writes. b now claims what a told it a majority backed."""
    s = Session(5)
    a, b, c, d, e = s.start(5)
    backed = a.liveness.backed
    assert backed[0] > 0, backed
    s.net.partition({a.me.id, b.me.id}, {c.me.id, d.me.id, e.me.id})
    assert s.run_until(lambda: c.role is Role.HOST), s.tail()
    assert all(s.put(d, f"w{i}", i).status == "ok" for i in range(3))
    assert s.run_until(lambda: a.liveness.lone_from is not None, CONFIG.lone_after + 2.0)
    assert all(s.put(b, f"lone{i}", i).status == "ok" for i in range(12))
    for n in (d, e, a):
        s.net.crash(n.me.id)
    assert s.run_until(
        lambda: b.role is Role.HOST and c.liveness.lone_from is not None, CONFIG.lone_after + 3.0
    ), s.tail()
    assert not b.standing().majority and not c.standing().majority
    assert b.standing().backed == backed  # what a told it, not its lone tail
    s.net.heal()
    assert s.settle(), s.tail()
    assert c.role is Role.HOST and b.target_id == c.me.id, s.tail()
    for n in (b, c):
        assert {k: v for k, v in s.values(n).items() if k.startswith("w")} == {
            "w0": 0,
            "w1": 1,
            "w2": 2,
        }
