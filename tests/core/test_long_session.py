"""A long session's core state stays bounded: what a node keeps per write,
per request or per member does not grow with the number of writes, and the
rollback reports stay exact in number however many writes a merge undoes
(issue 17 without unbounded memory)."""

from __future__ import annotations

import contextlib
from typing import Any

import chaos
import pytest
from chaos import Kind
from simsession import CONFIG, Session

from p2pstate.core import rollback
from p2pstate.core.common import Acked
from p2pstate.core.node import Node, Role
from p2pstate.core.replica import WriterRecord
from p2pstate.core.rollback import DETAILED, fold, folded_back, kept_count, rolled_back
from p2pstate.events import WritesRestored, WritesRolledBack
from p2pstate.sim import SimNetwork

ME = "a" * 16
#: What any per-write structure may hold after 20,000 writes: a bound that
#: does not grow with the number of writes.
BOUND = DETAILED + 64


def _write_many(s: Session, node: Node, n: int, batch: int = 200, *, chat: bool = False) -> None:
    """*n* acknowledged writes of *node*, *batch* in flight at a time; with
    *chat*, every other one a message (a write without keys)."""
    done = 0
    while done < n:
        out: list[Any] = []
        size = min(batch, n - done)
        for i in range(size):
            k = done + i
            op = ("msg", "", k) if chat and k % 2 else ("set", f"k{k % 50}", k)
            s.net.write(node.me.id, (op,), (), out.append)
        assert s.run_until(lambda out=out, size=size: len(out) == size, 10.0), s.tail()
        assert all(o.status == "ok" for o in out)
        done += size


def _sizes(node: Node) -> dict[str, int]:
    """Every per-session structure of *node* that could grow with writes."""
    record = node.replica.dedupe.get(node.me.id)
    return {
        "acked": len(node.acked),
        "acked_runs": len(node.acked_runs),
        "undone": len(node.undone) + len(node.undone_runs),
        "sent_at": len(node.sent_at),
        "write_keys": len(node.write_keys),
        "done_reqs": len(node.writer.done_reqs),
        "pending": len(node.writer.pending),
        "results": len(record.results) if record else 0,
        "dedupe": len(node.replica.dedupe),
        "terms": len(node.replica.terms),
        "log": len(node.replica.log),
        "awaiting": len(node.awaiting),
        "stats": len(node.stats),
    }


def test_a_long_sessions_state_does_not_grow_with_its_writes() -> None:
    """A game writing all session long: 3 nodes, 20,000 acknowledged writes
    each by the host and a peer. Node.acked kept one record per write for
    the whole session (100+ MB after 3 hours at 60 writes a second)."""
    s = Session(3)
    host, peer, other = s.start(3)
    _write_many(s, peer, 20_000)
    _write_many(s, host, 20_000)
    _write_many(s, other, 20_000, chat=True)
    assert s.settle()
    for node in (host, peer, other):
        sizes = _sizes(node)
        assert all(v <= BOUND for v in sizes.values()), (node.me.id, sizes)
        assert sizes["acked_runs"] <= 1  # one run of requests per term
    # what is kept still counts every acknowledged write with keys
    assert kept_count(peer) == kept_count(host) == 20_000
    assert kept_count(other) == 10_000
    # the messages between cost a bit each at most
    assert sum(len(r.gaps) for r in other.acked_runs) <= 20_000 // 8 + 1


def test_a_merge_after_many_writes_reports_every_undone_write_in_number() -> None:
    """A peer cut off alone goes on alone and writes far more than the
    detail kept; the majority wins the merge: the report lists the latest
    writes and counts the rest, exactly; the writes from before the split
    (which the winner holds) are not reported."""
    s = Session(1)
    a, _b, c = s.start(3)
    _write_many(s, c, 3_000)  # held by everyone
    s.net.partition({c.me.id})
    s.net.run(CONFIG.host_timeout + CONFIG.lone_after + 0.5)
    assert c.role is Role.HOST
    lone = DETAILED + 1_500
    _write_many(s, c, lone)
    s.put(a, "majority", 1)
    s.net.heal()
    assert s.settle(), s.tail()
    assert c.role is Role.PEER and "majority" in s.values(c)
    rolled = [e for e in s.net.events[c.me.id] if isinstance(e, WritesRolledBack)]
    assert sum(len(e.mine) + e.more for e in rolled) == lone
    listed = sorted(w.request for e in rolled for w in e.mine)
    assert listed == list(range(3_000 + lone - len(listed) + 1, 3_000 + lone + 1))
    assert len(listed) >= DETAILED // 2  # the details of the latest writes are kept
    assert kept_count(c) == 3_000
    assert s.put(c, "again", 1).status == "ok"


def _node(*acked: Acked) -> Node:
    node = Node(node_id=ME, name="A", endpoints=(f"sim://{ME}",))
    for a in acked:
        node.acked.append(a)
    return node


def _fold_all(node: Node) -> None:
    fold(node, 0)


def test_folded_writes_are_counted_exactly_where_a_history_forks_among_them() -> None:
    """Writes whose details went (runs of requests) count exactly when the
    winning history holds only part of them: it applied our requests up to
    its writer record's last request, in order."""
    # requests 1..10 became changes 11, 13, ..., 29 of term (2, "h")
    node = _node(*(Acked(r, 9 + 2 * r, 2, "h", ("k",)) for r in range(1, 11)))
    _fold_all(node)
    assert len(node.acked) == 0 and len(node.acked_runs) == 1
    # a history that forked at 20 (requests 1..5 held: their changes are 11..19)
    _set_last_req(node, 5)
    rolled, back, more, more_back = _roll(node, ((1, 1, "h0"), (10, 2, "h"), (21, 3, "x")), 40)
    assert (rolled, back, more, more_back) == ((), (), 5, 0)
    assert kept_count(node) == 5
    # and a history that holds the whole term again brings all five back
    _set_last_req(node, 10)
    assert _roll(node, ((1, 1, "h0"), (10, 2, "h")), 40) == ((), (), 0, 5)
    assert kept_count(node) == 10
    # a history of another session holds none of them
    _set_last_req(node, 0)
    assert _roll(node, ((1, 1, "zz"),), 100) == ((), (), 10, 0)


def _set_last_req(node: Node, last: int) -> None:
    node.replica.dedupe[ME] = WriterRecord(last_req=last, acked_upto=last)


def _roll(node: Node, terms: tuple[tuple[int, int, str], ...], seq: int) -> Any:
    node.replica.terms, node.replica.seq = list(terms), seq
    rolled, back = rolled_back(node, terms, seq)
    return (rolled, back, *folded_back(node, terms, seq))


def test_runs_count_exactly_across_requests_they_do_not_hold() -> None:
    """Requests without keys (or refused) between acknowledged writes are
    gaps in a run: a fork among them counts only the writes after it."""
    # requests 1, 2, 4, 7 acknowledged (3, 5, 6 were messages), changes 11..17
    node = _node(*(Acked(r, 10 + r, 2, "h", ("k",)) for r in (1, 2, 4, 7)))
    _fold_all(node)
    assert len(node.acked_runs) == 1 and kept_count(node) == 4
    _set_last_req(node, 3)  # a history that forked after request 3
    assert _roll(node, ((1, 1, "h0"), (10, 2, "h"), (14, 3, "x")), 30) == ((), (), 2, 0)
    assert kept_count(node) == 2
    _set_last_req(node, 5)  # one that holds the term up to request 5
    assert _roll(node, ((1, 1, "h0"), (10, 2, "h"), (16, 4, "y")), 30) == ((), (), 0, 1)
    assert kept_count(node) == 3


def test_folded_writes_undone_again_after_a_flip_flop_are_reported_again() -> None:
    """A history may have applied our requests after one it lacks: after
    a merge undid some, we went on writing there (its host takes the
    next request after the ones we confirmed). A third merge back to that
    lineage must not count the restored ones as held by its last request."""
    # requests 1..5 became changes 11..15 of term (2, "h")
    node = _node(*(Acked(r, 10 + r, 2, "h", ("k",)) for r in range(1, 6)))
    _fold_all(node)
    forked = ((1, 1, "h0"), (10, 2, "h"), (12, 3, "x"))  # holds request 1 only
    _set_last_req(node, 1)
    assert _roll(node, forked, 20) == ((), (), 4, 0)
    _set_last_req(node, 5)  # our old lineage wins a later merge: all back
    assert _roll(node, ((1, 1, "h0"), (10, 2, "h")), 20) == ((), (), 0, 4)
    # the forked lineage, where we wrote requests 6..8 meanwhile, wins again
    _set_last_req(node, 8)
    assert _roll(node, (*forked, (30, 4, "y")), 40) == ((), (), 4, 0)
    assert kept_count(node) == 1


def _reported(
    seed: int, monkeypatch: pytest.MonkeyPatch, *, detailed: bool
) -> dict[str, list[tuple[str, int]]]:
    """How many writes each rollback event of PARTITION schedule *seed*
    reports (listed and by number), node by node, in order."""
    nets: list[SimNetwork] = []

    class Recorded(SimNetwork):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            nets.append(self)

    monkeypatch.setattr(chaos, "SimNetwork", Recorded)
    if detailed:
        chaos.run_schedule(seed, Kind.PARTITION)  # its checker holds
    else:  # without details, its checker finds the writes unreported
        with contextlib.suppress(chaos.GuaranteeError):
            chaos.run_schedule(seed, Kind.PARTITION)
    events = nets[-1].events
    kinds = (WritesRolledBack, WritesRestored)
    return {
        nid: [(type(e).__name__, len(e.mine) + e.more) for e in evs if isinstance(e, kinds)]
        for nid, evs in events.items()
    }


@pytest.mark.parametrize("seed", [1, 9, 14, 19])
def test_reports_by_number_match_the_detailed_ones(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same schedules with every write kept in detail and with none
    (every acknowledged write at once in a run): each event reports the
    same number of writes (the simulator is deterministic, and what a node
    keeps of its own writes changes nothing it sends)."""
    detailed = _reported(seed, monkeypatch, detailed=True)
    monkeypatch.setattr(rollback, "DETAILED", 0)
    assert _reported(seed, monkeypatch, detailed=False) == detailed
    assert any(detailed.values())


def test_the_events_say_how_many_writes_they_list_no_detail_for() -> None:
    """``more`` is part of both events, 0 by default."""
    assert WritesRolledBack(writes=(), mine=()).more == 0
    assert WritesRestored(writes=(), mine=(), more=3).more == 3


def test_the_cli_prints_the_writes_counted_by_number() -> None:
    from p2pstate.cli import _rolled_back
    from p2pstate.events import RolledBackWrite

    w = RolledBackWrite(writer=ME, request=7, keys=("k",))
    text = _rolled_back(WritesRolledBack(writes=(w,), mine=(w,), more=5))
    assert "undid 6 write(s), 6 of them yours: k (and 5 older ones)" in text
