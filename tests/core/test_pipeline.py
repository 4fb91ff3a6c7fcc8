"""Pipelined writes (issue 14): many writes of one peer in flight at once."""

from __future__ import annotations

from collections import Counter

from simsession import CONFIG, Session

from p2pstate.core.node import Node, Send
from p2pstate.core.writer import Outcome
from p2pstate.messages import Ack, Change, ChangeMsg, Member, Message, Result


def test_a_long_pipeline_being_answered_is_not_resent() -> None:
    """A host slow to work through a writer's backlog (a busy machine)
    answers its requests in order, one after another, for longer than
    ``write_retry``: none was lost, so none is sent again. Timing each
    request from when it was sent resent the whole backlog every
    ``write_retry``, which doubled the host's work in a pipelined run."""
    s = Session(7)
    host, _successor, writer = s.start(3)
    out: list[Outcome] = []
    for i in range(60):
        s.net.write(writer.me.id, (("set", f"k{i}", i),), (), out.append)
    s.net.pause(host.me.id)
    s.net.run(0.02)
    # The backlog reaches the host over three times write_retry.
    s.net.resume(host.me.id, drain=3 * CONFIG.write_retry)
    assert s.run_until(lambda: len(out) == 60, 5.0), s.tail()
    assert [o.status for o in out] == ["ok"] * 60
    assert writer.stats["writes_resent"] == 0
    assert host.stats["write_gap"] == 0


def test_a_lost_first_request_is_still_resent_while_later_ones_wait() -> None:
    """The first request of a pipeline is lost on the way: the host holds
    back every later one (they would skip it), nothing is answered, and
    the writer sends them all again after ``write_retry``."""
    s = Session(735)
    _a, _b, c = s.start(3)
    s.net.partition({c.me.id})
    out: list[Outcome] = []
    s.net.write(c.me.id, (("set", "first", 0),), (), out.append)
    s.net.run(0.05)
    s.net.heal()
    for i in range(20):
        s.net.write(c.me.id, (("set", f"k{i}", i),), (), out.append)
    assert s.run_until(lambda: len(out) == 21, 3 * CONFIG.write_retry), s.tail()
    assert [o.status for o in out] == ["ok"] * 21
    assert c.stats["writes_resent"] >= 1


def test_the_successor_acknowledges_changes_that_came_together_once() -> None:
    """Changes handled in one pass of the runtime (one batch from the host)
    are acknowledged by one cumulative Ack. The Result each change sends
    its writer sat between two Acks, so only back-to-back Acks merged and
    the host got one Ack per change to decode and handle."""
    s = Session(3)
    host, successor, writer = s.start(3)
    first = successor.replica.seq + 1
    for i in range(3):
        change = Change(
            seq=first + i,
            epoch=host.epoch,
            origin=host.me.id,
            writer=writer.me.id,
            req=i + 1,
            ops=(("set", f"k{i}", i),),
        )
        msg = ChangeMsg(sender=host.me.id, epoch=host.epoch, change=change, ack=True)
        successor.receive(msg, s.net.now)  # no flush between them: one pass
    sent = [send.msg for send in successor.take_outbox()]
    acks = [m for m in sent if isinstance(m, Ack)]
    assert [a.seq for a in acks] == [first + 2]
    assert [m.req for m in sent if isinstance(m, Result)] == [1, 2, 3]
    assert sent[0] is acks[0]  # where the first Ack went: before the Results


def test_the_host_sends_a_change_to_its_peers_without_a_scan_per_peer() -> None:
    """Row 9 of the benchmarks (host CPU per change as the session grows):
    the host found each peer's endpoints with a scan of the member list, so
    sending one change to n peers took n scans of n members."""
    s = Session(5)
    nodes = s.start(12)
    host = nodes[0]
    scans = 0
    member = host.replica.member

    def counted(node_id: str) -> Member | None:
        nonlocal scans
        scans += 1
        return member(node_id)

    host.replica.member = counted  # type: ignore[method-assign]
    host.submit((("set", "k", 1),), now=s.net.now)
    changes = [send for send in host.take_outbox() if isinstance(send.msg, ChangeMsg)]
    assert sorted(send.to for send in changes) == sorted(n.me.id for n in nodes[1:])
    assert all(send.endpoints for send in changes)
    assert scans <= 2  # the successor's, and nothing per peer


def count_results(node: Node) -> Counter[str]:
    """The Results *node* takes in from now on, by sender."""
    seen: Counter[str] = Counter()
    receive = node.receive

    def counted(msg: Message, now: float) -> None:
        if isinstance(msg, Result):
            seen[msg.sender] += 1
        receive(msg, now)

    node.receive = counted  # type: ignore[method-assign]
    return seen


def test_a_write_the_successor_answers_gets_no_second_result() -> None:
    """The successor answers the writer once it holds the change; the host
    answered as well on the successor's Ack, so in a pipelined run the
    writer decoded and handled two Results per write (issue 14): one is
    enough, since the successor's says what the host's would."""
    s = Session(11)
    host, successor, writer = s.start(3)
    seen = count_results(writer)
    out: list[Outcome] = []
    for i in range(30):
        s.net.write(writer.me.id, (("set", f"k{i}", i),), (), out.append)
    assert s.run_until(lambda: len(out) == 30), s.tail()
    s.net.run(1.0)  # anything else on its way arrives
    assert [o.status for o in out] == ["ok"] * 30
    assert seen == {successor.me.id: 30}, seen
    assert host.stats["results_left_to_successor"] == 30


def test_a_result_the_successor_never_sends_is_answered_by_the_host() -> None:
    """The successor acknowledges to the host but its Results never reach
    the writer (it died between the two, or its link to the writer is
    down): the writer resends after ``write_retry`` and the host answers
    from its exactly-once table, each write applied once."""
    s = Session(12)
    host, successor, writer = s.start(3)
    take = successor.take_outbox

    def without_results() -> list[Send]:
        return [send for send in take() if not isinstance(send.msg, Result)]

    successor.take_outbox = without_results  # type: ignore[method-assign]
    seen = count_results(writer)
    first = host.replica.seq + 1
    out: list[Outcome] = []
    for i in range(10):
        s.net.write(writer.me.id, (("set", f"k{i}", i),), (), out.append)
    assert s.run_until(lambda: len(out) == 10, 5 * CONFIG.write_retry), s.tail()
    assert [o.status for o in out] == ["ok"] * 10
    assert seen[host.me.id] >= 10
    # each applied once: ten changes, the outcomes name them in order
    assert host.replica.seq == first + 9
    assert [o.seq for o in out] == list(range(first, first + 10))
    assert writer.stats["writes_resent"] >= 1


def test_a_writer_the_successor_cannot_answer_waits_once_not_every_write() -> None:
    """The successor's Results never reach one writer (its link to that
    writer is down, or the writer's advertised address is not reachable
    from it): the writer resends the first write after ``write_retry``,
    and from then on the host answers that writer itself, so the later
    writes do not each wait ``write_retry`` (they did, before the host
    noted the resend)."""
    s = Session(3)
    host, successor, writer = s.start(3)
    take = successor.take_outbox

    def without_results_to_writer() -> list[Send]:
        return [
            send
            for send in take()
            if not (isinstance(send.msg, Result) and send.to == writer.me.id)
        ]

    successor.take_outbox = without_results_to_writer  # type: ignore[method-assign]
    waited: list[float] = []
    for i in range(10):
        out: list[Outcome] = []
        began = s.net.now
        s.net.write(writer.me.id, (("set", f"k{i}", i),), (), out.append)
        assert s.run_until(lambda out=out: bool(out), 5 * CONFIG.write_retry), s.tail()
        assert out[0].status == "ok"
        waited.append(s.net.now - began)
    assert writer.stats["writes_resent"] == 1, writer.stats
    assert host.stats["writer_answered_by_host"] == 1
    assert all(w < CONFIG.write_retry for w in waited[1:]), waited
