"""The demos, run as a newcomer runs them, each in its own process, on loopback.

Every run gets P2PSTATE_INTERFACES=127.0.0.1 and its own session name, so
runs of these tests at the same time do not meet each other.
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
from collections.abc import Callable
from pathlib import Path

DEMOS = Path(__file__).resolve().parents[2] / "demos"
ENV = dict(os.environ, P2PSTATE_INTERFACES="127.0.0.1", PYTHONUNBUFFERED="1")


def run_demo(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``python demos/<args>`` to the end (killed after *timeout* s)."""
    return subprocess.run(
        [sys.executable, str(DEMOS / args[0]), *args[1:]],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class Background:
    """A demo left running, its output lines collected as they come."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(DEMOS / args[0]), *args[1:]],
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, name="demo-stdout", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_line(self, match: Callable[[str], bool], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no such line within {timeout} s; got {self.seen}") from None
            self.seen.append(line)
            if match(line):
                return line

    def interrupt(self) -> tuple[int, str]:
        """Ctrl-C it (by its pid), SIGKILL if it lingers; return (exit code, stderr)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._reader.join(5)
        assert self.proc.stderr is not None
        err = self.proc.stderr.read()
        self.proc.stderr.close()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return self.proc.returncode, err


def test_motd_reader_sees_the_message_set_by_another_copy() -> None:
    session = f"test-motd-{secrets.token_hex(4)}"
    reader = Background("motd.py", "--session", session)
    try:
        first = reader.wait_line(lambda line: line.startswith("MOTD:"), 15)
        assert first == "MOTD: (none yet; set one with --set)"

        done = run_demo("motd.py", "--session", session, "--set", "hello, LAN", timeout=20)
        assert done.returncode == 0, done.stderr
        assert "1 other copy is running" in done.stdout, done.stdout
        assert reader.wait_line(lambda line: line.startswith("MOTD:"), 10) == "MOTD: hello, LAN"

        # The same text again changes nothing on screen (get_if_changed);
        # a new text shows, and nothing came in between.
        for text in ("hello, LAN", "second message"):
            done = run_demo("motd.py", "--session", session, "--set", text, timeout=20)
            assert done.returncode == 0, done.stderr
        assert reader.wait_line(lambda line: line.startswith("MOTD:"), 10) == (
            "MOTD: second message"
        )
    finally:
        code, err = reader.interrupt()
    assert code == 0, err
    assert "Traceback" not in err, err


def test_counter_apply_op_loses_nothing() -> None:
    started = time.monotonic()
    done = run_demo("counter.py", "--workers", "3", "--count", "60", timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    safe = re.search(r"^apply_op .*: expected (\d+), got (\d+)", done.stdout, re.M)
    naive = re.search(r"^naive .*: expected (\d+), got (\d+)", done.stdout, re.M)
    assert safe is not None and naive is not None, done.stdout
    assert int(safe[1]) == int(safe[2]) == 180, done.stdout
    assert int(naive[1]) == 180 and 0 < int(naive[2]) <= 180, done.stdout
    assert time.monotonic() - started < 30


def test_tour_survives_the_kill_of_its_host() -> None:
    done = run_demo("tour.py", "--fast", timeout=60)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "alice  found no session, so it hosts one (epoch 1)" in out, out
    assert "carol  got KeyChanged   level = 2" in out, out
    # SIGKILL of alice: both survivors see the takeover, and lose nothing.
    assert re.search(r"Killing it: os\.kill\(\d+, SIGKILL\)", out), out
    for name in ("bob", "carol"):
        assert f"{name:<6} got HostChanged  alice -> bob, epoch 2" in out, out
        assert f"{name:<6} got PeerLeft     alice (failed)" in out, out
        assert f"{name:<6} reads: all values intact" in out, out
    assert "bob took over as host (epoch 2); s.peers: bob (host), carol" in out, out
    # Writes work again through the new host, and the end is clean.
    assert "carol  reads level=3  scores={'alice': 0, 'bob': 10, 'carol': 5}" in out, out
    assert "carol  got HostChanged  bob -> carol, epoch 3" in out, out
    assert out.rstrip().endswith("Tour complete."), out
    assert "Traceback" not in done.stderr, done.stderr
