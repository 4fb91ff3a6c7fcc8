"""The host's successor answers a write as soon as it holds it: three hops
(writer, host, successor, writer) instead of four, two for the successor's
own writes. The host still answers too; the writer takes the first, once."""

from __future__ import annotations

from simsession import Session

from p2pstate.core.node import Node
from p2pstate.messages import Result, to_frame

HOP = 0.01  # every message takes exactly this long


def _session() -> tuple[Session, Node, Node, Node]:
    session = Session(3)
    host, successor, third = session.start(3)
    assert session.host() is host and session.members(host)[1] == successor.me.id
    session.net.set_delay(HOP, HOP)
    return session, host, successor, third


def _answered_after(session: Session, writer: Node) -> float:
    start = session.net.now
    out = session.write(writer, (("set", "k", writer.me.id),))
    assert session.run_until(lambda: bool(out)), session.tail()
    assert out[0].status == "ok"
    elapsed = session.net.now - start
    session.net.run(10 * HOP)  # the host's answer comes too, and changes nothing
    assert len(out) == 1
    return elapsed


def test_a_third_peers_write_is_answered_after_three_hops() -> None:
    session, _host, _successor, third = _session()
    assert _answered_after(session, third) < 3.5 * HOP


def test_the_successors_own_write_is_answered_after_two_hops() -> None:
    session, _host, successor, _third = _session()
    assert _answered_after(session, successor) < 2.5 * HOP


def test_a_result_from_a_peer_that_is_not_the_successor_is_dropped() -> None:
    session, host, successor, third = _session()
    before = successor.stats["dropped"]
    out = session.write(successor, (("set", "k", 1),))  # its request number is 1
    forged = Result(sender=third.me.id, epoch=host.epoch, req=1, status="ok", detail=None, seq=1)
    session.net.send_raw(successor.me.id, to_frame(forged), delay=HOP / 10)
    session.net.run(HOP / 2)  # the forgery has arrived; the real write has not
    assert not out and successor.stats["dropped"] == before + 1
    assert session.run_until(lambda: bool(out)) and out[0].seq > 1, "the real answer counts"
