"""Permission modes, the admin, authorize/ban and the host's limits, under the
simulator (no sockets, no sleeps). Node ids are ``"<identity>.<instance>"``,
so ``"bob.2"`` is player bob restarted."""

from __future__ import annotations

import logging
import random
from dataclasses import replace
from typing import Any

import msgpack
import pytest
from chaos import Kind, run_schedule
from simsession import Session, done, join_player, member_ids, start_players

from p2pstate.core.access import (
    ACL_ACTIONS as ACTIONS,
)
from p2pstate.core.access import (
    ADMIN_ONLY,
    ANY,
    AUTHORIZED_ONLY,
    MODES,
    Access,
)
from p2pstate.core.node import Node, Role
from p2pstate.errors import ProtocolError
from p2pstate.events import Expelled, PeerLeft
from p2pstate.messages import (
    Change,
    ChangeMsg,
    Member,
    Refused,
    Welcome,
    Write,
    from_frame,
    to_frame,
)


def _expelled(session: Session, node: Node) -> list[str]:
    return [e.reason for e in session.net.events[node.me.id] if isinstance(e, Expelled)]


# ------------------------------------------------------------------ modes x ops


def _may_write(mode: str, who: str) -> bool:
    """AppState's modes, spelt out independently of core/access.py."""
    if who == "admin":
        return True
    if mode == ADMIN_ONLY:
        return False
    if mode == AUTHORIZED_ONLY:
        return who == "auth"
    return True


OPS: dict[str, tuple[Any, ...]] = {
    "set": ("set", "k", 1),
    "del": ("del", "k"),
    "msg": ("msg", "", "hi"),
    "profile": ("profile", {"ready": True}),
    "info": ("info", {"joinable": True}),
    "acl": ("acl", "authorize", "somebody"),
}


@pytest.mark.parametrize("mode", MODES)
def test_every_writemode_against_every_op(mode: str) -> None:
    session, (admin, auth, plain) = start_players(
        "admin.1", "auth.1", "plain.1", access=Access(writemode=mode)
    )
    assert done(session, admin, ("acl", "authorize", "auth")).status == "ok"
    for who, node in (("admin", admin), ("auth", auth), ("plain", plain)):
        for name, op in OPS.items():
            outcome = done(session, node, op)
            if name == "acl":
                allowed = who == "admin"
            elif name == "info":
                allowed = who == "admin" or mode == ANY  # settings: the admin's once restricted
            elif name == "profile":
                allowed = True  # a member's own bookkeeping
            else:
                allowed = _may_write(mode, who)
            expected = "ok" if allowed else "denied"
            assert outcome.status == expected, (mode, who, name, outcome)
            if name in ("set", "del", "msg") and not allowed:
                assert outcome.detail == {"reason": "writemode", "mode": mode}
    assert session.settle()
    assert len(session.digests()) == 1


@pytest.mark.parametrize("mode", MODES)
def test_readmode_decides_who_may_join(mode: str) -> None:
    session, (admin,) = start_players("admin.1", access=Access(readmode=mode))
    assert done(session, admin, ("acl", "authorize", "auth")).status == "ok"
    assert done(session, admin, ("acl", "ban", "villain")).status == "ok"
    joined = {who: join_player(session, f"{who}.1") for who in ("auth", "plain", "villain")}
    for who, node in joined.items():
        allowed = who != "villain" and _may_write(mode, who)
        assert node.ready is allowed, (mode, who)
        if not allowed:
            assert node.role is Role.CLOSED
            assert node.refused == ("banned" if who == "villain" else "not_authorized")
            assert node.me.id not in member_ids(admin)
    # A mode other than ANY makes the settings the admin's too.
    if joined["auth"].ready:
        outcome = done(session, joined["auth"], ("info", {"joinable": True}))
        assert outcome.status == ("ok" if mode == ANY else "denied"), (mode, outcome)


def test_the_admin_is_the_creators_identity_on_every_replica() -> None:
    session, nodes = start_players("admin.1", "b.1", "c.1")
    for node in nodes:
        assert node.replica.access.admin == "admin"
    # A player who is not the admin cannot make itself admin by any write.
    forged = Access(admin="b", readmode=ANY)
    assert done(session, nodes[1], ("access", forged)).status == "invalid"
    assert nodes[0].replica.access.admin == "admin"


# ------------------------------------------------------------------ bans


def test_a_ban_removes_every_instance_of_the_identity_and_refuses_it_after() -> None:
    session, (admin, bob1, bob2, carol) = start_players("admin.1", "bob.1", "bob.2", "carol.1")
    pending = session.write(bob1, (("set", "late", 1),))  # still in flight when the ban lands
    assert done(session, admin, ("acl", "ban", "bob")).status == "ok"
    # The ban and the removal of bob's peers are one change: no replica has one alone.
    assert member_ids(admin) == ["admin.1", "carol.1"]
    assert session.run_until(lambda: bob1.role is Role.CLOSED and bob2.role is Role.CLOSED)
    assert session.settle(), session.tail()
    for node in (admin, carol):
        assert member_ids(node) == ["admin.1", "carol.1"]
        assert node.replica.access.banned == {"bob"}
    left = [e for e in session.net.events[carol.me.id] if isinstance(e, PeerLeft)]
    assert sorted((e.peer.id, e.reason) for e in left) == [("bob.1", "banned"), ("bob.2", "banned")]
    for bob in (bob1, bob2):
        assert bob.refused == "banned"
        assert _expelled(session, bob) == ["banned"]
    assert pending and pending[0].status in ("ok", "denied")  # answered, not left hanging
    # Restarted, bob is refused at once; a different player is not.
    again = join_player(session, "bob.3")
    assert again.refused == "banned" and not again.ready
    assert join_player(session, "dave.1").ready
    # Unbanned, bob may come back.
    assert done(session, admin, ("acl", "unban", "bob")).status == "ok"
    assert join_player(session, "bob.4").ready


def test_only_the_admin_may_ban_and_the_admin_cannot_be_banned() -> None:
    session, (admin, bob) = start_players("admin.1", "bob.1")
    outcome = done(session, bob, ("acl", "ban", "admin"))
    assert outcome.status == "denied" and outcome.detail["reason"] == "admin"
    outcome = done(session, admin, ("acl", "ban", "admin"))
    assert outcome.status == "invalid"
    assert admin.replica.access.banned == frozenset()
    assert session.settle()
    assert member_ids(bob) == ["admin.1", "bob.1"]


def test_a_ban_and_authorized_only_hold_across_a_host_crash() -> None:
    session, (admin, auth, plain, villain) = start_players(
        "admin.1", "auth.1", "plain.1", "villain.1", access=Access(writemode=AUTHORIZED_ONLY)
    )
    assert done(session, admin, ("acl", "authorize", "auth")).status == "ok"
    assert done(session, admin, ("acl", "ban", "villain")).status == "ok"
    assert session.settle()
    assert villain.refused == "banned" and villain.role is Role.CLOSED
    session.net.crash(admin.me.id)
    assert session.run_until(lambda: auth.role is Role.HOST), session.tail()
    assert session.settle(), session.tail()
    # The new host is not the admin, and enforces the same rules.
    assert auth.replica.access.admin == "admin"
    assert done(session, auth, ("set", "k", 1)).status == "ok"
    refused = done(session, plain, ("set", "k", 2))
    assert refused.status == "denied" and refused.detail["mode"] == AUTHORIZED_ONLY
    assert done(session, auth, ("acl", "unban", "villain")).status == "denied"
    assert join_player(session, "villain.2").refused == "banned"
    # The admin restarted is the admin again, and its rules change everywhere.
    back = join_player(session, "admin.2")
    assert back.ready
    assert done(session, back, ("acl", "authorize", "plain")).status == "ok"
    assert done(session, plain, ("set", "k", 3)).status == "ok"
    assert session.settle()
    assert len(session.digests()) == 1


def test_a_banned_successor_never_takes_over() -> None:
    session, (admin, succ, other) = start_players("admin.1", "succ.1", "other.1")
    assert admin.successor_id == succ.me.id
    assert done(session, admin, ("acl", "ban", "succ")).status == "ok"
    assert session.run_until(lambda: succ.role is Role.CLOSED), session.tail()
    assert session.settle()
    assert admin.successor_id == other.me.id
    session.net.crash(admin.me.id)
    assert session.run_until(lambda: other.role is Role.HOST), session.tail()
    session.net.run(2.0)
    assert succ.role is Role.CLOSED and succ.refused == "banned"
    assert all(succ.me.id not in ids for ids in session.net.hosts_by_epoch.values())


def test_a_successor_that_learns_its_ban_only_from_the_change_leaves() -> None:
    """The host dies right after sending the ban change, before its Refused:
    the banned successor applies the change, expels itself, never hosts."""
    session, (admin, succ, other) = start_players("admin.1", "succ.1", "other.1")
    out = session.write(admin, (("acl", "ban", "succ"),))
    assert session.run_until(lambda: succ.replica.access.banned == {"succ"}), session.tail()
    session.net.crash(admin.me.id, lose_in_flight=True)
    assert succ.role is Role.CLOSED and succ.refused == "banned"
    assert session.run_until(lambda: other.role is Role.HOST), session.tail()
    assert session.settle(), session.tail()
    assert member_ids(other) == ["other.1"]
    assert out == [] or out[0].status == "ok"


def test_banning_the_host_hands_hosting_over_first() -> None:
    """After a handoff the admin is a peer; it bans the host it follows."""
    session, (first, b, c) = start_players("admin.1", "b.1", "c.1")
    session.net.leave(first.me.id)
    assert session.run_until(lambda: b.role is Role.HOST), session.tail()
    admin = join_player(session, "admin.2")
    assert admin.ready and admin.role is Role.PEER
    outcome = session.write(admin, (("acl", "ban", "b"),))
    assert session.run_until(lambda: bool(outcome), 5.0), session.tail()
    assert outcome[0].status == "ok"
    assert b.refused == "banned" and b.role in (Role.LEAVING, Role.CLOSED)
    assert session.run_until(lambda: c.role is Role.HOST), session.tail()
    assert session.settle(), session.tail()
    assert member_ids(c) == ["c.1", "admin.2"]
    assert _expelled(session, b) == ["banned"]


def test_unauthorize_under_an_authorized_readmode_removes_the_member() -> None:
    session, (admin,) = start_players("admin.1", access=Access(readmode=AUTHORIZED_ONLY))
    done(session, admin, ("acl", "authorize", "guest"))
    guest = join_player(session, "guest.1")
    assert guest.ready
    done(session, admin, ("acl", "unauthorize", "guest"))
    assert session.run_until(lambda: guest.role is Role.CLOSED), session.tail()
    assert guest.refused == "not_authorized"
    assert session.settle()
    assert member_ids(admin) == ["admin.1"]


# ------------------------------------------------------------------ limits


def test_max_keys_refuses_a_new_key_but_not_an_overwrite_or_a_delete() -> None:
    session, (host, peer) = start_players("h.1", "p.1", access=Access(max_keys=3))
    for i in range(3):
        assert done(session, peer, ("set", f"k{i}", i)).status == "ok"
    refused = done(session, peer, ("set", "k3", 3))
    assert refused.status == "quota" and refused.detail == {"limit": "max_keys", "max": 3}
    assert done(session, peer, ("set", "k0", "again")).status == "ok"
    # One change that deletes one key and adds another keeps the count.
    assert done(session, peer, ("del", "k1"), ("set", "k3", 3)).status == "ok"
    assert sorted(host.replica.data) == ["k0", "k2", "k3"]
    # The new host enforces the same limit.
    session.net.crash(host.me.id)
    assert session.run_until(lambda: peer.role is Role.HOST), session.tail()
    assert done(session, peer, ("set", "k9", 9)).status == "quota"


def test_max_total_bytes_counts_values_and_frees_on_delete() -> None:
    session, (host, peer) = start_players("h.1", "p.1", access=Access(max_total_bytes=1000))
    assert done(session, peer, ("set", "a", "x" * 600)).status == "ok"
    refused = done(session, peer, ("set", "b", "y" * 600))
    assert refused.status == "quota" and refused.detail["limit"] == "max_total_bytes"
    assert done(session, peer, ("set", "a", ["x" * 100])).status == "ok"  # shrinks it
    assert done(session, peer, ("set", "b", "y" * 600)).status == "ok"
    assert done(session, peer, ("del", "a")).status == "ok"
    assert session.settle()
    for node in (host, peer):
        assert node.replica.total_bytes == 601  # every replica counts alike
    assert done(session, peer, ("set", "c", "z" * 350)).status == "ok"


def test_write_rate_is_a_token_bucket_on_the_injected_clock() -> None:
    session, (host, peer) = start_players("h.1", "p.1", access=Access(write_rate=10, write_burst=5))
    outs = [session.write(peer, (("set", "k", i),)) for i in range(7)]
    assert session.run_until(lambda: all(outs)), session.tail()
    statuses = [o[0].status for o in outs]
    assert statuses == ["ok"] * 5 + ["rate_limited"] * 2
    assert outs[5][0].detail == {"rate": 10.0, "burst": 5}
    assert host.replica.data["k"].value == 4
    # Every writer has its own bucket.
    assert done(session, host, ("set", "h", 1)).status == "ok"
    session.net.run(0.5)  # five more tokens, by the simulated clock
    outs = [session.write(peer, (("set", "k", i),)) for i in range(6)]
    assert session.run_until(lambda: all(outs)), session.tail()
    assert [o[0].status for o in outs] == ["ok"] * 5 + ["rate_limited"]


def test_a_refused_write_is_answered_once_and_again_after_a_failover() -> None:
    """A refusal is a numbered change: the writer's next requests go on, and
    a resent refused request gets its first answer from the new host."""
    session, (host, succ, writer) = start_players(
        "h.1", "s.1", "w.1", access=Access(writemode=ADMIN_ONLY)
    )
    first = done(session, writer, ("set", "k", 1))
    assert first.status == "denied" and first.detail["mode"] == ADMIN_ONLY
    assert done(session, writer, ("profile", {"x": 1})).status == "ok"
    out = session.write(writer, (("set", "k", 2),))
    assert session.run_until(lambda: succ.replica.dedupe["w.1"].last_req == 3), session.tail()
    session.net.crash(host.me.id, lose_in_flight=True)  # its answer, if sent, is lost
    assert session.run_until(lambda: bool(out), 5.0), session.tail()
    assert out[0].status == "denied"
    assert succ.role is Role.HOST and "k" not in succ.replica.data
    assert succ.replica.dedupe["w.1"].last_req == 3, "the resent request was not ordered again"


# ------------------------------------------------------------------ forged ids


def test_a_write_naming_another_member_is_refused() -> None:
    session, (host, bob, _) = start_players("h.1", "bob.1", "carol.1")
    seq = host.replica.seq
    fake_carol = Member(id="carol.1", name="carol", endpoints=("sim://x",))
    for op in (
        ("join", fake_carol),
        ("leave", "carol.1", "left"),
        ("term", 9, "bob.1", "h.1", "takeover"),
        ("access", Access(admin="bob")),
    ):
        assert done(session, bob, op).status == "invalid", op
    assert host.stats["forged_ops"] == 4
    assert session.settle()
    assert member_ids(host) == ["h.1", "bob.1", "carol.1"]
    assert host.replica.host_id == "h.1" and host.replica.access.admin == "h"
    assert host.replica.seq == seq + 4  # each refusal is one empty change


def test_a_change_from_a_peer_that_is_not_the_host_is_dropped() -> None:
    """bob forges a change in carol's name and sends it to carol directly."""
    session, (_, _, carol) = start_players("h.1", "bob.1", "carol.1")
    forged = Change(
        seq=carol.replica.seq + 1,
        epoch=carol.epoch,
        origin="h.1",
        writer="h.1",
        req=99,
        ops=(("set", "gold", 10**6),),
    )
    msg = ChangeMsg(sender="bob.1", epoch=carol.epoch, change=forged, ack=False)
    session.net.send_raw("carol.1", to_frame(msg))
    session.net.run(0.1)
    assert "gold" not in carol.replica.data
    assert carol.stats["dropped: ChangeMsg from a node that is not our host"] == 1


def test_a_welcome_naming_another_host_is_dropped() -> None:
    session = Session(access=None)
    host = session.net.add_node("h", node_id="h.1")
    joiner = session.net.add_node("j", node_id="j.1")
    # Before the real welcome arrives, the host's id sends one naming another.
    fake = Welcome(
        sender="h.1",
        epoch=1,
        session_id=host.replica.session_id,
        host_id="mallory.1",
        snapshot=host.replica.snapshot(),
        changes=(),
    )
    joiner.receive(from_frame(to_frame(fake), max_size=1 << 20), session.net.now)
    # ...and one whose snapshot names another host.
    snap = replace(host.replica.snapshot(), host_id="mallory.1")
    fake = replace(fake, host_id="h.1", snapshot=snap)
    joiner.receive(from_frame(to_frame(fake), max_size=1 << 20), session.net.now)
    assert not joiner.ready
    assert joiner.stats["dropped: welcome naming another node as host"] == 2
    assert session.settle()
    assert joiner.ready


def test_a_write_is_always_in_its_senders_name() -> None:
    """A Write has no writer field: the host takes the writer from the
    sender, so an owner-only key records who really sent it."""
    session, (host, bob) = start_players("h.1", "bob.1")
    write = Write(sender="bob.1", epoch=host.epoch, req=1, acked_upto=0, ops=(), conds=())
    body = to_frame(write)
    assert from_frame(body, max_size=1 << 20) == write
    assert done(session, bob, ("set", "mine", 1, 2, 0.0)).status == "ok"
    assert host.replica.data["mine"].owner == "bob.1"


# ------------------------------------------------------------------ wire


def test_acl_ops_and_the_access_state_are_validated_on_the_wire() -> None:
    access = Access(
        admin="a", readmode=AUTHORIZED_ONLY, authorized=frozenset({"b"}), banned=frozenset({"c"})
    )
    assert Access.from_wire(access.to_wire()) == access
    snap = Session().net.add_node("x", node_id="x.1").replica.snapshot()
    assert snap.access.admin == "x"
    bad = [
        {**access.to_wire(), "readmode": "everyone"},
        {**access.to_wire(), "extra": 1},
        {**access.to_wire(), "banned": ["a.b"]},  # a peer id, not an identity
        {**access.to_wire(), "banned": ["x" * 65]},
        {**access.to_wire(), "write_rate": float("nan")},
        {**access.to_wire(), "max_keys": True},
        [],
    ]
    for wire in bad:
        with pytest.raises(ProtocolError):
            Access.from_wire(wire)
    for op in (["acl", "promote", "b"], ["acl", "ban", ""], ["acl", "ban", 7], ["acl", "ban"]):
        write = [4, "b.1", 1, 1, 0, [op], []]
        with pytest.raises(ProtocolError):
            from_frame(_pack(write), max_size=1 << 20)


def _pack(body: list[Any]) -> bytes:
    packed: bytes = msgpack.packb(body)
    return packed


# ------------------------------------------------------------------ property


@pytest.mark.parametrize("seed", range(20))
def test_random_acl_changes_and_faults_keep_every_replica_agreed(seed: int) -> None:
    rng = random.Random(seed)
    mode = rng.choice(MODES)
    session, nodes = start_players(
        "admin.1", "p1.1", "p2.1", "p3.1", access=Access(readmode=mode), seed=seed
    )
    admin = nodes[0]
    players = ["p1", "p2", "p3", "p4"]
    instance = 1

    def admin_up() -> bool:
        return admin.me.id in session.net.alive and admin.ready and admin.role is not Role.CLOSED

    for _ in range(14):
        action = rng.choice(
            ["authorize", "unauthorize", "ban", "unban", "crash", "restart", "split"]
        )
        live = session.live()
        if action == "crash" and len(live) > 1:
            # any node, the admin and the host too; one crash at a time
            session.net.crash(rng.choice(live).me.id)
            assert session.settle(), session.tail()
        elif action == "split" and len(live) > 1:
            # the admin's changes on one side, a new host on the other; they merge
            cut = {n.me.id for n in rng.sample(live, rng.randint(1, len(live) - 1))}
            session.net.partition(cut)
            if admin_up():
                session.write(admin, (("acl", rng.choice(ACTIONS), rng.choice(players)),))
            session.net.run(rng.uniform(0.5, 1.5))
            session.net.heal()
            assert session.settle(20.0), session.tail()
        elif action == "restart":
            instance += 1
            who = "admin" if not admin_up() and rng.random() < 0.5 else rng.choice(players)
            node = session.net.add_node(node_id=f"{who}.{instance}")
            admin = node if who == "admin" else admin
        elif action in ACTIONS and admin_up():
            session.write(admin, (("acl", action, rng.choice(players)),))
        session.net.run(rng.uniform(0.0, 0.3))
    assert session.settle(20.0), session.tail()
    live = session.live()
    accesses = {n.replica.access for n in live}
    assert len(accesses) == 1, session.tail()
    access = accesses.pop()
    for node in live:
        assert access.may_read(node.me.id.split(".")[0]), (node.me.id, access)
        assert [m.id for m in node.replica.members] == member_ids(live[0])
    assert len(session.digests()) == 1


def test_refusals_are_counted_and_warned_of_once(caplog: pytest.LogCaptureFixture) -> None:
    session, (_, bob) = start_players("h.1", "bob.1", access=Access(writemode=ADMIN_ONLY))
    with caplog.at_level(logging.DEBUG, logger="p2pstate.core.node"):
        for _ in range(5):
            assert done(session, bob, ("set", "k", 1)).status == "denied"
    assert session.host().stats["writes_denied"] == 5
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "writes_denied from bob.1" in warnings[0].getMessage()
    assert (
        sum(
            r.levelno == logging.DEBUG and "writes_denied" in r.getMessage() for r in caplog.records
        )
        == 4
    )


def test_a_forged_refusal_does_not_expel_a_member() -> None:
    """Anyone can send a Refused in the host's name (ids are claimed without a
    secret): a member only asks its host again, and stays."""
    session, (host, bob) = start_players("h.1", "bob.1")
    forged = Refused(sender="h.1", epoch=host.epoch, reason="banned")
    session.net.send_raw("bob.1", to_frame(forged))
    assert session.run_until(lambda: bob.stats["refused_as_member"] == 1), session.tail()
    assert session.settle(), session.tail()
    assert bob.role is Role.PEER and bob.refused is None
    assert done(session, bob, ("set", "k", 1)).status == "ok"


# ------------------------------------------------------------------ chaos


@pytest.mark.parametrize("seed", range(60))
def test_acl_changes_under_single_faults(seed: int) -> None:
    """Every guarantee of chaos.py holds with ACL changes among the faults,
    and every replica ends with the same access state."""
    run_schedule(500_000 + seed, Kind.SINGLE, acl=True)


@pytest.mark.parametrize("seed", range(20))
def test_acl_changes_under_double_crashes(seed: int) -> None:
    run_schedule(600_000 + seed, Kind.DOUBLE, acl=True)


@pytest.mark.parametrize("seed", range(40))
def test_acl_changes_under_partitions(seed: int) -> None:
    run_schedule(700_000 + seed, Kind.PARTITION, acl=True)


def test_the_chaos_schedules_do_change_acls() -> None:
    """The parametrized runs above are not vacuous: ACL changes land."""
    reports = [run_schedule(500_000 + seed, Kind.SINGLE, acl=True) for seed in range(10)]
    assert sum(r.acl_outcomes.count("ok") for r in reports) >= 10
    accesses = [n.replica.access for r in reports for n in r.net.live_nodes()]
    assert any(a.banned or a.authorized for a in accesses)
