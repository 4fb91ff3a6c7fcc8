"""Admission on its own: it needs no node, only the replica and settings it
reads, and the clock each verdict is given."""

from __future__ import annotations

from p2pstate.core.access import Access
from p2pstate.core.admission import Admission
from p2pstate.core.config import Config
from p2pstate.core.ops import IfExists, Set, Term
from p2pstate.core.replica import Replica
from p2pstate.core.status import Status


def _admission(access: Access) -> tuple[Admission, list[tuple[str, str]]]:
    replica = Replica()
    replica.access = access
    refused: list[tuple[str, str]] = []
    return Admission(replica, Config(), lambda what, who: refused.append((what, who))), refused


def test_the_token_bucket_refills_by_the_clock_it_is_given() -> None:
    admission, refused = _admission(Access(write_rate=1.0, write_burst=2))
    write = (Set("k", 1),)
    verdicts = [admission.check("a.1", write, (), 10.0)[0] for _ in range(3)]
    assert verdicts == [Status.OK, Status.OK, Status.RATE_LIMITED]
    assert refused == [("writes_rate_limited", "a.1")]
    assert admission.check("b.1", write, (), 10.0)[0] is Status.OK  # one bucket per writer
    assert admission.check("a.1", write, (), 10.5)[0] is Status.RATE_LIMITED
    assert admission.check("a.1", write, (), 11.0)[0] is Status.OK


def test_forged_ops_and_conditions_are_refused() -> None:
    admission, refused = _admission(Access())
    status, _ = admission.check("a.1", (Term(9, "a.1", None, "x"),), (), 0.0)
    assert status is Status.INVALID
    assert refused == [("forged_ops", "a.1")]
    assert admission.check("a.1", (Set("k", 1),), (IfExists("k"),), 0.0)[0] is Status.MISSING
