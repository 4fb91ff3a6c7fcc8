"""Issue 16, items 9 to 11, against real peers on loopback: strings from the
network reach the terminal escaped, an empty secret never opens a session,
and identities in the wrong form are refused rather than listed."""

from __future__ import annotations

import os

import pytest
from netkit import ROOT, Join, run_cli

from p2pstate.core.ids import identity_of


def test_acl_methods_refuse_an_identity_in_the_wrong_form(join: Join) -> None:
    host = join()
    guest = join()
    guest_identity = identity_of(guest.me.id)
    for action in ("ban", "authorize", "unban", "unauthorize"):
        with pytest.raises(ValueError, match="not a peer id"):
            getattr(host, action)(guest_identity.upper())
        with pytest.raises(ValueError, match="not a peer id"):
            getattr(host, action)(guest_identity[:-1])
    assert host.banned == frozenset() and host.authorized == frozenset()
    host.ban(guest.me.id)  # a peer id, and the identity itself, still work
    assert host.banned == frozenset({guest_identity})
    host.unban(guest_identity)
    assert host.banned == frozenset()


def test_an_empty_secret_in_the_environment_is_refused(app_name: str) -> None:
    """``--secret ""`` was refused but ``P2PSTATE_SECRET=`` hosted an open
    session: a user who meant to secure it would not know."""
    env = dict(
        os.environ, P2PSTATE_INTERFACES="127.0.0.1", PYTHONPATH=str(ROOT), P2PSTATE_SECRET=""
    )
    done = run_cli("host", app_name, stdin="quit\n", env=env)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "P2PSTATE_SECRET" in done.stderr and "empty" in done.stderr
    assert "hosting" not in done.stdout + done.stderr
    done = run_cli("host", app_name, "--secret", "", stdin="quit\n", env=env)
    assert done.returncode == 1 and "must not be empty" in done.stderr
