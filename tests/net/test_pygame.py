"""p2pstate.pygame and the arena demo, headless (SDL's dummy video and audio).

Unit level: attach() posts real events of a 2-peer session on loopback into
pygame's queue. Game level: three arena processes play with bots; the host is
killed mid-match, the others play on and show who hosts now.
Skipped when pygame (pygame-ce, the ``demo`` extra) is not installed.
"""

from __future__ import annotations

import os
import queue
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ["SDL_VIDEODRIVER"] = "dummy"
os.environ["SDL_AUDIODRIVER"] = "dummy"
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

pygame = pytest.importorskip("pygame", reason="pygame-ce is not installed (the demo extra)")

import p2pstate  # noqa: E402
import p2pstate.pygame as p2pg  # noqa: E402

LOOPBACK = ["127.0.0.1"]
ARENA = Path(__file__).resolve().parents[2] / "demos" / "arena.py"


@pytest.fixture
def display() -> Iterator[None]:
    pygame.display.init()  # the event queue needs SDL's video subsystem
    pygame.event.clear()
    yield
    pygame.quit()


@pytest.fixture
def join() -> Iterator[Callable[..., p2pstate.SharedState]]:
    app = f"pygame-{secrets.token_hex(4)}"
    opened: list[p2pstate.SharedState] = []

    def make(name: str) -> p2pstate.SharedState:
        s = p2pstate.join(app, name=name, interfaces=LOOPBACK, discovery_window=0.3)
        opened.append(s)
        return s

    yield make
    for s in reversed(opened):
        s.close()


def next_events(kind: int, count: int = 1, timeout: float = 5.0, **fields: Any) -> list[Any]:
    """The first *count* events of type *kind* in pygame's queue whose fields
    match (others of that type are dropped)."""
    found: list[Any] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in pygame.event.get(kind):
            if all(getattr(event, k, None) == v for k, v in fields.items()):
                found.append(event)
        if len(found) >= count:
            return found[:count]
        time.sleep(0.005)
    name = pygame.event.event_name(kind)
    raise AssertionError(f"{len(found)} of {count} {name} events with {fields}")


def next_event(kind: int, timeout: float = 5.0, **fields: Any) -> Any:
    return next_events(kind, 1, timeout, **fields)[0]


def test_event_types_are_distinct_custom_types() -> None:
    kinds = [
        p2pg.KEY_CHANGED,
        p2pg.KEY_DELETED,
        p2pg.PEER_JOINED,
        p2pg.PEER_LEFT,
        p2pg.HOST_CHANGED,
        p2pg.MESSAGE,
        p2pg.WRITES_ROLLED_BACK,
        p2pg.EXPELLED,
        p2pg.PEER_UPDATED,
    ]
    assert len(set(kinds)) == len(kinds)
    assert all(pygame.USEREVENT < kind < pygame.NUMEVENTS for kind in kinds)


@pytest.mark.usefixtures("display")
def test_a_profile_change_reaches_the_pygame_loop(
    join: Callable[..., p2pstate.SharedState],
) -> None:
    a = join("alice")
    b = join("bob")
    attachment = p2pg.attach(a)
    b.set_profile({"ready": True})
    updated = next_event(p2pg.PEER_UPDATED)
    assert updated.peer.name == "bob" and updated.peer.profile == {"ready": True}
    attachment()


@pytest.mark.usefixtures("display")
def test_attach_posts_session_events_into_pygames_queue(
    join: Callable[..., p2pstate.SharedState],
) -> None:
    a = join("alice")
    watch_a = p2pg.attach(a)
    b = join("bob")
    joined = next_event(p2pg.PEER_JOINED)
    assert joined.peer.name == "bob" and joined.peer.id == b.me.id

    detach = p2pg.attach(b)
    a.set("pos", [10, 20])  # blocking: acknowledged when it returns
    # Two states attached: each I/O thread posts its own copy.
    changed, twin = next_events(p2pg.KEY_CHANGED, 2, key="pos")
    assert changed.dict == {"key": "pos", "value": [10, 20], "version": changed.version}
    assert changed.version == twin.version == a.version("pos")
    assert twin.dict == changed.dict

    a.set("pos", [11, 20], wait=False)
    assert next_event(p2pg.KEY_CHANGED, key="pos").value == [11, 20]
    pygame.event.clear()

    del a["pos"]
    deleted = next_event(p2pg.KEY_DELETED, key="pos")
    assert set(deleted.dict) == {"key", "version"}

    # The host leaves: bob takes over at once (a handoff), and says so.
    watch_a()
    a.close()
    host = next_event(p2pg.HOST_CHANGED)
    assert host.new.name == "bob" and host.old.name == "alice" and host.epoch == 2
    left = next_event(p2pg.PEER_LEFT)
    assert left.peer.name == "alice" and left.reason == "left"

    # Detached: nothing more arrives.
    detach()
    detach()  # harmless
    b.set("after", 1)
    time.sleep(0.2)
    assert [e for e in pygame.event.get(p2pg.KEY_CHANGED) if e.key == "after"] == []
    assert detach.dropped == 0 and detach.posted >= 5
    assert watch_a.dropped == 0


@pytest.mark.usefixtures("display")
def test_refused_events_are_counted_not_raised(
    join: Callable[..., p2pstate.SharedState],
) -> None:
    a = join("alice")
    attachment = p2pg.attach(a)
    pygame.event.set_blocked(p2pg.KEY_CHANGED)
    try:
        a["x"] = 1
        deadline = time.monotonic() + 5
        while attachment.dropped == 0:
            assert time.monotonic() < deadline, "the blocked event was not counted"
            time.sleep(0.005)
    finally:
        pygame.event.set_allowed(p2pg.KEY_CHANGED)
    a["x"] = 2
    assert next_event(p2pg.KEY_CHANGED, key="x").value == 2
    attachment()


@pytest.mark.usefixtures("display")
def test_a_message_event_maps_by_class_name(join: Callable[..., p2pstate.SharedState]) -> None:
    """p2pstate has no Message event yet; one of that name maps to MESSAGE."""

    @dataclass(frozen=True, kw_only=True)
    class Message:
        sender: str
        payload: Any

    a = join("alice")
    attachment = p2pg.attach(a)
    attachment._on_event(Message(sender="bob", payload={"text": "hi"}))  # as the I/O thread would
    message = next_event(p2pg.MESSAGE)
    assert message.dict == {"sender": "bob", "payload": {"text": "hi"}}
    attachment()


def test_attach_needs_pygame_initialised(join: Callable[..., p2pstate.SharedState]) -> None:
    pygame.quit()
    with pytest.raises(RuntimeError, match=r"pygame\.init\(\)"):
        p2pg.attach(join("alice"))


# =============================================================================
# The arena demo, three processes.
# =============================================================================


class Arena:
    """One ``demos/arena.py --bot`` process, its output lines collected."""

    def __init__(self, session: str, name: str, *args: str) -> None:
        env = dict(
            os.environ,
            P2PSTATE_INTERFACES="127.0.0.1",
            SDL_VIDEODRIVER="dummy",
            SDL_AUDIODRIVER="dummy",
            PYTHONUNBUFFERED="1",
        )
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, str(ARENA), "--bot", "--session", session, "--name", name, *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, name="arena-stdout", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_line(self, prefix: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"{self.name}: no {prefix!r} line within {timeout} s; got {self.seen}"
                ) from None
            self.seen.append(line)
            if line.startswith(prefix):
                return line

    def finish(self, timeout: float) -> tuple[int, list[str], str]:
        """Wait for the exit; return (exit code, every stdout line, stderr)."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._reader.join(5)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        assert self.proc.stderr is not None
        err = self.proc.stderr.read()
        return self.proc.returncode, self.seen, err

    def kill(self) -> None:
        """SIGKILL, by its own pid."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def close(self) -> None:
        self.kill()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def scores(lines: list[str]) -> list[int]:
    return [int(line.split()[1]) for line in lines if line.startswith("SCORE ")]


def test_arena_survives_the_kill_of_its_host(tmp_path: Path) -> None:
    session = f"arena-{secrets.token_hex(4)}"
    shot = tmp_path / "frame.png"
    games: list[Arena] = []
    try:
        alice = Arena(session, "alice", "--frames", "100000")  # runs until killed
        games.append(alice)
        assert "is_host=True" in alice.wait_line("READY")
        bob = Arena(session, "bob", "--frames", "600")
        carol = Arena(session, "carol", "--frames", "600", "--screenshot", str(shot))
        survivors = [bob, carol]
        games += survivors
        for game in survivors:
            ready = game.wait_line("READY")
            assert "host=alice epoch=1 is_host=False" in ready, ready
        for game in survivors:  # a few seconds of play, the bots picking up gems
            game.wait_line("SCORE ", timeout=10)
            game.wait_line("SCORE ", timeout=10)
            game.wait_line("SCORE ", timeout=10)

        alice.kill()  # mid-match, no goodbye
        # Both survivors show the same new host, one of them, at the next epoch.
        banners = {game.wait_line("BANNER ", timeout=10) for game in survivors}
        assert len(banners) == 1, banners
        assert re.fullmatch(r"BANNER (bob|carol) is now hosting \(epoch 2\)", banners.pop())

        for game in survivors:
            code, lines, err = game.finish(timeout=30)
            assert code == 0, f"{game.name} exited {code}: {err}"
            assert "Traceback" not in err, err
            assert "PEER_LEFT alice failed" in lines, lines
            seen = scores(lines)
            assert seen == sorted(seen), f"{game.name}'s score went down: {seen}"
            assert seen[-1] > seen[0], f"{game.name}: nobody scored: {seen}"
            frames = next(line for line in lines if line.startswith("FRAMES "))
            median = float(re.search(r"work_ms median=([\d.]+)", frames)[1])  # type: ignore[index]
            assert frames.startswith("FRAMES 600 ") and median < 16, frames
        assert shot.exists()
        assert pygame.image.load(str(shot)).get_size() == (960, 600)
    finally:
        for game in games:
            game.close()
