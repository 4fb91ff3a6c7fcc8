"""The identity file, the session key derivation and the ZAP answer, without a network."""

from __future__ import annotations

import json
import re
import stat
import sys
import threading
from pathlib import Path

import pytest
import zmq
from zmq.utils import z85

from p2pstate import IdentityError, Options
from p2pstate.core.ids import identity_of
from p2pstate.discovery import _instance_name, node_label
from p2pstate.identity import IDENTITY_FILE, default_dir, fingerprint, load_identity
from p2pstate.session_key import derive_session_key
from p2pstate.transport import _zap_reply

PEER_ID = re.compile(r"[0-9a-f]{16}\.[0-9a-f]{8}")


def test_identity_is_made_once_and_kept(tmp_path: Path) -> None:
    first = load_identity(tmp_path / "home")
    again = load_identity(tmp_path / "home")
    assert first.path == tmp_path / "home" / IDENTITY_FILE
    assert (again.public_key, again.secret_key) == (first.public_key, first.secret_key)
    assert again.fingerprint == first.fingerprint == fingerprint(first.public_key)
    assert zmq.curve_public(first.secret_key) == first.public_key
    other = load_identity(tmp_path / "elsewhere")
    assert other.fingerprint != first.fingerprint


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_identity_file_is_private(tmp_path: Path) -> None:
    identity = load_identity(tmp_path / "home")
    assert stat.S_IMODE(identity.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(identity.path.parent.stat().st_mode) == 0o700
    assert [p.name for p in identity.path.parent.iterdir()] == [IDENTITY_FILE]  # no temp left


def test_secret_key_is_never_shown(tmp_path: Path) -> None:
    identity = load_identity(tmp_path)
    assert identity.secret_key.decode() not in repr(identity)
    options = Options(secret="hunter2")
    assert "hunter2" not in repr(options) and "hunter2" not in str(options)


def test_peer_ids_share_the_identity_and_differ(tmp_path: Path) -> None:
    identity = load_identity(tmp_path)
    ids = {identity.new_peer_id() for _ in range(50)}
    assert len(ids) == 50
    for peer_id in ids:
        assert PEER_ID.fullmatch(peer_id), peer_id
        assert identity_of(peer_id) == identity.fingerprint
    # Each copy advertises under its own mDNS name, within a DNS label.
    labels = {node_label(peer_id) for peer_id in ids}
    assert len(labels) == 50
    longest_app = "x" * 200
    for peer_id in ids:
        for candidate in (False, True):
            assert len(_instance_name(longest_app, peer_id, candidate=candidate)) <= 63


def test_copies_starting_at_once_get_one_identity(tmp_path: Path) -> None:
    home = tmp_path / "fresh"
    start = threading.Barrier(8)
    found: list[str] = []

    def load() -> None:
        start.wait()
        found.append(load_identity(home).fingerprint)

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(found) == 8 and len(set(found)) == 1
    assert json.loads((home / IDENTITY_FILE).read_text())["public_key"]


@pytest.mark.parametrize(
    "content",
    [
        "not json at all",
        "{}",
        '{"public_key": 1, "secret_key": 2}',
        '{"public_key": "short", "secret_key": "short"}',
        "",
    ],
)
def test_corrupt_identity_file_is_named(tmp_path: Path, content: str) -> None:
    (tmp_path / IDENTITY_FILE).write_text(content)
    with pytest.raises(IdentityError, match=re.escape(str(tmp_path / IDENTITY_FILE))):
        load_identity(tmp_path)


def test_keys_that_do_not_match_are_refused(tmp_path: Path) -> None:
    good = load_identity(tmp_path)
    stranger_public, _ = zmq.curve_keypair()
    data = json.loads(good.path.read_text())
    data["public_key"] = stranger_public.decode()
    good.path.write_text(json.dumps(data))
    with pytest.raises(IdentityError, match="does not match"):
        load_identity(tmp_path)


def test_default_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("P2PSTATE_HOME", str(tmp_path / "explicit"))
    assert default_dir() == tmp_path / "explicit"
    assert load_identity().path == tmp_path / "explicit" / IDENTITY_FILE
    monkeypatch.delenv("P2PSTATE_HOME")
    if sys.platform == "win32":
        monkeypatch.setenv("APPDATA", str(tmp_path / "appdata"))
        assert default_dir() == tmp_path / "appdata" / "p2pstate"
        return
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert default_dir() == tmp_path / "xdg" / "p2pstate"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_dir() == tmp_path / "home" / ".config" / "p2pstate"


def test_fingerprint_reads_raw_and_z85_keys() -> None:
    public, _ = zmq.curve_keypair()
    assert fingerprint(public) == fingerprint(z85.decode(public))
    assert re.fullmatch(r"[0-9a-f]{16}", fingerprint(public))
    with pytest.raises(ValueError):
        fingerprint(b"too short")


def test_session_key_derivation() -> None:
    key = derive_session_key("open sesame", "game", "room")
    assert key == derive_session_key("open sesame", "game", "room")  # every member agrees
    assert zmq.curve_public(key.secret_key) == key.public_key
    others = {
        derive_session_key("open sesamE", "game", "room"),
        derive_session_key("open sesame", "game2", "room"),
        derive_session_key("open sesame", "game", "room2"),
        derive_session_key("open sesame", "gam", "eroom"),  # names are not just concatenated
    }
    assert key not in others and len(others) == 4
    assert key.secret_key.decode() not in repr(key)
    with pytest.raises(ValueError):
        derive_session_key("", "game", "room")


@pytest.mark.parametrize("bad", ["", 3, b"bytes"])
def test_bad_secret_option(bad: object) -> None:
    with pytest.raises(ValueError, match="secret"):
        Options(secret=bad)  # type: ignore[arg-type]


def test_zap_reply() -> None:
    public, _ = zmq.curve_keypair()
    raw = z85.decode(public)
    request = [b"1.0", b"7", b"", b"127.0.0.1", b"", b"CURVE", raw]
    assert _zap_reply(request) == [
        b"1.0",
        b"7",
        b"200",
        b"OK",
        fingerprint(public).encode(),
        b"",
    ]
    for bad in (
        [b"1.0", b"8", b"", b"127.0.0.1", b"", b"PLAIN", b"user", b"pass"],
        [b"1.0", b"9", b"", b"127.0.0.1", b"", b"CURVE", b"short"],
        [b"2.0", b"10", b"", b"127.0.0.1", b"", b"CURVE", raw],
        [b"1.0"],
    ):
        reply = _zap_reply(bad)
        assert reply[2] == b"400" and reply[4] == b"", bad


def test_unwritable_identity_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"  # a file where the directory should be: fails even for root
    blocker.write_text("")
    with pytest.raises(IdentityError, match="can't create the identity file"):
        load_identity(blocker / "sub")
