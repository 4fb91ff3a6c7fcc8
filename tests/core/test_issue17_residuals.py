"""Residual defects of issue 17's merge and membership rules, each shown by
the smallest scenario under the simulator: a stale Leave, the lone-host
bookkeeping on a deliberate Leave, the backed change a successor claims,
and a copy of a "majority" session that lost track of its host."""

from __future__ import annotations

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
