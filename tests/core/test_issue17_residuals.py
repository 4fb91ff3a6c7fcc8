"""Residual defects of issue 17's merge and membership rules, each shown by
the smallest scenario under the simulator: a stale Leave, the lone-host
bookkeeping on a deliberate Leave, the backed change a successor claims,
and a copy of a "majority" session that lost track of its host."""

from __future__ import annotations

from simsession import CONFIG, Session

from p2pstate.core.node import Role
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
