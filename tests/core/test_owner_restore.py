"""Issue 16 item 4: a restore by anyone but the admin never changes another
player's owner-only key, ephemeral or not, with a ttl or not."""

from __future__ import annotations

from simsession import done, start_players

from p2pstate.messages import EPHEMERAL, OWNER_ONLY


def test_a_restore_cannot_overwrite_anothers_ephemeral_owner_only_key() -> None:
    session, (_, bob, carol) = start_players("a1ice.1", "b0b.1", "ca401.1")
    flags = EPHEMERAL | OWNER_ONLY
    assert done(session, carol, ("set", "cursor/carol", [1, 2], flags, 0.0)).status == "ok"
    out = done(session, bob, ("restore", (("cursor/carol", "pwned", "b0b.1", 0, 0.0),)))
    assert out.status == "denied" and out.detail["key"] == "cursor/carol"
    assert session.settle()
    for node in session.live():
        entry = node.replica.data["cursor/carol"]
        assert (entry.value, entry.owner, entry.flags) == ([1, 2], "ca401.1", flags)


def test_a_restore_cannot_put_a_ttl_on_anothers_owner_only_key() -> None:
    session, (_, bob, carol) = start_players("a1ice.1", "b0b.1", "ca401.1")
    assert done(session, carol, ("set", "name/carol", "carol", OWNER_ONLY, 0.0)).status == "ok"
    same_but_brief = ("name/carol", "carol", "ca401.1", OWNER_ONLY, 0.5)
    out = done(session, bob, ("restore", (same_but_brief,)))
    assert out.status == "denied" and out.detail["key"] == "name/carol"
    session.net.run(2.0)  # long past the ttl the restore asked for
    assert all(n.replica.data["name/carol"].value == "carol" for n in session.live())
    claim = done(session, bob, ("set", "name/carol", "bob"))
    assert claim.status == "denied"


def test_the_admin_may_still_restore_anothers_owner_only_keys() -> None:
    session, (alice, bob) = start_players("a1ice.1", "b0b.1")
    flags = EPHEMERAL | OWNER_ONLY
    assert done(session, bob, ("set", "cursor/bob", 1, flags, 0.0)).status == "ok"
    assert done(session, bob, ("set", "name/bob", "bob", OWNER_ONLY, 0.0)).status == "ok"
    entries = (("cursor/bob", 2, "", 0, 0.0), ("name/bob", "bob", "b0b.1", OWNER_ONLY, 5.0))
    assert done(session, alice, ("restore", entries)).status == "ok"
    assert session.settle()
    assert alice.replica.data["cursor/bob"].value == 2


def test_an_unchanged_owner_only_key_of_another_may_stay_in_a_restore() -> None:
    session, (_, bob, carol) = start_players("a1ice.1", "b0b.1", "ca401.1")
    assert done(session, carol, ("set", "name/carol", "carol", OWNER_ONLY, 0.0)).status == "ok"
    kept = ("name/carol", "carol", "ca401.1", OWNER_ONLY, 0.0)
    assert done(session, bob, ("restore", (kept, ("x", 1, "", 0, 0.0)))).status == "ok"
    assert session.settle()
    assert all(n.replica.data["x"].value == 1 for n in session.live())
