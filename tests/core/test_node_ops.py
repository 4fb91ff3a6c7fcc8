"""The node's side of typed ops and statuses (core/ops.py, core/status.py):
``Node.submit`` types a write before anything reads it, the host's own ops
and verdicts are typed, and a malformed raw op is refused before it is queued."""

from __future__ import annotations

from typing import Any

import pytest
from simsession import Session

from p2pstate.core.access import Access
from p2pstate.core.admission import Admission
from p2pstate.core.config import Config
from p2pstate.core.node import Node, Role
from p2pstate.core.ops import COND_TYPES, OP_TYPES, Acl, Leave, Set
from p2pstate.core.replica import Replica
from p2pstate.core.status import Status
from p2pstate.core.writer import Outcome
from p2pstate.messages import Member


def _spy_admission(node: Node) -> list[tuple[Any, Any]]:
    """Record the ops and conditions the host's admission is asked about."""
    seen: list[tuple[Any, Any]] = []
    check = node.admission.check

    def spy(writer: str, ops: Any, conds: Any, now: float) -> Any:
        seen.append((ops, conds))
        return check(writer, ops, conds, now)

    node.admission.check = spy  # type: ignore[method-assign]
    return seen


def _wait(session: Session, out: list[Outcome]) -> Outcome:
    assert session.run_until(lambda: bool(out)), session.tail()
    return out[0]


def test_the_hosts_admission_sees_typed_ops_from_every_writer() -> None:
    session = Session(seed=5)
    nodes = session.start(2)
    host = session.host()
    peer = next(n for n in nodes if n is not host)
    seen = _spy_admission(host)
    for writer in (host, peer):  # the host's own write makes no message
        _wait(
            session, session.write(writer, (("set", "k", 1), ("del", "gone")), (("absent", "k"),))
        )
        session.write(writer, (("del", "k"),))
        assert session.settle(), session.tail()
    assert len(seen) == 4
    for ops, conds in seen:
        assert [type(op) for op in ops if type(op) not in OP_TYPES] == [], ops
        assert [type(c) for c in conds if type(c) not in COND_TYPES] == [], conds


@pytest.mark.parametrize(
    ("ops", "conds"),
    [
        ((("set", "k"),), ()),  # too short for a set
        ((("bogus", 1),), ()),  # no such kind
        (((),), ()),
        ((["set", "k", 1, 0],), ()),
        ((("set", "k", 1),), (("exists",),)),  # a condition with no key
        ((("set", "k", 1),), ("absent",)),  # not a tuple
    ],
)
def test_a_malformed_raw_op_is_refused_by_submit_and_nothing_is_queued(
    ops: Any, conds: Any
) -> None:
    """In any role: before, the host gave an outcome or an IndexError and a
    peer raised with the request left pending (resent, and raising, forever)."""
    session = Session(seed=6)
    nodes = session.start(2)
    for node in nodes:
        before = node.writer.next_req
        with pytest.raises((TypeError, ValueError)):
            node.submit(ops, conds, now=session.net.now)
        assert node.writer.next_req == before
        assert not node.writer.pending and not node.write_keys
    session.net.run(2.0)  # several write_retry: nothing is resent, no tick raises
    for node in nodes:
        assert session.put(node, "k", node.me.id).status is Status.OK


def test_every_outcome_and_kept_result_is_a_status_member() -> None:
    session = Session(seed=7)
    nodes = session.start(3)
    host = session.host()
    outcomes: list[Outcome] = []
    for i, writer in enumerate(nodes):
        key = f"k{i}"
        outcomes.append(session.put(writer, key, 1))
        outcomes.append(
            _wait(session, session.write(writer, (("set", key, 2),), (("absent", key),)))
        )
    assert [o.status for o in outcomes] == [Status.OK, Status.CONFLICT] * 3
    assert all(type(o.status) is Status for o in outcomes), outcomes
    assert session.settle(), session.tail()
    kept = [
        (node.me.id, status)
        for node in nodes
        for record in node.replica.dedupe.values()
        for status, _, _ in record.results.values()
    ]
    assert {nid for nid, _ in kept} == {n.me.id for n in nodes}
    assert all(type(status) is Status for _, status in kept), kept
    assert host.role is Role.HOST


def test_the_members_an_access_change_expels_leave_by_typed_ops() -> None:
    replica = Replica()
    replica.access = Access(admin="a")
    replica.members = [Member(id=f"{who}.1", name=who, endpoints=()) for who in "abc"]
    admission = Admission(replica, Config(), lambda what, who: None)
    leaves = admission.expulsions((Set("k", 1), Acl("ban", "b")), host_id="a.1")
    assert leaves == (Leave("b.1", "banned"),)
    assert type(leaves[0]) is Leave
