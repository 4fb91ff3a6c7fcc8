"""Presence, ephemeral / owner-only / ttl keys, messages and transactions,
under the simulator (no sockets, no sleeps)."""

from __future__ import annotations

from typing import Any

from simsession import Session

from p2pstate.core.node import Node, Role
from p2pstate.events import KeyDeleted, Message, PeerUpdated
from p2pstate.messages import EPHEMERAL, OWNER_ONLY


def _done(session: Session, node: Node, ops: tuple[tuple[Any, ...], ...], conds: Any = ()) -> Any:
    out = session.write(node, ops, conds)
    assert session.run_until(lambda: bool(out)), session.tail()
    return out[0]


def _messages(session: Session, node: Node) -> list[Message]:
    return [e for e in session.net.events[node.me.id] if isinstance(e, Message)]


def test_ephemeral_keys_go_with_their_owner_and_only_theirs(session: Session) -> None:
    host, a, b = session.start(3)
    assert _done(session, a, (("set", "a:pos", [1, 2], EPHEMERAL, 0.0),)).status == "ok"
    assert _done(session, b, (("set", "b:pos", [3], EPHEMERAL, 0.0),)).status == "ok"
    assert _done(session, b, (("set", "keep", 1),)).status == "ok"
    session.net.crash(a.me.id)  # kill -9: found by the host after peer_timeout
    assert session.run_until(lambda: "a:pos" not in host.replica.data, 3.0), session.tail()
    assert session.settle()
    for node in session.live():
        assert set(session.values(node)) == {"b:pos", "keep"}
    deleted = [e for e in session.net.events[b.me.id] if isinstance(e, KeyDeleted)]
    assert [e.key for e in deleted] == ["a:pos"]
    session.net.leave(b.me.id)  # a graceful leave takes them too
    assert session.run_until(lambda: "b:pos" not in host.replica.data), session.tail()
    assert session.values(host) == {"keep": 1}


def test_failover_keeps_live_peers_ephemeral_keys_and_drops_the_old_hosts(
    session: Session,
) -> None:
    host, a, b = session.start(3)
    _done(session, host, (("set", "host:pos", 0, EPHEMERAL, 0.0),))
    _done(session, b, (("set", "b:pos", 1, EPHEMERAL, 0.0),))
    session.net.crash(host.me.id)
    assert session.run_until(lambda: a.role is Role.HOST), session.tail()
    assert session.settle()
    for node in (a, b):
        assert session.values(node) == {"b:pos": 1}


def test_owner_only_keys_refuse_other_writers(session: Session) -> None:
    _, a, b = session.start(3)
    assert _done(session, a, (("set", "a:name", "ann", OWNER_ONLY, 0.0),)).status == "ok"
    refused = _done(session, b, (("set", "a:name", "mallory"),))
    assert refused.status == "denied" and refused.detail["owner"] == a.me.id
    assert _done(session, b, (("del", "a:name"),)).status == "denied"
    assert _done(session, a, (("set", "a:name", "anne"),)).status == "ok"  # the owner may
    assert session.settle()
    assert all(session.values(n)["a:name"] == "anne" for n in session.live())


def test_ttl_expires_by_the_host_clock_and_survives_a_failover(session: Session) -> None:
    host, a, b = session.start(3)
    start = session.net.now  # before any of these writes is applied anywhere
    _done(session, b, (("set", "short", 1, 0, 0.3),))
    _done(session, b, (("set", "long", 2, 0, 2.0),))
    _done(session, b, (("set", "forever", 3),))
    assert session.run_until(lambda: "short" not in host.replica.data, 1.0), session.tail()
    assert session.net.now - start >= 0.29
    assert "long" in host.replica.data
    session.net.crash(host.me.id)  # the new host keeps the deadline
    assert session.run_until(lambda: a.role is Role.HOST), session.tail()
    assert "long" in a.replica.data
    assert session.run_until(lambda: "long" not in a.replica.data, 3.0), session.tail()
    assert session.net.now - start >= 1.99
    assert session.settle()
    assert session.values(b) == {"forever": 3}


def test_ttl_of_a_snapshot_is_what_was_left(session: Session) -> None:
    host, _ = session.start(2)
    _done(session, host, (("set", "t", 1, 0, 1.0),))
    session.net.run(0.6)
    late = session.net.add_node("late")
    assert session.settle()
    session.net.crash(host.me.id)  # the late joiner may now host: 0.4 s were left
    assert session.run_until(lambda: "t" not in late.replica.data, 3.0), session.tail()


def test_messages_are_delivered_once_in_order_and_not_stored(session: Session) -> None:
    host, a, b = session.start(3)
    for i in range(5):
        session.write(a, (("msg", "", {"n": i}),))
    _done(session, b, (("msg", a.me.id, "psst"),))
    assert session.settle()
    for node in (host, b):
        got = [m.payload for m in _messages(session, node) if m.sender.id == a.me.id]
        assert got == [{"n": i} for i in range(5)]
    assert [m.payload for m in _messages(session, a)] == ["psst"]  # the one sent to it
    assert [m.to for m in _messages(session, a)] == [a.me.id]
    assert not [m for m in _messages(session, a) if m.sender.id == a.me.id]
    assert all(not n.replica.data for n in session.live()), "messages are not state"
    assert _done(session, b, (("msg", "nobody", 1),)).status == "no_peer"


def test_messages_survive_a_host_crash_exactly_once(session: Session) -> None:
    host, a, b = session.start(3)
    for i in range(20):
        session.write(b, (("msg", "", i),))
        session.net.run(0.002)
        if i == 10:
            session.net.crash(host.me.id)
    assert session.run_until(lambda: not b.writer.pending, 5.0), session.tail()
    assert session.settle()
    got = [m.payload for m in _messages(session, a) if m.sender.id == b.me.id]
    assert got == list(range(20)), got


def test_profile_updates_reach_everyone(session: Session) -> None:
    _, a, b = session.start(3)
    assert _done(session, a, (("profile", {"color": "red"}),)).status == "ok"
    assert session.settle()
    updates = [e for e in session.net.events[b.me.id] if isinstance(e, PeerUpdated)]
    assert updates and updates[-1].peer.id == a.me.id
    assert updates[-1].peer.profile == {"color": "red"}
    for node in session.live():
        assert node.replica.member(a.me.id).profile == {"color": "red"}  # type: ignore[union-attr]


def test_a_transaction_is_all_or_nothing(session: Session) -> None:
    from p2pstate.codec import hash_value

    _, a, b = session.start(3)
    _done(session, a, (("set", "gold", 10), ("set", "sword", None)))
    assert session.settle()
    # Buy the sword: read gold and sword, write both, on condition neither changed.
    conds = (("hash", "gold", hash_value(10)), ("hash", "sword", hash_value(None)))
    buy = (("set", "gold", 3), ("set", "sword", "b"))
    _done(session, a, (("set", "gold", 11),))  # a changes gold first
    lost = _done(session, b, buy, conds)
    assert lost.status == "conflict"
    assert session.settle()
    assert session.values(b) == {"gold": 11, "sword": None}, "a refused commit wrote nothing"
    conds = (("hash", "gold", hash_value(11)), ("hash", "sword", hash_value(None)))
    assert _done(session, b, buy, conds).status == "ok"
    assert session.settle()
    assert session.values(a) == {"gold": 3, "sword": "b"}


def test_a_full_session_refuses_newcomers_but_not_returning_members() -> None:
    session = Session()
    host = session.net.add_node("host")
    session.net.run(0.05)
    _done(session, host, (("info", {"max_players": 2}),))
    a = session.net.add_node("a")
    assert session.settle()
    late = session.net.add_node("late")
    assert session.run_until(lambda: late.refused is not None), session.tail()
    assert late.refused == "full" and late.role is Role.CLOSED
    assert len(host.replica.members) == 2
    # A member cut off long enough to be dropped still comes back in.
    session.net.partition({a.me.id})
    session.net.run(1.5)
    session.net.heal()
    assert session.run_until(lambda: host.replica.member(a.me.id) is not None, 5.0)
    assert a.refused is None
