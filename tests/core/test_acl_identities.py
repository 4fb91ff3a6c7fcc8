"""Issue 16, item 11: an ACL op names an identity in the form peer ids carry
(16 lower-case hex digits); one in another form (upper case, a typo) was
stored and shown but banned nobody. The host refuses it with a clear status,
whatever sent it. Under the simulator, with real-looking ids."""

from __future__ import annotations

import pytest
from simsession import done, start_players

ADMIN = "0123456789abcdef"
BOB = "fedcba9876543210"


@pytest.mark.parametrize("action", ["ban", "authorize"])
@pytest.mark.parametrize("identity", [BOB.upper(), BOB[:15], BOB + "0", "xyz", "fedcba98765432 0"])
def test_an_acl_op_with_a_malformed_identity_is_refused(action: str, identity: str) -> None:
    session, (admin, bob) = start_players(f"{ADMIN}.1", f"{BOB}.1")
    outcome = done(session, admin, ("acl", action, identity))
    assert outcome.status == "invalid", outcome
    assert "not an identity" in outcome.detail["reason"], outcome.detail
    assert session.settle()
    for node in (admin, bob):
        assert node.replica.access.banned == frozenset()
        assert node.replica.access.authorized == frozenset()


def test_an_acl_op_with_a_well_formed_identity_applies() -> None:
    session, (admin, _bob) = start_players(f"{ADMIN}.1", f"{BOB}.1")
    assert done(session, admin, ("acl", "ban", BOB)).status == "ok"
    assert session.settle()
    assert admin.replica.access.banned == frozenset({BOB})


def test_a_malformed_identity_already_listed_can_be_taken_off() -> None:
    """A store written before the check may list one: unban and unauthorize
    still take it off; they refuse a malformed one that is not listed."""
    session, (admin, _bob) = start_players(f"{ADMIN}.1", f"{BOB}.1")
    host = admin
    host.replica.access = host.replica.access.apply_acl("ban", BOB.upper())
    assert done(session, admin, ("acl", "unban", BOB.upper())).status == "ok"
    assert BOB.upper() not in host.replica.access.banned
    assert done(session, admin, ("acl", "unauthorize", BOB.upper())).status == "invalid"
