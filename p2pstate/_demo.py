"""A guided tour of p2pstate: three peers share a dict, then the host crashes.

    p2pstate demo            # paced, for reading along
    p2pstate demo --fast     # no pauses
    python demos/tour.py     # the same, from a clone of the repository

The tour starts three peers, alice, bob and carol, each in its own process, as
if they were three copies of a game on three machines. It shows who hosts,
writes and reads a few values, shows a change arriving as an event, then kills
the host with SIGKILL (no goodbye, no cleanup) and shows the next peer taking
over with every value intact. Finally everyone leaves cleanly.

Everything stays on this machine: the peers use the loopback interface
(127.0.0.1) unless told otherwise (``--interfaces``, or the environment
variable P2PSTATE_INTERFACES). Telling a story on a terminal is this module's
whole job, so it writes to the stream it is given (the CLI passes stdout).
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import queue
import signal
import sys
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext, SpawnProcess
from typing import Any, TextIO

from . import join
from .events import Event, HostChanged, KeyChanged, KeyDeleted, PeerJoined, PeerLeft
from .state import SharedState

__all__ = ["main", "run"]

LOOPBACK = ("127.0.0.1",)
APP = "p2pstate-demo-tour"
NAMES = ("alice", "bob", "carol")
# Seconds a peer that expects a session looks for it. join() returns as soon
# as it finds the host, so a generous window costs nothing, and on a busy
# machine it keeps a slow peer from starting a session of its own.
JOIN_WINDOW = 3.0
ANSWER_TIMEOUT = 15.0  # seconds a peer has to answer the tour


# =============================================================================
# A peer: runs in its own process and does what the tour asks of it.
# =============================================================================


def peer_main(
    name: str, session: str, first: bool, interfaces: list[str], conn: Connection
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the tour's to handle
    window = 0.3 if first else JOIN_WINDOW  # the first peer expects to find nobody
    s = join(APP, session, name=name, interfaces=interfaces, discovery_window=window)
    # Every event (a key changed, a peer joined, the host changed...) goes into
    # a queue with the time it arrived. on_change runs on the state's callback
    # thread; this one only hands the event over to the tour's own loop.
    events: queue.Queue[tuple[float, Event]] = queue.Queue()
    s.on_change(lambda event: events.put((time.monotonic(), event)))
    try:
        conn.send(("ok", None))  # joined: ready for commands
        while True:
            try:
                command, *args = conn.recv()
            except EOFError:  # the tour is gone: leave too
                return
            if command == "close":
                return
            try:
                conn.send(("ok", run_command(s, events, command, args)))
            except Exception as exc:  # noqa: BLE001 - reported to the tour, which stops
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        s.close()  # flush our writes; a host hands over to the next peer first


def run_command(
    s: SharedState,
    events: queue.Queue[tuple[float, Event]],
    command: str,
    args: list[Any],
) -> Any:
    if command == "info":
        return {
            "is_host": s.is_host,
            "host": s.host.name if s.host else None,
            "epoch": s.epoch,
            "peers": [p.name + (" (host)" if p.is_host else "") for p in s.peers],
        }
    if command == "set":
        key, value = args
        s[key] = value  # sent to the host; returns once acknowledged
        return None
    if command == "add_score":
        who, points = args
        # apply_op is a read-modify-write that stays right when others write too.
        return s.apply_op("scores", lambda scores: {**scores, who: scores[who] + points})
    if command == "read":
        return dict(s)  # our own copy: no network involved
    if command == "forget_events":
        while not events.empty():
            events.get_nowait()
        return None
    if command == "wait_for":
        # Collect events until one of each wanted kind has come (for *key*, if given).
        kinds, key, timeout = args
        wanted = set(kinds)
        got: list[tuple[float, Event]] = []
        deadline = time.monotonic() + timeout
        while wanted:
            at, event = events.get(timeout=max(0.0, deadline - time.monotonic()))
            got.append((at, event))
            if key is None or getattr(event, "key", None) == key:
                wanted.discard(type(event).__name__)
        return got
    raise ValueError(f"unknown command {command!r}")


# =============================================================================
# The tour: starts the peers, asks them to do things, and tells what happens.
# =============================================================================


class PeerProcess:
    """The tour's handle on one peer's process."""

    def __init__(
        self, ctx: SpawnContext, name: str, session: str, first: bool, interfaces: list[str]
    ) -> None:
        self.name = name
        self.conn, child_end = ctx.Pipe()
        self.process: SpawnProcess = ctx.Process(
            target=peer_main,
            args=(name, session, first, interfaces, child_end),
            name=name,
            daemon=True,
        )
        self.process.start()
        child_end.close()
        self.answer()  # returns once the peer has joined

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return int(self.process.pid)

    def send(self, *command: Any) -> None:
        self.conn.send(command)

    def answer(self) -> Any:
        try:
            if not self.conn.poll(ANSWER_TIMEOUT):
                raise RuntimeError(f"{self.name} did not answer within {ANSWER_TIMEOUT} s")
            status, result = self.conn.recv()
        except EOFError:
            raise RuntimeError(f"{self.name}'s process exited (see its error above)") from None
        if status != "ok":
            raise RuntimeError(f"{self.name}: {result}")
        return result

    def ask(self, *command: Any) -> Any:
        self.send(*command)
        return self.answer()

    def stop(self) -> None:
        """Ask the peer to close; kill it, by its pid, if it does not exit in time."""
        if self.process.is_alive():
            with contextlib.suppress(OSError):
                self.send("close")
            self.process.join(5)
        if self.process.is_alive():
            os.kill(self.pid, signal.SIGKILL)
        self.process.join()
        self.conn.close()


def describe(event: Event) -> str:
    if isinstance(event, KeyChanged):
        return f"KeyChanged   {event.key} = {event.value!r}"
    if isinstance(event, KeyDeleted):
        return f"KeyDeleted   {event.key}"
    if isinstance(event, PeerJoined):
        return f"PeerJoined   {event.peer.name}"
    if isinstance(event, PeerLeft):
        return f"PeerLeft     {event.peer.name} ({event.reason})"
    if isinstance(event, HostChanged):
        old = event.old.name if event.old else "nobody"
        return f"HostChanged  {old} -> {event.new.name}, epoch {event.epoch}"
    return repr(event)


def show(state: dict[str, Any]) -> str:
    return "  ".join(f"{key}={state[key]!r}" for key in sorted(state))


class Tour:
    def __init__(self, *, fast: bool, interfaces: list[str], out: TextIO) -> None:
        self.fast = fast
        self.interfaces = interfaces
        self.out = out
        self.session = f"tour-{os.getpid()}"  # ours alone: tours running at once do not mix
        self.ctx = mp.get_context("spawn")  # each peer is a fresh Python process
        self.peers: dict[str, PeerProcess] = {}

    def pause(self, seconds: float) -> None:
        if not self.fast:
            time.sleep(seconds)

    def print(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def step(self, title: str) -> None:
        self.pause(1.2)
        self.print(f"\n== {title}\n")
        self.pause(0.6)

    def say(self, text: str) -> None:
        self.print(f"   {text}")
        self.pause(0.5)

    def start_peer(self, name: str) -> PeerProcess:
        first = not self.peers
        peer = PeerProcess(self.ctx, name, self.session, first, self.interfaces)
        self.peers[name] = peer
        return peer

    def run(self) -> bool:
        self.print("p2pstate tour: three copies of a program share one dict, with no server.")
        self.print(f"Each peer is its own process on this machine; session {self.session!r}.")
        self.print(f"Every packet stays on {', '.join(self.interfaces)}.")
        if not self.join_all():
            return False
        self.write_and_read()
        self.watch_events()
        crash = self.crash_the_host()
        if crash is None:
            return False
        ok, host, new, survivors = crash
        other = next(peer for peer in survivors if peer is not new)
        ok = self.go_on(new, other, survivors) and ok
        self.leave(host, new, other)
        self.print("\nTour complete." if ok else "\nTour FAILED: see above.")
        return ok

    def join_all(self) -> bool:
        self.step("1. Three peers join")
        self.say(f"each one runs  s = p2pstate.join({APP!r}, session, name=NAME)")
        for name in NAMES:
            first = not self.peers
            peer = self.start_peer(name)
            info = peer.ask("info")
            if first and info["is_host"]:
                self.say(f"{name:<6} found no session, so it hosts one (epoch {info['epoch']})")
            elif not info["is_host"]:
                self.say(f"{name:<6} found {info['host']}'s session over mDNS and joined it")
            else:
                self.say(f"{name:<6} did not find the session and started its own. Stopping.")
                return False
        self.say(f"carol's s.peers: {', '.join(self.peers['carol'].ask('info')['peers'])}")
        return True

    def write_and_read(self) -> None:
        alice, bob, carol = (self.peers[name] for name in NAMES)
        self.step("2. Writes go through the host; reads are local")
        bob.ask("set", "level", 1)
        self.say("bob    s['level'] = 1")
        carol.ask("set", "scores", {"alice": 0, "bob": 0, "carol": 0})
        self.say("carol  s['scores'] = {'alice': 0, 'bob': 0, 'carol': 0}")
        alice.ask("set", "motd", "welcome!")
        self.say("alice  s['motd'] = 'welcome!'")
        self.say("each peer reads its own copy, dict(s):")
        for name, peer in self.peers.items():
            self.say(f"  {name:<6} {show(peer.ask('read'))}")

    def watch_events(self) -> None:
        alice, bob, carol = (self.peers[name] for name in NAMES)
        self.step("3. Other peers' changes arrive as events (s.on_change or s.poll)")
        carol.ask("forget_events")
        alice.ask("set", "level", 2)
        self.say("alice  s['level'] = 2")
        for _, event in carol.ask("wait_for", ["KeyChanged"], "level", 5.0):
            self.say(f"carol  got {describe(event)}")
        bob.ask("add_score", "bob", 10)
        self.say("bob    s.apply_op('scores', add_10_to_bob)")
        for _, event in carol.ask("wait_for", ["KeyChanged"], "scores", 5.0):
            self.say(f"carol  got {describe(event)}")

    def crash_the_host(
        self,
    ) -> tuple[bool, PeerProcess, PeerProcess, list[PeerProcess]] | None:
        """Kill the host; (values intact, the killed, the new host, the
        survivors), or None if the survivors do not agree on a new host."""
        carol = self.peers["carol"]
        self.step("4. The host crashes")
        before = carol.ask("read")
        host = self.peers[carol.ask("info")["host"]]
        survivors = [peer for peer in self.peers.values() if peer is not host]
        for peer in survivors:
            peer.ask("forget_events")
        self.say(f"{host.name} hosts. Killing it: os.kill({host.pid}, SIGKILL)")
        killed_at = time.monotonic()
        os.kill(host.pid, signal.SIGKILL)
        host.process.join()
        for peer in survivors:  # ask both first, so that they wait at the same time
            peer.send("wait_for", ["HostChanged", "PeerLeft"], None, 10.0)
        for peer in survivors:
            for at, event in peer.answer():
                self.say(f"{peer.name:<6} got {describe(event)}   ({at - killed_at:.2f} s later)")
        infos = {peer.name: peer.ask("info") for peer in survivors}
        hosts = {info["host"] for info in infos.values()}
        if len(hosts) != 1 or None in hosts or host.name in hosts:
            self.say(f"the survivors do not agree on a new host: {infos}")
            return None
        new = self.peers[hosts.pop()]
        info = infos[new.name]
        peers = ", ".join(info["peers"])
        self.say(f"{new.name} took over as host (epoch {info['epoch']}); s.peers: {peers}")
        self.say(f"before the crash: {show(before)}")
        ok = True
        for peer in survivors:
            after = peer.ask("read")
            ok = ok and after == before
            self.say(
                f"{peer.name:<6} reads: "
                + ("all values intact" if after == before else show(after))
            )
        return ok, host, new, survivors

    def go_on(self, new: PeerProcess, other: PeerProcess, survivors: list[PeerProcess]) -> bool:
        self.step("5. Life goes on with the new host")
        other.ask("set", "level", 3)
        self.say(f"{other.name:<6} s['level'] = 3   (through {new.name}, the new host)")
        new.ask("add_score", other.name, 5)
        self.say(f"{new.name:<6} s.apply_op('scores', add_5_to_{other.name})")
        ok = True
        for peer in survivors:
            state = peer.ask("read")
            ok = ok and state["level"] == 3 and state["scores"][other.name] == 5
            self.say(f"{peer.name:<6} reads {show({k: state[k] for k in ('level', 'scores')})}")
        return ok

    def leave(self, host: PeerProcess, new: PeerProcess, other: PeerProcess) -> None:
        self.step("6. Everyone leaves cleanly")
        self.peers.pop(host.name).stop()  # the killed one: just reap its process
        other.ask("forget_events")
        self.peers.pop(new.name).stop()
        self.say(f"{new.name:<6} s.close(): flushes its writes, hands the session over, leaves")
        for _, event in other.ask("wait_for", ["HostChanged", "PeerLeft"], None, 5.0):
            self.say(f"{other.name:<6} got {describe(event)}")
        self.peers.pop(other.name).stop()
        self.say(f"{other.name:<6} s.close(): the last one out; nothing is left behind")

    def stop_all(self) -> None:
        for peer in self.peers.values():
            peer.stop()
        self.peers.clear()


def default_interfaces() -> list[str]:
    """P2PSTATE_INTERFACES if set, else loopback: the demo never leaves this machine
    unless asked to."""
    env = os.environ.get("P2PSTATE_INTERFACES", "")
    return [part.strip() for part in env.split(",") if part.strip()] or list(LOOPBACK)


def run(
    *,
    fast: bool = False,
    interfaces: Sequence[str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run the tour; 0 if everything held, 1 if not, 130 on Ctrl-C."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    chosen = list(interfaces) if interfaces else default_interfaces()
    tour = Tour(fast=fast, interfaces=chosen, out=out)
    try:
        return 0 if tour.run() else 1
    except RuntimeError as exc:
        err.write(f"\nTour FAILED: {exc}\n")
        return 1
    except KeyboardInterrupt:
        tour.print("\nInterrupted: stopping the peers.")
        return 130
    finally:
        tour.stop_all()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tour.py",
        description="A guided tour of p2pstate: three local peers, a kill -9 of the host, "
        "the session carrying on.",
    )
    parser.add_argument("--fast", action="store_true", help="no pauses (for tests)")
    args = parser.parse_args(argv)
    return run(fast=args.fast)
