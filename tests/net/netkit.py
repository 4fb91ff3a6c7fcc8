"""Real peers in separate processes on loopback, driven over pipes, and the
fixtures that start them (conftest.py hands the fixtures to pytest).

Tests import helpers from here, never ``from conftest``: tests/core and
tests/lan have a conftest.py too, and which one ``import conftest`` finds
depends on the order pytest collected the folders in."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import p2pstate
from p2pstate import SharedState

WORKER = Path(__file__).with_name("worker.py")
ROOT = Path(__file__).resolve().parents[2]


class PeerProcess:
    """One worker process; ``cmd`` sends a command and returns its reply."""

    def __init__(self, app: str, session: str, options: dict[str, Any]) -> None:
        env = dict(os.environ, P2PSTATE_INTERFACES="127.0.0.1", PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), app, session, json.dumps(options)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.pid = self.proc.pid
        self.ready: dict[str, Any] | None = None

    def wait_ready(self, timeout: float = 15.0) -> dict[str, Any]:
        if self.ready is None:
            self.ready = self._read(timeout)
        return self.ready

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        readable, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not readable:
            raise TimeoutError(f"worker {self.pid} said nothing in {timeout} s")
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"worker {self.pid} exited: {err[-3000:]}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def cmd(self, op: str, timeout: float = 30.0, **args: Any) -> dict[str, Any]:
        self.wait_ready()
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        return self._read(timeout)

    def kill(self) -> None:
        """kill -9 this worker, by its own pid."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, TimeoutError, RuntimeError, ValueError):
                self.cmd("close", timeout=5)
        self.kill()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def run_cli(
    *args: str,
    timeout: float = 30,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``p2pstate ARGS`` to the end, as a user would at a prompt: from
    this checkout, on loopback, in the environment as it is now (a test may
    have set P2PSTATE_HOME), unless *env* is given."""
    if env is None:
        env = dict(os.environ, P2PSTATE_INTERFACES="127.0.0.1", PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "p2pstate", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
    )


def new_installation() -> str:
    """An identity directory of its own: each peer a test starts is another
    installation (another machine at the LAN party), unless the test says
    otherwise. It lives under the test run's P2PSTATE_HOME, removed at the end."""
    return tempfile.mkdtemp(prefix="install-", dir=os.environ["P2PSTATE_HOME"])


@pytest.fixture
def app_name() -> str:
    """A fresh app name per test, so sessions of other tests never match."""
    return f"test-{secrets.token_hex(4)}"


@pytest.fixture
def spawn(app_name: str) -> Iterator[Callable[..., PeerProcess]]:
    procs: list[PeerProcess] = []

    def start(session: str = "default", **options: Any) -> PeerProcess:
        options.setdefault("discovery_window", 0.3)
        options.setdefault("identity_dir", new_installation())
        peer = PeerProcess(app_name, session, options)
        procs.append(peer)
        return peer

    yield start
    for peer in procs:
        peer.stop()


Join = Callable[..., SharedState]


@pytest.fixture
def join(app_name: str) -> Iterator[Join]:
    """Join peers of one fresh session in this process (each with its own
    sockets, I/O thread and mDNS), all closed at the end of the test."""
    opened: list[SharedState] = []

    def make(**options: Any) -> SharedState:
        options.setdefault("discovery_window", 0.3)
        options.setdefault("identity_dir", new_installation())
        s = p2pstate.join(app_name, interfaces=["127.0.0.1"], **options)
        opened.append(s)
        return s

    yield make
    for s in reversed(opened):
        s.close()


def saw_event(peer: PeerProcess, name: str, timeout: float = 5.0) -> bool:
    """Whether *peer*'s on_change callback is given an event of type *name*
    within *timeout*: callbacks run on their own thread, after the view
    that the event reports is readable."""
    deadline = time.monotonic() + timeout
    while name not in peer.cmd("events")["events"]:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)
    return True


def eventually(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until *pred* holds; fail the test after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)
