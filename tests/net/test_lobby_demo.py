"""demos/lobby.py, driven as people drive it: each player in a real terminal (pexpect).

Loopback only (P2PSTATE_INTERFACES=127.0.0.1), a random app name per test
(--app), and every process started here is killed by its own pid.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import p2pstate

pexpect = pytest.importorskip("pexpect")

ROOT = Path(__file__).resolve().parents[2]
LOBBY = ROOT / "demos" / "lobby.py"
ENV = dict(os.environ, P2PSTATE_INTERFACES="127.0.0.1", PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))


class Player:
    """``python demos/lobby.py ARGS`` in a pty."""

    def __init__(self, name: str, app: str, *args: str) -> None:
        self.name = name
        self.app = app
        self.child = pexpect.spawn(
            sys.executable,
            [str(LOBBY), "--name", name, "--app", app, "--session-list-timeout", "1", *args],
            env=ENV,
            encoding="utf-8",
            timeout=15,
            cwd=str(ROOT),
        )

    def expect(self, text: str, timeout: float = 15) -> str:
        """Wait for *text* (literal) in the output; return what came before and it."""
        self.child.expect_exact(text, timeout=timeout)
        return str(self.child.before) + str(self.child.after)

    def type(self, line: str) -> None:
        self.child.sendline(line)

    def kill(self) -> None:
        if self.child.isalive():
            os.kill(self.child.pid, signal.SIGKILL)
        self.child.close(force=True)


@pytest.fixture
def players() -> Iterator[Callable[..., Player]]:
    app = f"lobby-test-{secrets.token_hex(4)}"
    started: list[Player] = []

    def start(name: str, *args: str) -> Player:
        player = Player(name, app, *args)
        started.append(player)
        return player

    yield start
    for player in started:
        player.kill()


def test_two_players_chat_get_ready_and_start(players: Callable[..., Player]) -> None:
    began = time.monotonic()
    room = f"den-{secrets.token_hex(2)}"
    alice = players("alice")
    alice.expect("No open rooms of")
    alice.type(f"create {room}")
    alice.expect(f"You created room {room!r} as alice; you host it.")

    bob = players("bob")
    listing = bob.expect("Type: create NAME")
    assert re.search(rf"{room}\s+host alice\s+1 players\s+waiting", listing), listing
    bob.type(f"join {room}")
    bob.expect(f"You joined room {room!r} as bob; alice hosts.")
    alice.expect("* bob joined")

    bob.type("hi alice")
    alice.expect("<bob> hi alice")
    alice.type("hello bob")
    bob.expect("<alice> hello bob")

    bob.type("/who")
    who = bob.expect("bob          not ready, you")
    assert "alice        not ready, host" in who, who

    alice.type("/start")
    alice.expect("Not everyone is ready: waiting for alice, bob.")
    alice.type("/ready")
    bob.expect("* alice is ready")
    bob.type("/ready")
    alice.expect("* bob is ready")
    bob.type("/start")
    bob.expect("Only the host (alice) can /start.")

    alice.type("/start")
    alice.expect("MATCH STARTED")
    bob.expect("MATCH STARTED")

    # The room is closed to newcomers now, and the lobby says so.
    deadline = time.monotonic() + 5
    while True:
        found = p2pstate.browse(alice.app, 0.5, session=room, interfaces=["127.0.0.1"])
        if found and not found[0].joinable:
            break
        assert time.monotonic() < deadline, found
    assert found[0].metadata == {"state": "playing"}, found

    bob.type("/quit")
    bob.expect("You left the room.")
    assert bob.child.expect(pexpect.EOF, timeout=10) == 0
    assert time.monotonic() - began < 20


def test_the_next_host_takes_over_and_starts(players: Callable[..., Player]) -> None:
    began = time.monotonic()
    room = f"hall-{secrets.token_hex(2)}"
    alice = players("alice", "--create", room)
    alice.expect("you host it.")
    bob = players("bob", "--join", room)
    bob.expect("alice hosts.")
    alice.expect("* bob joined")  # bob first: he is next in line
    carol = players("carol", "--join", room)
    carol.expect("alice hosts.")
    bob.expect("* carol joined")

    bob.type("/ready")
    carol.expect("* bob is ready")

    alice.type("/quit")
    alice.expect("You left the room.")
    alice.child.expect(pexpect.EOF, timeout=10)
    bob.expect("* bob is now hosting (you: /start when everyone is /ready)")
    carol.expect("* bob is now hosting")

    bob.type("/start")
    bob.expect("Not everyone is ready: waiting for carol.")
    carol.type("/start")
    carol.expect("Only the host (bob) can /start.")
    carol.type("/ready")
    bob.expect("* carol is ready")
    bob.type("/start")
    bob.expect("MATCH STARTED")
    carol.expect("MATCH STARTED")
    assert time.monotonic() - began < 20
