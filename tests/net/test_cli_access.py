"""The permission commands (ban, unban, authorize, unauthorize, access) in
subprocesses, acting as the admin through ``--identity-dir``; on 127.0.0.1
(P2PSTATE_INTERFACES), every process stopped by its pid."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from typing import Any

from netkit import eventually, new_installation, run_cli

import p2pstate
from p2pstate.core.ids import identity_of


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, timeout=60)


def access(app: str, home: str) -> dict[str, Any]:
    done = cli("access", app, "--json", "--identity-dir", home)
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_the_admin_bans_and_authorizes_from_the_command_line(
    spawn: Callable[..., Any], app_name: str
) -> None:
    admin_home, stranger_home = new_installation(), new_installation()
    admin = spawn(identity_dir=admin_home, writemode=p2pstate.AUTHORIZED_ONLY, max_keys=50)
    admin_identity = admin.wait_ready()["admin"]
    assert identity_of(admin.wait_ready()["id"]) == admin_identity
    victim = spawn()
    victim_id = victim.wait_ready()["id"]
    victim_identity = identity_of(victim_id)
    eventually(lambda: len(admin.cmd("info")["peers"]) == 2, 10)

    # The lobby shows the modes that are not "any".
    row = cli("lobby", app_name, "--once").stdout.splitlines()[1]
    assert row.split()[5] == "write:authorized", row
    (listed,) = json.loads(cli("lobby", app_name, "--once", "--json").stdout)
    assert (listed["readmode"], listed["writemode"]) == ("any", "authorized_only")

    report = access(app_name, stranger_home)  # anyone may read it
    assert report == {
        "admin": admin_identity,
        "readmode": "any",
        "writemode": "authorized_only",
        "max_keys": 50,
        "max_total_bytes": 256 * 1024 * 1024,
        "write_rate": 5000.0,
        "write_burst": 20_000,
        "authorized": [],
        "banned": [],
    }

    # Not the admin: a clear error, status 1, and nothing changes.
    refused = cli("ban", app_name, victim_id, "--identity-dir", stranger_home)
    assert refused.returncode == 1, refused.stderr
    assert f"only the admin of the session 'default' of '{app_name}' may ban" in refused.stderr
    assert admin_identity in refused.stderr and "Traceback" not in refused.stderr
    assert victim_id in admin.cmd("info")["peers"]

    authorized = cli("authorize", app_name, victim_id, "--identity-dir", admin_home)
    assert authorized.returncode == 0, authorized.stderr
    assert authorized.stdout.strip() == (
        f"authorized {victim_identity} in the session 'default' of '{app_name}'"
    )
    assert victim.cmd("set", key="k", value=1) == {"ok": True}
    assert access(app_name, admin_home)["authorized"] == [victim_identity]
    assert (
        cli("unauthorize", app_name, victim_identity, "--identity-dir", admin_home).returncode == 0
    )
    assert "PermissionDeniedError" in victim.cmd("set", key="k", value=2)["error"]

    banned = cli("ban", app_name, victim_id, "--identity-dir", admin_home)
    assert banned.returncode == 0, banned.stderr
    assert (
        banned.stdout.strip()
        == f"banned {victim_identity} in the session 'default' of '{app_name}'"
    )
    eventually(lambda: victim_id not in admin.cmd("info")["peers"], 10)
    text = cli("access", app_name, "--identity-dir", admin_home)
    assert text.returncode == 0, text.stderr
    lines = dict(line.split(":", 1) for line in text.stdout.splitlines())
    assert lines["banned"].strip() == victim_identity
    assert lines["admin"].strip() == admin_identity
    assert lines["authorized"].strip() == "-"
    assert lines["write_rate"].strip() == "5000"

    assert cli("unban", app_name, victim_identity, "--identity-dir", admin_home).returncode == 0
    assert access(app_name, stranger_home)["banned"] == []
    for typo in ("not an id", victim_identity[:-1], victim_identity.upper()):
        bad = cli("ban", app_name, typo, "--identity-dir", admin_home)
        assert bad.returncode == 1 and "is not a peer id (IDENTITY.INSTANCE)" in bad.stderr
    assert access(app_name, stranger_home)["banned"] == []


def test_the_commands_have_help() -> None:
    for name in ("ban", "unban", "authorize", "unauthorize", "access"):
        done = cli(name, "--help")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"usage: p2pstate {name}")
        assert "--identity-dir DIR" in done.stdout and "--secret SECRET" in done.stdout
