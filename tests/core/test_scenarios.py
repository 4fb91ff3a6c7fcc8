"""Scenarios under the simulator: joining, writing, leaving, failing over."""

from __future__ import annotations

import functools
import random
from typing import Any

import pytest
from simsession import CONFIG, Session

from p2pstate.codec import hash_value
from p2pstate.core.node import Role
from p2pstate.core.writer import Outcome
from p2pstate.events import HostChanged, PeerJoined, PeerLeft, WritesRolledBack
from p2pstate.sim import Counter


def test_first_node_hosts_and_others_join(session: Session) -> None:
    a, b, c = session.start(3)
    assert a.role is Role.HOST and a.epoch == 1
    assert b.role is Role.PEER and c.role is Role.PEER
    for n in (a, b, c):
        assert session.members(n) == [a.me.id, b.me.id, c.me.id]  # join order
        assert n.replica.host_id == a.me.id
        assert n.replica.session_id == a.replica.session_id
    assert len(session.digests()) == 1


def test_join_gets_a_snapshot(session: Session) -> None:
    a, b = session.start(2)
    for i in range(20):
        assert session.put(b, f"k{i}", {"i": i}).status == "ok"
    session.put(a, "k0", "changed")
    c = session.net.add_node("late")
    assert session.settle()
    assert c.stats["welcome_snapshot"] == 0  # the counter is the host's
    assert a.stats["welcome_snapshot"] == 2  # b, then c
    assert session.values(c) == session.values(a)
    assert session.values(c)["k0"] == "changed"
    assert c.replica.data["k5"].version == a.replica.data["k5"].version
    # the starting state is not news: no KeyChanged for it, but everyone
    # else hears that the newcomer joined
    assert not [e for e in session.net.events[c.me.id] if type(e).__name__ == "KeyChanged"]
    for n in (a, b):
        joined = [e for e in session.net.events[n.me.id] if isinstance(e, PeerJoined)]
        assert joined[-1].peer.id == c.me.id


def test_write_is_readable_everywhere_after_ack(session: Session) -> None:
    a, b, c = session.start(3)
    out = session.put(c, "x", [1, 2])
    assert out.status == "ok" and out.seq > 0
    # the writer reads its own write at once; the others have it by quiet
    assert session.values(c)["x"] == [1, 2]
    assert session.settle()
    assert all(session.values(n)["x"] == [1, 2] for n in (a, b, c))


@pytest.mark.parametrize("seed", range(5))
def test_one_order_with_concurrent_writers(seed: int) -> None:
    s = Session(seed, max_delay=0.01)
    nodes = s.start(5)
    rng = random.Random(seed)
    outcomes = []
    for _ in range(200):
        node = rng.choice(nodes)
        key = f"k{rng.randint(0, 5)}"
        if rng.random() < 0.2:
            outcomes.append(s.write(node, (("del", key),)))
        else:
            outcomes.append(s.write(node, (("set", key, rng.randint(0, 99)), ("set", "last", key))))
        s.net.run(rng.uniform(0.0, 0.002))
    assert s.settle(), s.tail()
    assert all(o and o[0].status == "ok" for o in outcomes)
    assert len(s.digests()) == 1, s.tail()
    # every replica applied the same changes in the same order, without a gap
    # (a node's log starts where its welcome snapshot left off)
    since = max(n.replica.log[0].seq for n in nodes)
    logs = {tuple((c.seq, c.writer, c.req) for c in n.replica.log if c.seq >= since) for n in nodes}
    assert len(logs) == 1
    seqs = [entry[0] for entry in next(iter(logs))]
    assert seqs == list(range(since, nodes[0].replica.seq + 1))


def test_compare_and_swap(session: Session) -> None:
    a, b = session.start(2)
    session.put(a, "k", {"v": 1})
    good = hash_value({"v": 1})
    stale = hash_value({"v": 0})
    # a stale hash: conflict, with the current value
    out = session.write(b, (("set", "k", 2),), (("hash", "k", stale),))
    assert session.run_until(lambda: bool(out))
    assert out[0].status == "conflict"
    assert out[0].detail == {"key": "k", "exists": True, "value": {"v": 1}}
    assert session.values(b)["k"] == {"v": 1}
    # the right hash: ok
    out = session.write(b, (("set", "k", 2),), (("hash", "k", good),))
    assert session.run_until(lambda: bool(out))
    assert out[0].status == "ok"
    # a missing key
    out = session.write(b, (("set", "nope", 1),), (("hash", "nope", good),))
    assert session.run_until(lambda: bool(out))
    assert out[0].status == "missing" and out[0].detail == {"key": "nope"}
    out = session.write(b, (("del", "nope"),), (("exists", "nope"),))
    assert session.run_until(lambda: bool(out))
    assert out[0].status == "missing"
    # absent: conflict when the key exists
    out = session.write(a, (("set", "k", 3),), (("absent", "k"),))
    assert session.run_until(lambda: bool(out))
    assert out[0].status == "conflict" and out[0].detail["value"] == 2
    # a refused write changes nothing, anywhere
    assert session.settle()
    assert all(session.values(n) == {"k": 2} for n in (a, b))


def test_refused_writes(session: Session) -> None:
    a, b = session.start(2)
    cases = [
        ((), "invalid"),
        ((("join", a.me),), "invalid"),
        ((("set", "é" * 200, 1),), "invalid"),  # 400 bytes in UTF-8
        ((("set", "big", "x" * (CONFIG.max_value_size + 1)),), "too_large"),
    ]
    for ops, status in cases:
        out = session.write(b, ops)
        assert session.run_until(functools.partial(bool, out))
        assert out[0].status == status, ops
    assert session.settle()
    assert session.values(a) == {}


def test_counters_racing_on_one_key_are_exact() -> None:
    s = Session(3, max_delay=0.005)
    nodes = s.start(6)
    counters = [Counter(s.net, n.me.id, "hits", 25) for n in nodes]

    def pump() -> bool:
        for c in counters:
            c.pump()
        return all(c.left == 0 for c in counters)

    assert s.run_until(pump, 60.0), s.tail()
    assert s.settle()
    assert sum(c.conflicts for c in counters) > 0  # they did race
    assert all(s.values(n)["hits"] == 150 for n in nodes)


def test_graceful_host_leave_hands_over_at_once() -> None:
    s = Session(4)
    a, b, c, d = s.start(4)
    counters = [Counter(s.net, n.me.id, "n", 30) for n in (b, c, d)]
    pending = [s.write(n, (("set", f"pre/{n.me.name}", 1),)) for n in (b, c, d)]
    s.net.run(0.001)
    left_at = s.net.now
    s.net.leave(a.me.id)

    def handed_over() -> bool:
        for counter in counters:
            counter.pump()
        return b.role is Role.HOST and all(n.target_id == b.me.id for n in (c, d))

    assert s.run_until(handed_over, 2.0), s.tail()
    took = s.net.now - left_at
    assert took < CONFIG.host_timeout / 5, f"handoff took {took:.3f} s"
    # the new host confirms the handoff, so the old one closes at once too
    assert s.run_until(lambda: a.role is Role.CLOSED, CONFIG.host_timeout / 5)
    assert s.run_until(lambda: (handed_over(), all(x.left == 0 for x in counters))[1], 10.0)
    assert s.settle()
    assert all(p and p[0].status == "ok" for p in pending)
    for n in (b, c, d):
        values = s.values(n)
        assert values["n"] == 90
        assert all(values[f"pre/{m.me.name}"] == 1 for m in (b, c, d))
        assert s.members(n) == [b.me.id, c.me.id, d.me.id]
        left = [e for e in s.net.events[n.me.id] if isinstance(e, PeerLeft)]
        assert [(e.peer.id, e.reason) for e in left] == [(a.me.id, "left")]
    assert b.epoch == 2
    assert s.net.hosts_by_epoch == {1: {a.me.id}, 2: {b.me.id}}


def test_peer_leave(session: Session) -> None:
    a, b, c = session.start(3)
    session.net.leave(b.me.id)
    start = session.net.now
    assert session.settle(), session.tail()
    assert session.net.now - start < CONFIG.peer_timeout / 5
    assert b.role is Role.CLOSED
    for n in (a, c):
        assert session.members(n) == [a.me.id, c.me.id]
        left = [e for e in session.net.events[n.me.id] if isinstance(e, PeerLeft)]
        assert [(e.peer.id, e.reason) for e in left] == [(b.me.id, "left")]
    assert session.put(c, "x", 1).status == "ok"


def test_peer_that_times_out_rejoins_once(session: Session) -> None:
    a, b, c = session.start(3)
    session.put(a, "before", 1)
    session.net.partition({c.me.id})
    session.net.run(CONFIG.peer_timeout + 0.2)
    # the host removed it
    assert session.members(a) == [a.me.id, b.me.id]
    left = [e for e in session.net.events[b.me.id] if isinstance(e, PeerLeft)]
    assert [(e.peer.id, e.reason) for e in left] == [(c.me.id, "timeout")]
    session.put(a, "during", 2)
    session.net.heal()
    assert session.settle(), session.tail()
    assert a.role is Role.HOST and a.epoch == 1  # nobody took over
    for n in (a, b, c):
        assert session.members(n) == [a.me.id, b.me.id, c.me.id]
        assert session.values(n) == {"before": 1, "during": 2}
    assert len(session.digests()) == 1
    assert session.put(c, "after", 3).status == "ok"


def _record(acked: dict[str, Any], key: str, value: Any, outcome: Outcome) -> None:
    if outcome.status == "ok":
        acked[key] = value


def test_host_crash_successor_takes_over_with_everything_acked() -> None:
    s = Session(5)
    a, b, c, d = s.start(4)
    acked: dict[str, int] = {}
    for i in range(30):
        writer = (b, c, d)[i % 3]
        s.net.write(
            writer.me.id,
            (("set", f"k{i}", i),),
            (),
            functools.partial(_record, acked, f"k{i}", i),
        )
    s.net.run(0.004)  # some are acknowledged, some in flight
    crashed_at = s.net.now
    s.net.crash(a.me.id)
    assert s.settle(), s.tail()
    assert b.role is Role.HOST and b.epoch == 2  # the first in join order after the host
    assert s.net.now - crashed_at < 2 * CONFIG.host_timeout
    assert len(acked) == 30  # every write completes, through the failover
    for n in (b, c, d):
        assert {k: s.values(n)[k] for k in acked} == acked
        changed = [e for e in s.net.events[n.me.id] if isinstance(e, HostChanged)]
        assert changed[-1].new.id == b.me.id and changed[-1].epoch == 2
    assert s.net.hosts_by_epoch == {1: {a.me.id}, 2: {b.me.id}}


@pytest.mark.parametrize("seed", range(4))
def test_two_nodes_started_as_hosts_merge(seed: int) -> None:
    s = Session(seed)
    a = s.net.add_node("a", host=True)
    b = s.net.add_node("b", host=True)
    assert a.role is Role.HOST and b.role is Role.HOST and a.epoch == b.epoch == 1
    s.put(a, "from-a", 1)
    s.put(b, "from-b", 2)
    c = s.net.add_node("c")  # joins one of them
    assert s.settle(), s.tail()
    nodes = [a, b, c]
    hosts = [n for n in nodes if n.role is Role.HOST]
    assert len(hosts) == 1
    host = hosts[0]
    loser = b if host is a else a
    for n in nodes:
        assert n.replica.session_id == host.replica.session_id
        assert sorted(s.members(n)) == sorted(x.me.id for x in nodes)
    assert len(s.digests()) == 1
    # the loser's write was rolled back and it was told so
    lost_key = "from-b" if loser is b else "from-a"
    assert lost_key not in s.values(host)
    rolled = [e for e in s.net.events[loser.me.id] if isinstance(e, WritesRolledBack)]
    assert [w.keys for e in rolled for w in e.mine] == [(lost_key,)]
    assert s.put(loser, "again", 3).status == "ok"


def test_last_peer_standing_keeps_hosting() -> None:
    s = Session(6)
    a, b, c = s.start(3)
    s.put(b, "x", 1)
    s.net.crash(a.me.id)
    assert s.settle(), s.tail()
    assert b.role is Role.HOST
    s.net.crash(c.me.id)
    out = s.write(b, (("set", "y", 2),))  # waits for the successor that died
    s.net.run(0.1)
    assert not out
    assert s.settle(), s.tail()
    assert b.role is Role.HOST and s.members(b) == [b.me.id]
    assert out and out[0].status == "ok"
    assert s.put(b, "z", 3).status == "ok"
    assert s.values(b) == {"x": 1, "y": 2, "z": 3}
    # and a newcomer can join it
    d = s.net.add_node("d")
    assert s.settle()
    assert s.values(d) == s.values(b)


def test_rejoin_after_host_crash_catches_up_not_snapshot() -> None:
    s = Session(7)
    a, b, c = s.start(3)
    for i in range(10):
        s.put(c, f"k{i}", i)
    s.net.crash(a.me.id)
    assert s.settle(), s.tail()
    assert b.stats["welcome_catchup"] >= 1
    assert b.stats["welcome_snapshot"] == 0
