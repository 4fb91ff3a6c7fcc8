"""The successor fence (``host.note_fence``, ``note_holds``, ``pass_fence``),
branch by branch, on one host fed messages by hand: a session is started
under the simulator, then the network stands still and the test plays the
members' reports (heartbeats naming the last change they hold)."""

from __future__ import annotations

from dataclasses import replace

from simsession import CONFIG, Session

from p2pstate.core import host as hosting
from p2pstate.core.common import Fence
from p2pstate.core.node import Node
from p2pstate.messages import ChangeMsg, Heartbeat, Hello


def _session(n: int) -> tuple[Session, Node, list[Node]]:
    s = Session(21)
    nodes = s.start(n)
    h = s.host()
    assert h is nodes[0] and h.successor == nodes[1].me.id
    return s, h, nodes[1:]


def _report(s: Session, h: Node, member: Node, seq: int | None = None) -> None:
    """*member* tells the host it holds its changes up to *seq* (default: all)."""
    held = h.replica.seq if seq is None else seq
    h.receive(Heartbeat(sender=member.me.id, epoch=h.epoch, seq=held), s.net.now)


def _remove(s: Session, h: Node, member: Node) -> None:
    hosting.remove_member(h, member.me.id, "timeout", s.net.now)


def _asked_to_ack(h: Node, member: Node) -> bool:
    return any(
        isinstance(m.msg, ChangeMsg) and m.msg.ack and m.to == member.me.id for m in h.take_outbox()
    )


def test_replacing_the_successor_sets_a_fence_that_holds_acknowledgements() -> None:
    s, h, (a, b, c, d) = _session(5)
    every = frozenset(n.me.id for n in (h, a, b, c, d))
    _remove(s, h, a)
    assert h.successor == b.me.id
    assert h.fence == Fence(h.replica.seq, every, a.me.id, h.clock)
    assert not _asked_to_ack(h, b)  # its acknowledgements would not count
    _report(s, h, b)  # the new successor holds everything...
    assert h.durable == h.replica.seq
    assert hosting.durable_point(h) == 0  # ...which is not durable yet


def test_the_fence_stays_while_a_majority_of_its_members_lack_the_change() -> None:
    s, h, (a, b, c, d) = _session(5)
    _remove(s, h, a)
    fence = h.fence
    assert fence is not None
    _report(s, h, b)
    _report(s, h, c, fence.seq - 1)  # short of the change: it may still vote for a
    # another epoch's news counts for nothing
    h.receive(Heartbeat(sender=d.me.id, epoch=h.epoch - 1, seq=fence.seq), s.net.now)
    assert h.fence is fence  # h and b hold it; a, c, d (3 of 5) lack it
    assert hosting.durable_point(h) == 0


def test_the_fence_lifts_once_those_lacking_the_change_are_no_majority() -> None:
    s, h, (a, b, _c, d) = _session(5)
    _remove(s, h, a)
    _report(s, h, b)
    h.take_outbox()
    _report(s, h, d)  # h, b, d hold it: a and c can elect nobody
    assert h.fence is None
    assert _asked_to_ack(h, b)  # what waited is asked for again
    assert hosting.durable_point(h) == h.replica.seq  # b's report counts now


def test_a_report_past_the_hosts_last_change_counts_as_its_last() -> None:
    s, h, (a, _b, c, _d) = _session(5)
    _remove(s, h, a)
    _report(s, h, c, h.replica.seq + 1_000)
    assert h.conns[c.me.id].seq == h.replica.seq


def test_a_nested_replacement_keeps_the_first_old_successor_and_every_member() -> None:
    s, h, (a, b, c, d, _e) = _session(6)
    _remove(s, h, a)
    first = h.fence
    assert first is not None
    _remove(s, h, b)  # replaced again before the fence lifted
    assert h.successor == c.me.id
    assert h.fence is not None and h.fence.old == a.me.id  # a is who they may elect
    assert h.fence.members == first.members and h.fence.seq == h.replica.seq > first.seq
    _report(s, h, c, first.seq)  # holds the first change, not the second
    _report(s, h, d, first.seq)
    assert h.fence is not None  # only h holds the second: c and d may still elect a
    _report(s, h, c)
    _report(s, h, d)
    assert h.fence is None


def test_the_fence_falls_when_the_first_successor_is_successor_again() -> None:
    s, h, (a, b, c) = _session(4)
    _remove(s, h, a)
    hello = Hello(
        sender=a.me.id,
        epoch=h.epoch,
        name="back",
        endpoints=a.me.endpoints,
        profile={},
        session_id=h.replica.session_id,
        resume_seq=0,
        resume_epoch=0,
        resume_origin="",
        prev_host=None,
        suspects=(),
    )
    h.receive(hello, s.net.now)  # a is back, welcomed with all, last in succession
    _remove(s, h, b)
    assert h.successor == c.me.id and h.fence is not None and h.fence.old == a.me.id
    _remove(s, h, c)
    assert h.successor == a.me.id  # the first one: it holds what it acknowledged
    assert h.fence is None and _asked_to_ack(h, a)


def test_a_host_gone_on_alone_sets_no_fence() -> None:
    s, h, (a, b, c, d) = _session(5)
    h.liveness.lone_from = frozenset(n.me.id for n in (h, a, b, c, d))
    _remove(s, h, a)
    assert h.successor == b.me.id and h.fence is None
    assert _asked_to_ack(h, b)
    _report(s, h, b)
    assert hosting.durable_point(h) == h.replica.seq


def test_the_old_successor_leaving_on_purpose_lifts_the_fence() -> None:
    s, h, (a, b, _c, _d) = _session(5)
    _remove(s, h, a)
    assert h.fence is not None
    h.take_outbox()
    hosting.forget_leaver(h, a.me.id)  # it said so: it takes over nothing
    assert h.fence is None and _asked_to_ack(h, b)


def test_a_member_leaving_on_purpose_leaves_the_fence_and_may_lift_it() -> None:
    s, h, (a, _b, c, d) = _session(5)
    _remove(s, h, a)
    hosting.remove_member(h, d.me.id, "left", s.net.now)
    fence = h.fence
    assert fence is not None and d.me.id not in fence.members  # a, b, c of 4 lack it
    _report(s, h, c)
    assert h.fence is None  # h and c hold it: a and b are no majority of 4


def _fence_its_holders_cannot_lift(s: Session) -> tuple[Node, Node, float]:
    """Seven players; the successor a dies, and c just after it: the host
    replaces a (a fence over all seven). d and e die before they report the
    change, and the host, still hearing a majority of its agreed membership
    at each step, removes c, then d and e. The holders (h, b, f) can never
    be a majority of the fence's seven, and none of the lacking is heard:
    the host hears a majority of its agreed membership, so it is not
    isolated either. Returns the host, the writer f and when the fence rose."""
    h, a, _b, c, d, e, f = s.start(7)
    s.net.crash(a.me.id, lose_in_flight=True)
    s.net.run(0.05)
    s.net.crash(c.me.id, lose_in_flight=True)
    assert s.run_until(lambda: h.fence is not None, 3.0), s.tail()
    rose = s.net.now
    s.net.crash(d.me.id, lose_in_flight=True)
    s.net.crash(e.me.id, lose_in_flight=True)
    assert s.run_until(lambda: len(h.replica.members) == 3), s.tail()
    assert h.fence is not None and len(h.fence.members) == 7 and not h.isolated
    return h, f, rose


def test_a_fence_its_holders_can_never_lift_is_outwaited_by_the_lone_rule() -> None:
    """It held every acknowledgement for good (the write below waited for
    ever). Those that lack the change may be cut off, not dead, and electing
    a: the host cannot tell, as when it hears no majority, so the lone rule
    decides: after isolation_timeout it goes on, its side no majority's."""
    s = Session(3)
    h, f, rose = _fence_its_holders_cannot_lift(s)
    fence = h.fence
    out = s.write(f, (("set", "k", 1),))
    s.net.run(rose + CONFIG.lone_after - s.net.now - 0.1)
    assert not out and h.fence is fence  # the rule: a majority may lack it
    assert s.run_until(lambda: bool(out), 1.0), s.tail()
    assert out[0].status == "ok" and h.fence is None
    assert h.stats["fence_outwaited"] == 1 and not h.standing().majority
    assert s.put(f, "k", 2).status == "ok"


def test_in_majority_durability_the_fence_holds_while_a_majority_lacks_the_change() -> None:
    s = Session(3, config=replace(CONFIG, durability="majority"))
    h, f, _ = _fence_its_holders_cannot_lift(s)
    out = s.write(f, (("set", "k", 1),))
    s.net.run(3 * CONFIG.lone_after)
    assert not out and h.fence is not None  # never acknowledged by a minority


def test_an_isolated_host_does_not_outwait_its_fence_into_acknowledging() -> None:
    """The fence outwaited while the host is isolated (and not yet allowed
    to go on alone) asked the new successor to acknowledge, and it answers
    the writers itself: a minority host's writes were acknowledged (review).
    Nothing is asked until the host may acknowledge (a majority back, or
    the lone rule's own timeout)."""
    s, h, (a, b, _c, _d) = _session(5)
    _remove(s, h, a)
    _report(s, h, b)
    assert h.fence is not None
    h.take_outbox()
    start, asked_while_paused = h.clock, False
    now = start
    while now < start + CONFIG.lone_after + 0.2:  # nobody heard: isolated
        now += 0.05
        h.tick(now)
        if hosting.liveness.acks_paused(h) and _asked_to_ack(h, b):
            asked_while_paused = True
    assert h.isolated
    assert not asked_while_paused


def test_the_end_of_isolation_asks_no_acknowledgement_while_the_fence_stands() -> None:
    """A host isolated while its successor's fence stood asked the new
    successor to acknowledge as soon as a majority was back, though the
    members back still lacked the fence's change (review): the successor
    answered the writers while the old one could still be elected."""
    s, h, (a, b, c, d) = _session(5)
    _remove(s, h, a)
    fence = h.fence
    assert fence is not None
    now = h.clock
    while not h.isolated:  # nobody heard
        now += 0.05
        h.tick(now)
    h.take_outbox()
    for member in (b, c, d):  # back, all short of the change
        h.receive(Heartbeat(sender=member.me.id, epoch=h.epoch, seq=fence.seq - 1), now)
    for _ in range(10):
        now += 0.05
        for member in (b, c, d):
            h.receive(Heartbeat(sender=member.me.id, epoch=h.epoch, seq=fence.seq - 1), now)
        h.tick(now)
    assert not h.isolated and h.fence is fence
    assert not _asked_to_ack(h, b)
