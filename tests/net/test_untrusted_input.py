"""Issue 16, items 9 to 11, against real peers on loopback: strings from the
network reach the terminal escaped, an empty secret never opens a session,
and identities in the wrong form are refused rather than listed."""

from __future__ import annotations

import json
import os
import secrets

import pytest
import zmq
from netkit import ROOT, Join, eventually, run_cli
from samples import first_hello

from p2pstate.cli import terminal_safe
from p2pstate.core.ids import identity_of
from p2pstate.discovery import Discovery
from p2pstate.messages import WIRE_VERSION, to_frame

# What a hostile string carries: an OSC 52 clipboard write, a screen clear,
# a C1 CSI (colour), a bidi override, a forged second line.
HOSTILE = "eve\x1b]52;c;cm0gLXJmIH4=\x07\x1b[2J\x9b31m\u202etxt.exe\n# admin joined"
RAW = ("\x1b", "\x07", "\x9b", "\u202e", "\n# admin")


def _raw_in(text: str) -> list[str]:
    return [ch for ch in RAW if ch in text]


def test_terminal_safe_escapes_what_a_terminal_acts_on() -> None:
    shown = terminal_safe(HOSTILE)
    assert _raw_in(shown) == [] and shown.isprintable()
    assert shown.startswith("eve\\u001b]52;c;") and "\\u202etxt.exe\\n# admin" in shown
    assert terminal_safe(shown) == shown  # a second pass changes nothing
    assert json.loads(terminal_safe(json.dumps(HOSTILE, ensure_ascii=False))) == HOSTILE
    assert terminal_safe("plain é 日本 ok") == "plain é 日本 ok"


def test_the_lobby_escapes_a_strangers_advert(app_name: str) -> None:
    """The advert is unauthenticated mDNS: anyone on the LAN writes it."""
    stranger = Discovery(["127.0.0.1"])
    try:
        stranger.advertise(
            app=app_name,
            session="default",
            node_id=f"{secrets.token_hex(8)}.{secrets.token_hex(4)}",
            host_name=HOSTILE,
            port=9,
            addresses=["127.0.0.1"],
            epoch=1,
            session_id=secrets.token_hex(8),
            properties={"players": "1", "rev": "1", "wire": str(WIRE_VERSION)},
        )
        table = run_cli("lobby", app_name, "--once", "--timeout", "1.5")
        listed = run_cli("lobby", app_name, "--once", "--json", "--timeout", "1.5")
    finally:
        stranger.close()
    assert table.returncode == 0 and "52;c;" in table.stdout, (table.stdout, table.stderr)
    assert _raw_in(table.stdout) == [], table.stdout
    assert listed.returncode == 0 and _raw_in(listed.stdout) == [], listed.stdout
    assert json.loads(listed.stdout)[0]["host_name"] == HOSTILE  # escaped, not altered


def test_get_and_the_shell_escape_values_and_names(join: Join, app_name: str) -> None:
    """A value any member may write, and a name any joiner may give (here a
    raw Hello, as a hostile program would send it)."""
    host = join(peer_timeout=30.0)  # the raw joiner sends no heartbeats
    host["note"] = HOSTILE
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    raw = ctx.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    try:
        raw.connect(host.me.endpoint)
        sender = f"{secrets.token_hex(8)}.{secrets.token_hex(4)}"
        inbox = ctx.socket(zmq.ROUTER)
        inbox.setsockopt(zmq.LINGER, 0)
        endpoint = f"tcp://127.0.0.1:{inbox.bind_to_random_port('tcp://127.0.0.1')}"
        raw.send(
            to_frame(first_hello(sender, epoch=host.epoch, name=HOSTILE, endpoints=(endpoint,)))
        )
        eventually(lambda: any(p.id == sender for p in host.peers), 10)
        got = run_cli("get", app_name, "note")
        shell = run_cli("join", app_name, stdin="peers\nget note\nquit\n")
        inbox.close()
    finally:
        raw.close()
        ctx.destroy(linger=0)
    assert got.returncode == 0 and _raw_in(got.stdout) == [], got.stdout
    assert json.loads(got.stdout) == HOSTILE
    assert shell.returncode == 0, shell.stderr
    assert "52;c;" in shell.stdout and "txt.exe" in shell.stdout, shell.stdout
    assert _raw_in(shell.stdout) == [] and _raw_in(shell.stderr) == [], shell.stdout


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
