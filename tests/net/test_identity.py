"""The installation's identity, seen from real processes: peer ids derive from
it, copies started from one installation share it but are distinct peers, and
``p2pstate id`` shows it."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from netkit import PeerProcess, eventually, run_cli

import p2pstate
from p2pstate.core.ids import identity_of

Spawn = Callable[..., PeerProcess]


def p2pstate_id(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("id", *args)


def _shown(done: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert done.returncode == 0, done.stderr
    return dict(re.findall(r"^([a-z ]+):\s+(\S+)$", done.stdout, re.M))


def test_two_copies_of_one_installation(spawn: Spawn, tmp_path: Path) -> None:
    home = str(tmp_path / "install")
    shown = _shown(p2pstate_id("--identity-dir", home))  # makes the identity
    assert re.fullmatch(r"[0-9a-f]{16}", shown["identity"])
    assert shown["file"] == str(Path(home) / "identity.json")
    a = spawn(name="window-a", identity_dir=home)
    a.wait_ready()
    b = spawn(name="window-b", identity_dir=home)
    b.wait_ready()
    ids = [p.ready["id"] for p in (a, b)]  # type: ignore[index]
    assert ids[0] != ids[1]
    assert identity_of(ids[0]) == identity_of(ids[1]) == shown["identity"]
    eventually(lambda: sorted(a.cmd("info")["peers"]) == sorted(ids))
    b.cmd("set", key="from-b", value=1)
    assert a.cmd("wait", key="from-b", value=1)["value"] == 1
    # The next run of the installation keeps its identity.
    assert _shown(p2pstate_id("--identity-dir", home)) == shown


def test_a_new_installation_gets_a_new_identity(spawn: Spawn, tmp_path: Path) -> None:
    one = spawn(identity_dir=str(tmp_path / "one"))
    one.wait_ready()
    other = spawn(identity_dir=str(tmp_path / "two"))
    other.wait_ready()
    ids = [p.ready["id"] for p in (one, other)]  # type: ignore[index]
    assert identity_of(ids[0]) != identity_of(ids[1])


def test_p2pstate_id_uses_p2pstate_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("P2PSTATE_HOME", str(tmp_path))
    shown = _shown(p2pstate_id())
    assert shown["file"] == str(tmp_path / "identity.json")
    assert len(shown["public key"]) == 40


def test_corrupt_identity_file(tmp_path: Path) -> None:
    path = tmp_path / "identity.json"
    path.write_text('{"public_key": "garbage"')
    with pytest.raises(p2pstate.IdentityError, match=re.escape(str(path))):
        p2pstate.join("never-joined", interfaces=["127.0.0.1"], identity_dir=str(tmp_path))
    done = p2pstate_id("--identity-dir", str(tmp_path))
    assert done.returncode == 1 and str(path) in done.stderr and "corrupt" in done.stderr
    assert "Traceback" not in done.stderr
    assert path.read_text() == '{"public_key": "garbage"'  # left for the user to look at
