"""Regressions found by reviewing permissions, restores and the wire limits:
each test failed before its fix. Under the simulator, no sockets."""

from __future__ import annotations

from dataclasses import replace

import pytest
from samples import first_hello
from simsession import done, start_players

from p2pstate.backup import Backup
from p2pstate.core.access import MAX_LIST
from p2pstate.errors import BackupError, ProtocolError
from p2pstate.messages import MAX_COUNTER, MAX_TTL, OWNER_ONLY, Hello, from_frame, to_frame


def _hello(sender: str, epoch: int) -> Hello:
    return first_hello(sender, epoch=epoch, name="v", endpoints=("tcp://127.0.0.1:9",))


def test_a_restore_cannot_take_another_players_owner_only_key() -> None:
    session, (admin, bob, eve) = start_players("admin.1", "bob.1", "eve.1")
    assert done(session, bob, ("set", "bob/score", 10, OWNER_ONLY, 0.0)).status == "ok"
    taken = (("bob/score", 0, "eve.1", OWNER_ONLY, 0.0),)
    assert done(session, eve, ("restore", taken)).status == "denied"
    assert done(session, eve, ("restore", ())).status == "denied", "nor delete it"
    assert admin.replica.data["bob/score"].value == 10
    kept = (("bob/score", 10, "bob.1", OWNER_ONLY, 0.0), ("new", 1, "eve.1", 0, 0.0))
    assert done(session, eve, ("restore", kept)).status == "ok", "leaving it as it is is fine"
    assert done(session, admin, ("restore", taken)).status == "ok", "the admin may"
    assert admin.replica.data["bob/score"].value == 0


def test_owner_only_keys_belong_to_the_player_not_one_run_of_the_game() -> None:
    session, (admin, bob, _eve) = start_players("admin.1", "bob.1", "eve.1")
    assert done(session, bob, ("set", "bob/name", "B", OWNER_ONLY, 0.0)).status == "ok"
    session.net.leave("bob.1")
    assert session.settle()
    bob_again = session.net.add_node("bob.2", node_id="bob.2")
    assert session.settle()
    assert done(session, bob_again, ("set", "bob/name", "B2", OWNER_ONLY, 0.0)).status == "ok"
    eve = next(n for n in session.live() if n.me.id == "eve.1")
    assert done(session, eve, ("set", "bob/name", "E")).status == "denied"
    assert admin.replica.data["bob/name"].value == "B2"


def test_a_restore_with_a_ttl_no_peer_accepts_is_refused_not_applied() -> None:
    session, (admin, bob) = start_players("admin.1", "bob.1")
    far = (("k", 1, "", 0, MAX_TTL + 3600.0),)
    outcome = done(session, admin, ("restore", far))
    assert outcome.status == "invalid" and "ttl" in str(outcome.detail)
    assert done(session, admin, ("set", "after", 1)).status == "ok"
    assert session.settle()
    assert session.net.bad_frames == 0
    assert "after" in bob.replica.data and "k" not in bob.replica.data
    assert session.host() is admin, "no peer dropped the host's changes and took over"


def test_acl_ops_in_one_write_are_counted_against_the_list_limit_together() -> None:
    session, (admin,) = start_players("admin.1")
    full = frozenset(f"v{i}" for i in range(MAX_LIST - 1))
    admin.replica.access = replace(admin.replica.access, banned=full)
    outcome = done(session, admin, ("acl", "ban", "x1"), ("acl", "ban", "x2"))
    assert outcome.status == "invalid"
    assert len(admin.replica.access.banned) == MAX_LIST - 1
    bob = session.net.add_node("bob.1", node_id="bob.1")
    assert session.run_until(lambda: bob.ready, 3.0), "a session over the limit admits no one"


def test_a_refused_hello_does_not_move_the_hosts_epoch() -> None:
    session, (admin,) = start_players("admin.1")
    assert done(session, admin, ("acl", "ban", "villain")).status == "ok"
    before = (admin.epoch, admin.replica.seq)
    session.net.send_raw("admin.1", to_frame(_hello("villain.1", 1000)))
    session.net.run(0.1)
    assert (admin.epoch, admin.replica.seq) == before


@pytest.mark.parametrize("epoch", [MAX_COUNTER, 2**64 - 1])
def test_counters_past_the_wire_limit_are_refused_when_decoded(epoch: int) -> None:
    frame = to_frame(_hello("x.1", epoch))
    with pytest.raises(ProtocolError, match="2\\*\\*62"):
        from_frame(frame, max_size=1 << 20)
    session, (admin, _bob) = start_players("admin.1", "bob.1")
    session.net.send_raw("admin.1", frame)
    session.net.run(0.1)
    assert admin.epoch < 10 and session.net.bad_frames == 1
    assert done(session, admin, ("set", "still", "serving")).status == "ok"


def test_a_backup_whose_key_expires_past_the_ttl_limit_is_refused_before_anything() -> None:
    backup = Backup(
        app="a",
        session="default",
        created=1000.0,
        seq=5,
        entries=(("soon", 1, "", 0, 2000.0), ("far", 2, "", 0, 1000.0 + MAX_TTL + 10)),
    )
    with pytest.raises(BackupError, match=r"'far'.*at most"):
        backup.restore_op(1000.0)
    # Twenty seconds later the same file is within the limit.
    kind, entries = backup.restore_op(1020.0)
    assert kind == "restore" and [e[0] for e in entries] == ["soon", "far"]
    assert entries[1][4] == MAX_TTL - 10
