"""No unverified claim changes a role (issue 16.1, issue 13.3, 13.4).

Forged frames are injected with ``send_raw`` as the sender named in them:
with a secret the transport proves that sender's identity, so these are what
a banned player, a member who is not the admin, or (in an open session) a
stranger can send. Each test failed before its fix. Simulator only."""

from __future__ import annotations

from dataclasses import replace

import pytest
from samples import first_hello
from simsession import done, member_ids, start_players

from p2pstate.core.access import Access
from p2pstate.core.node import Node, Role
from p2pstate.core.rank import Standing
from p2pstate.messages import MAX_COUNTER, Redirect, to_frame
from p2pstate.sim import SimNetwork

TOP = MAX_COUNTER - 2  # the highest epoch whose + 1 still decodes


def _redirect(sender: str, *, epoch: int, reason: str, players: int = 10**6) -> bytes:
    msg = Redirect(
        sender=sender,
        epoch=epoch,
        host_id=sender,
        endpoints=(f"sim://{sender}",),
        reason=reason,
        players=players,
    )
    return to_frame(msg)


def _hello(sender: str, epoch: int, session_id: str | None = None) -> bytes:
    hello = first_hello(sender, epoch=epoch, name="x", endpoints=(f"sim://{sender}",))
    return to_frame(replace(hello, session_id=session_id))


def _kept(net: SimNetwork, host: Node, *peers: Node) -> None:
    """The session still has *host* as its host, followed by every peer."""
    assert host.role is Role.HOST and host.stats["stepped_down"] == 0, net.trace_tail()
    for peer in peers:
        assert peer.role is Role.PEER and peer.target_id == host.me.id, net.trace_tail()


def _banned_session() -> tuple[SimNetwork, Node, Node, Node]:
    session, (admin, bob, carol) = start_players("admin.1", "bob.1", "carol.1")
    assert done(session, admin, ("acl", "ban", "villain")).status == "ok"
    return session.net, admin, bob, carol


@pytest.mark.parametrize("reason", ["host", "takeover", "failover", "handoff", "merge"])
def test_a_banned_players_redirects_move_no_one(reason: str) -> None:
    net, admin, bob, carol = _banned_session()
    for to in ("admin.1", "bob.1", "carol.1"):
        net.send_raw(to, _redirect("villain.1", epoch=admin.epoch + 3, reason=reason))
    net.run(2.0)
    _kept(net, admin, bob, carol)
    assert admin.epoch == 1 and admin.replica.access.banned == {"villain"}


def test_a_live_members_claim_to_host_elsewhere_does_not_make_the_host_step_down() -> None:
    net, admin, bob, carol = _banned_session()
    net.send_raw("admin.1", _redirect("bob.1", epoch=admin.epoch + 1, reason="host"))
    net.run(2.0)
    _kept(net, admin, bob, carol)


def _lying_rival(
    net: SimNetwork, monkeypatch: pytest.MonkeyPatch, stored: Access | None = None
) -> Node:
    """A host of its own session that claims a thousand live players, a
    majority and a history a million changes long, met by discovery: by the
    merge rule alone it wins, so only the access checks keep it out."""
    rival = net.add_node("eve", host=True, node_id="eve.1", stored_access=stored)
    honest = rival.standing

    def lying() -> Standing:
        real = honest()
        return replace(real, live=1000, majority=True, seq=real.seq + 1_000_000)

    monkeypatch.setattr(rival, "standing", lying)
    return rival


def test_a_rival_host_lying_about_its_players_gets_neither_the_admin_role_nor_the_bans(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    net, admin, bob, carol = _banned_session()
    assert done_put(net, admin, "score", 7)
    _lying_rival(net, monkeypatch)
    net.run(3.0)
    for node in (admin, bob, carol):
        assert node.replica.access.admin == "admin", net.trace_tail()
        assert node.replica.access.banned == {"villain"}
        assert node.replica.data["score"].value == 7
    assert admin.role is Role.HOST, net.trace_tail()
    assert bob.target_id == carol.target_id == "admin.1"
    assert admin.stats["refused_state_another_admin"] == 1, "once: then it is remembered"


def test_a_snapshot_that_bans_our_admin_is_never_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    # An open session (nothing claimed, so it could merge into a session
    # started at the same time), and a rival whose state bans our admin.
    session, (admin, bob) = start_players("admin.1", "bob.1")
    forged = Access(admin="eve", banned=frozenset({"admin"}))
    _lying_rival(session.net, monkeypatch, stored=forged)
    session.net.run(3.0)
    for node in (admin, bob):
        assert node.replica.access.admin == "admin", session.tail()
        assert node.replica.access.banned == frozenset()
    assert admin.role is Role.HOST and bob.target_id == "admin.1", session.tail()
    # The rival refuses the admin it bans; bob refuses the rival's state.
    assert admin.stats["refused_state_refuses_us"] >= 1
    assert bob.stats["refused_state_refuses_our_admin"] >= 1


def done_put(net: SimNetwork, node: Node, key: str, value: object) -> bool:
    out: list[object] = []
    net.write(node.me.id, (("set", key, value),), (), out.append)
    return net.run_until(lambda: bool(out), 5.0)


@pytest.mark.parametrize("sender", ["stranger.1", "bob.1"])
def test_a_hello_with_a_huge_epoch_neither_moves_the_host_nor_cuts_it_off(sender: str) -> None:
    session, (admin, bob, carol) = start_players("admin.1", "bob.1", "carol.1")
    sid = admin.replica.session_id
    for session_id in (None, sid, "other"):
        session.net.send_raw("admin.1", _hello(sender, TOP, session_id))
    session.net.run(2.0)
    assert admin.epoch < 1000, "no wire number pushes the host's epoch toward the top"
    _kept(session.net, admin, bob, carol)
    assert done(session, carol, ("set", "after", 1)).status == "ok"
    assert session.settle(), session.tail()
    assert bob.replica.data["after"].value == 1


def test_a_strangers_hello_does_not_move_the_hosts_epoch_at_all() -> None:
    session, (admin, _bob) = start_players("admin.1", "bob.1")
    before = (admin.epoch, admin.replica.seq)
    session.net.send_raw("admin.1", _hello("stranger.1", 5, admin.replica.session_id))
    session.net.run(0.05)
    assert (admin.epoch, admin.replica.seq) == before


@pytest.mark.parametrize("setting", [{"max_players": 2}, {"joinable": False}])
def test_naming_the_session_does_not_skip_max_players_or_joinable(
    setting: dict[str, object],
) -> None:
    session, (admin, _bob) = start_players("admin.1", "bob.1")
    assert done(session, admin, ("info", setting)).status == "ok"
    sid = admin.replica.session_id
    session.net.send_raw("admin.1", _hello("late.1", 0, sid))
    session.net.run(0.5)
    assert "late.1" not in [m.id for m in admin.replica.members]


def test_a_player_banned_during_a_split_who_hosts_the_other_half_sends_it_over() -> None:
    session, (admin, bob, carol, dave) = start_players("admin.1", "bob.1", "carol.1", "dave.1")
    session.net.partition({"bob.1", "carol.1", "dave.1"})
    assert session.run_until(lambda: bob.role is Role.HOST, 3.0), session.tail()
    assert done(session, admin, ("acl", "ban", "bob")).status == "ok"
    session.net.heal()
    assert session.settle(10.0), session.tail()
    # The bigger half's host is banned: its half merges into the admin's, not
    # the reverse, and the ban holds on every copy.
    assert admin.role is Role.HOST and bob.refused == "banned", session.tail()
    for node in (admin, carol, dave):
        assert node.replica.access.banned == {"bob"}
        # (in the order they rejoined the admin, which timing decides)
        assert sorted(member_ids(node)) == ["admin.1", "carol.1", "dave.1"]


def test_a_host_that_claims_a_million_players_and_stays_silent_changes_no_host() -> None:
    # A secret holder who is no member and not banned: her claim is weighed
    # (player counts are claims), but a merge that never welcomes anyone
    # sends every copy back to the host it had, not along the succession.
    net, admin, bob, carol = _banned_session()
    net.send_raw("admin.1", _redirect("mallory.1", epoch=admin.epoch + 1, reason="host"))
    net.run(3.0)
    assert admin.role is Role.HOST, net.trace_tail()
    for peer in (bob, carol):
        assert peer.role is Role.PEER and peer.target_id == "admin.1", net.trace_tail()
    assert admin.replica.access.admin == "admin"
    assert admin.replica.access.banned == {"villain"}
