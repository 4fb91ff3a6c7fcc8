"""Changing modes and limits after a session starts (the ``("access_set",
settings)`` op behind ``SharedState.set_access``), and a session started
with a stored access state, under the simulator. Node ids are
``"<identity>.<instance>"``."""

from __future__ import annotations

import random
from typing import Any

import msgpack
import pytest
from simsession import Session, done, join_player, member_ids, start_players

from p2pstate.core.access import (
    ADMIN_ONLY,
    ANY,
    AUTHORIZED_ONLY,
    MODES,
    UNBANNED_ONLY,
    Access,
    settings_from_wire,
)
from p2pstate.core.node import Node, Role
from p2pstate.errors import ProtocolError
from p2pstate.events import Expelled, PeerLeft
from p2pstate.messages import from_frame


def test_only_the_admin_may_change_modes_and_limits() -> None:
    session, (admin, bob) = start_players("admin.1", "bob.1")
    outcome = done(session, bob, ("access_set", {"writemode": ADMIN_ONLY}))
    assert outcome.status == "denied"
    assert outcome.detail == {"reason": "admin", "op": "access_set"}
    assert session.settle()
    assert admin.replica.access.writemode == ANY and bob.replica.access.writemode == ANY
    assert done(session, admin, ("access_set", {"writemode": ADMIN_ONLY})).status == "ok"
    assert session.settle()
    assert bob.replica.access.writemode == ADMIN_ONLY
    assert done(session, bob, ("set", "k", 1)).status == "denied"


def test_a_change_of_settings_changes_only_the_fields_it_names() -> None:
    start = Access(readmode=UNBANNED_ONLY, max_keys=50, write_rate=100.0, write_burst=10)
    session, (admin, bob) = start_players("admin.1", "bob.1", access=start)
    assert done(session, admin, ("acl", "ban", "eve")).status == "ok"
    assert done(session, admin, ("access_set", {"max_keys": 2, "write_rate": 5})).status == "ok"
    assert session.settle()
    for node in (admin, bob):
        access = node.replica.access
        assert (access.max_keys, access.write_rate) == (2, 5.0)
        assert isinstance(access.write_rate, float)
        assert (access.readmode, access.write_burst) == (UNBANNED_ONLY, 10)
        assert (access.admin, access.banned) == ("admin", frozenset({"eve"}))
    # The new limit acts on the next write.
    assert done(session, bob, ("set", "a", 1)).status == "ok"
    assert done(session, bob, ("set", "b", 1)).status == "ok"
    assert done(session, bob, ("set", "c", 1)).status == "quota"


def test_changed_settings_survive_a_host_crash() -> None:
    session, (admin, succ, other) = start_players("admin.1", "succ.1", "other.1")
    change = {"writemode": AUTHORIZED_ONLY, "max_keys": 1}
    assert done(session, admin, ("acl", "authorize", "succ")).status == "ok"
    assert done(session, admin, ("access_set", change)).status == "ok"
    session.net.crash(admin.me.id)
    assert session.run_until(lambda: succ.role is Role.HOST), session.tail()
    assert session.settle(), session.tail()
    for node in (succ, other):
        assert node.replica.access.settings() == {**Access().settings(), **change}
        assert node.replica.access.admin == "admin"
    refused = done(session, other, ("set", "k", 1))
    assert refused.status == "denied" and refused.detail["mode"] == AUTHORIZED_ONLY
    assert done(session, succ, ("set", "k", 1)).status == "ok"
    assert done(session, succ, ("set", "k2", 1)).status == "quota"
    # The new host is not the admin: it may not change them back.
    assert done(session, succ, ("access_set", {"writemode": ANY})).status == "denied"
    # The admin restarted may.
    back = join_player(session, "admin.2")
    assert back.ready
    assert done(session, back, ("access_set", {"writemode": ANY})).status == "ok"
    assert done(session, other, ("set", "k", 2)).status == "ok"
    assert session.settle()
    assert len(session.digests()) == 1


def test_tightening_readmode_expels_who_may_no_longer_read() -> None:
    session, (admin, friend, stranger, villain) = start_players("admin.1", "friend.1", "s.1", "v.1")
    assert done(session, admin, ("acl", "authorize", "friend")).status == "ok"
    outcome = done(session, admin, ("access_set", {"readmode": AUTHORIZED_ONLY}))
    assert outcome.status == "ok"
    # The change and the removals are one change: no replica holds one alone.
    assert member_ids(admin) == ["admin.1", "friend.1"]
    assert session.run_until(lambda: stranger.role is Role.CLOSED and villain.role is Role.CLOSED)
    assert session.settle(), session.tail()
    assert member_ids(friend) == ["admin.1", "friend.1"]
    for gone in (stranger, villain):
        assert gone.refused == "not_authorized"
        assert [e.reason for e in session.net.events[gone.me.id] if isinstance(e, Expelled)] == [
            "not_authorized"
        ]
    left = [e for e in session.net.events[friend.me.id] if isinstance(e, PeerLeft)]
    assert sorted((e.peer.id, e.reason) for e in left) == [
        ("s.1", "not_authorized"),
        ("v.1", "not_authorized"),
    ]
    assert join_player(session, "s.2").refused == "not_authorized"
    # Loosening it lets them back in; ADMIN_ONLY then removes the friend too.
    assert done(session, admin, ("access_set", {"readmode": ANY})).status == "ok"
    assert join_player(session, "s.3").ready
    assert done(session, admin, ("access_set", {"readmode": ADMIN_ONLY})).status == "ok"
    assert session.settle(), session.tail()
    assert member_ids(admin) == ["admin.1"]


def test_a_readmode_that_refuses_the_host_hands_hosting_over() -> None:
    """After a handoff the admin is a peer; ADMIN_ONLY refuses the host it follows."""
    session, (first, b) = start_players("admin.1", "b.1")
    session.net.leave(first.me.id)
    assert session.run_until(lambda: b.role is Role.HOST), session.tail()
    admin = join_player(session, "admin.2")
    assert admin.ready and admin.role is Role.PEER
    outcome = session.write(admin, (("access_set", {"readmode": ADMIN_ONLY}),))
    assert session.run_until(lambda: bool(outcome), 5.0), session.tail()
    assert outcome[0].status == "ok"
    assert session.run_until(lambda: admin.role is Role.HOST), session.tail()
    assert session.settle(), session.tail()
    assert b.refused == "not_authorized" and b.role in (Role.LEAVING, Role.CLOSED)
    assert member_ids(admin) == ["admin.2"]


def test_access_settings_are_validated_on_the_wire() -> None:
    assert settings_from_wire({"readmode": ADMIN_ONLY, "write_rate": 2}) == {
        "readmode": ADMIN_ONLY,
        "write_rate": 2,
    }
    bad: list[Any] = [
        {},
        {"admin": "eve"},  # the admin is never changed
        {"banned": []},  # the lists have their own ops
        {"readmode": "everyone"},
        {"max_keys": 0},
        {"max_keys": True},
        {"write_rate": float("nan")},
        [],
    ]
    for settings in bad:
        with pytest.raises(ProtocolError):
            settings_from_wire(settings)
        write = [4, "b.1", 1, 1, 0, [["access_set", settings]], []]
        with pytest.raises(ProtocolError):
            from_frame(msgpack.packb(write), max_size=1 << 20)


def test_a_session_from_a_stored_access_state_keeps_its_admin_and_bans() -> None:
    """A store's access state is kept whole by whoever restarts the session."""
    stored = Access(
        admin="admin",
        readmode=UNBANNED_ONLY,
        writemode=AUTHORIZED_ONLY,
        authorized=frozenset({"friend"}),
        banned=frozenset({"eve"}),
        max_keys=7,
    )
    session = Session(1, access=Access(readmode=ANY))  # the starter's options: unused
    host = session.net.add_node("friend.1", node_id="friend.1", stored_access=stored)
    assert host.replica.access == stored
    assert join_player(session, "eve.1").refused == "banned"
    plain = join_player(session, "plain.1")
    assert plain.ready and plain.replica.access == stored
    assert done(session, plain, ("set", "k", 1)).status == "denied"
    assert done(session, plain, ("access_set", {"writemode": ANY})).status == "denied"
    admin = join_player(session, "admin.7")
    assert done(session, admin, ("access_set", {"writemode": ANY})).status == "ok"
    assert done(session, plain, ("set", "k", 1)).status == "ok"


def test_a_stored_access_state_that_refuses_the_starter_is_an_error() -> None:
    node = Node(node_id="eve.1", name="eve", endpoints=("sim://eve.1",))
    with pytest.raises(ValueError, match="refuses eve"):
        node.start_host("s", 0.0, stored_access=Access(admin="a", banned=frozenset({"eve"})))
    assert node.role is not Role.HOST and not node.ready


@pytest.mark.parametrize("seed", range(12))
def test_random_setting_changes_and_crashes_keep_every_replica_agreed(seed: int) -> None:
    rng = random.Random(seed)
    session, nodes = start_players("admin.1", "p1.1", "p2.1", "p3.1", seed=seed)
    admin = nodes[0]
    players = ["p1", "p2", "p3"]
    instance = 1
    for _ in range(12):
        action = rng.choice(["mode", "limit", "authorize", "crash", "restart"])
        live = session.live()
        admin_up = admin.me.id in session.net.alive and admin.role in (Role.HOST, Role.PEER)
        if action == "crash" and len(live) > 1:
            session.net.crash(rng.choice(live).me.id)
            assert session.settle(), session.tail()
        elif action == "restart":
            instance += 1
            who = "admin" if not admin_up else rng.choice(players)
            node = session.net.add_node(node_id=f"{who}.{instance}")
            admin = node if who == "admin" else admin
        elif action == "mode" and admin_up:
            name = rng.choice(["readmode", "writemode"])
            session.write(admin, (("access_set", {name: rng.choice(MODES)}),))
        elif action == "limit" and admin_up:
            session.write(admin, (("access_set", {"max_keys": rng.randint(1, 9)}),))
        elif action == "authorize" and admin_up:
            session.write(admin, (("acl", "authorize", rng.choice(players)),))
        session.net.run(rng.uniform(0.0, 0.3))
    assert session.settle(20.0), session.tail()
    live = session.live()
    accesses = {n.replica.access for n in live}
    assert len(accesses) == 1, session.tail()
    access = accesses.pop()
    for node in live:
        assert access.may_read(node.me.id.split(".")[0]), (node.me.id, access)
    assert len({tuple(member_ids(n)) for n in live}) == 1
    assert len(session.digests()) == 1


def test_the_admin_can_always_lift_a_rate_it_set() -> None:
    """A write_rate set by mistake (5e-324 writes a second passes every check)
    must not lock the admin out of changing it back: a change of settings
    takes no token. Found by the API fuzzer (issue 15)."""
    session, (admin, bob) = start_players("admin.1", "bob.1", access=Access(write_burst=2))
    tiny = {"write_rate": 5e-324, "write_burst": 1}
    assert done(session, admin, ("access_set", tiny)).status == "ok"
    assert done(session, admin, ("set", "k", 1)).status == "ok"
    assert done(session, admin, ("set", "k", 2)).status == "rate_limited"
    assert done(session, bob, ("access_set", {"write_rate": 5.0})).status == "denied"
    assert (
        done(session, admin, ("access_set", {"write_rate": 1e6, "write_burst": 10})).status == "ok"
    )
    assert done(session, admin, ("set", "k", 3)).status == "ok"
    assert done(session, bob, ("set", "k", 4)).status == "ok"
