"""Changing modes and limits after creation (``set_access``) and an access
state kept in a store, with real peers on loopback, each its own
installation (identity dir)."""

from __future__ import annotations

from pathlib import Path

import pytest
from netkit import Join, eventually, new_installation

import p2pstate
from p2pstate.core.ids import identity_of


def test_set_access_is_the_admins_and_tightening_readmode_expels(join: Join) -> None:
    admin = join()
    friend = join()
    stranger = join()
    eventually(lambda: len(admin.peers) == 3)
    with pytest.raises(p2pstate.PermissionDeniedError, match="only the session's admin"):
        friend.set_access(writemode=p2pstate.ADMIN_ONLY)
    assert admin.writemode == p2pstate.ANY
    admin.authorize(friend.me.id)
    admin.set_access(readmode=p2pstate.AUTHORIZED_ONLY, max_keys=2)
    assert admin.readmode == p2pstate.AUTHORIZED_ONLY and admin.limits["max_keys"] == 2
    eventually(lambda: any(isinstance(e, p2pstate.Expelled) for e in stranger.poll()))
    assert sorted(p.id for p in admin.peers) == sorted([admin.me.id, friend.me.id])
    eventually(lambda: friend.readmode == p2pstate.AUTHORIZED_ONLY)
    friend["a"] = 1
    admin["b"] = 2
    with pytest.raises(p2pstate.QuotaExceededError, match="max_keys"):
        friend["c"] = 3
    with pytest.raises(ValueError, match="readmode must be one of"):
        admin.set_access(readmode="everyone")
    with pytest.raises(ValueError, match="write_rate"):
        admin.set_access(write_rate=0)
    with pytest.raises(TypeError, match="at least one"):
        admin.set_access()


def test_a_session_restarted_from_a_store_keeps_its_admin_and_bans(
    join: Join, tmp_path: Path
) -> None:
    db = tmp_path / "session.db"
    admin_home, banned_home, other_home = (new_installation() for _ in range(3))
    admin = join(identity_dir=admin_home)
    villain = join(identity_dir=banned_home)
    keeper = join(identity_dir=other_home, store=str(db))  # a peer that keeps a store
    eventually(lambda: len(admin.peers) == 3)
    admin_identity = identity_of(admin.me.id)
    villain_identity = identity_of(villain.me.id)
    admin["score"] = 10
    admin.ban(villain.me.id)
    admin.set_access(writemode=p2pstate.ADMIN_ONLY)
    eventually(lambda: keeper.banned == {villain_identity} and keeper.writemode == "admin_only")
    for s in (villain, admin, keeper):
        s.close()

    # The keeper restarts the session from its store, asking for an open one:
    # the store's access state is the session's, and wins.
    again = join(identity_dir=other_home, store=str(db), writemode=p2pstate.ANY)
    assert again.is_host and again["score"] == 10
    assert again.admin == admin_identity != identity_of(again.me.id)
    assert again.banned == {villain_identity}
    assert again.writemode == p2pstate.ADMIN_ONLY
    with pytest.raises(p2pstate.PermissionDeniedError):
        again["score"] = 11
    with pytest.raises(p2pstate.BannedError):
        join(identity_dir=banned_home)
    back = join(identity_dir=admin_home)
    back["score"] = 12
    back.unban(villain_identity)
    eventually(lambda: again.banned == frozenset())
    assert join(identity_dir=banned_home)["score"] == 12


def test_a_store_that_bans_its_starter_refuses_to_start(join: Join, tmp_path: Path) -> None:
    db = tmp_path / "session.db"
    villain_home = new_installation()
    admin = join()
    villain = join(identity_dir=villain_home)
    eventually(lambda: len(admin.peers) == 2)
    keeper = join(store=str(db))
    admin.ban(villain.me.id)
    eventually(lambda: bool(keeper.banned))
    for s in (villain, admin, keeper):
        s.close()
    # The banned player takes the store file and tries to host it.
    with pytest.raises(p2pstate.BannedError):
        join(identity_dir=villain_home, store=str(db))
