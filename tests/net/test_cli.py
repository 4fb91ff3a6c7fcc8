"""The p2pstate command, driven as a person drives it: in subprocesses, and in a
real terminal (a pty, through pexpect) for the live lobby and the shell.

Everything runs on 127.0.0.1 (P2PSTATE_INTERFACES), each test with its own
random app name, and every process started here is killed by its own pid.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from netkit import run_cli

import p2pstate
from p2pstate.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(
    os.environ,
    P2PSTATE_INTERFACES="127.0.0.1",
    PYTHONUNBUFFERED="1",
    PYTHONPATH=str(ROOT),
    COLUMNS="160",
)
COMMAND = [sys.executable, "-m", "p2pstate"]
SUBCOMMANDS = (
    "lobby",
    "get",
    "set",
    "del",
    "keys",
    "watch",
    "backup",
    "restore",
    "host",
    "join",
    "demo",
)


def cli(
    *args: str, timeout: float = 30, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``p2pstate ARGS`` to the end, with a wide terminal for the tables."""
    return run_cli(*args, timeout=timeout, stdin=stdin, env=ENV)


class Background:
    """A command left running; its output lines collected as they come."""

    def __init__(self, *args: str, stdin: bool = False) -> None:
        self.proc = subprocess.Popen(
            [*COMMAND, *args],
            env=ENV,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.err_lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.err: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(stream, q), name="cli-out", daemon=True)
            for stream, q in ((self.proc.stdout, self.lines), (self.proc.stderr, self.err_lines))
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: Any, into: queue.Queue[str]) -> None:
        for line in stream:
            into.put(line.rstrip("\n"))

    def type(self, line: str) -> None:
        """Type a line on its stdin (made with stdin=True)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait_line(self, match: Callable[[str], bool], timeout: float = 10) -> str:
        """The next stdout line that *match*es."""
        return self._wait(self.lines, self.seen, match, timeout)

    def wait_err(self, match: Callable[[str], bool], timeout: float = 10) -> str:
        """The next stderr line that *match*es."""
        return self._wait(self.err_lines, self.err, match, timeout)

    @staticmethod
    def _wait(
        lines: queue.Queue[str], seen: list[str], match: Callable[[str], bool], timeout: float
    ) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no such line within {timeout} s; got {seen}") from None
            seen.append(line)
            if match(line):
                return line

    def signal(self, signum: int = signal.SIGINT) -> tuple[int, str]:
        """Send *signum* (by pid), SIGKILL if it lingers; return (exit status, stderr)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signum)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        for reader in self._readers:
            reader.join(5)
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        assert self.proc.stderr is not None and self.proc.stdout is not None
        self.proc.stderr.close()
        self.proc.stdout.close()
        while not self.err_lines.empty():
            self.err.append(self.err_lines.get_nowait())
        return self.proc.returncode, "\n".join(self.err)


@pytest.fixture
def background() -> Iterator[Callable[..., Background]]:
    started: list[Background] = []

    def start(*args: str, stdin: bool = False) -> Background:
        proc = Background(*args, stdin=stdin)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.proc.poll() is None:
            proc.signal(signal.SIGKILL)


# --------------------------------------------------------------------------- help


def test_help_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    top = cli("--help")
    assert top.returncode == 0, top.stderr
    for name in SUBCOMMANDS:
        assert re.search(rf"^\s+{name}\s+\S", top.stdout, re.M), (name, top.stdout)
    # The command's parser in this process: the same text without starting
    # Python eleven more times (the lines above and below run the command).
    for name in SUBCOMMANDS:
        with pytest.raises(SystemExit) as done:
            cli_main([name, "--help"])
        out, err = capsys.readouterr()
        assert done.value.code == 0, err
        assert out.startswith(f"usage: p2pstate {name}"), out
        if name not in ("lobby", "demo"):
            assert "--session NAME" in out, out
    bare = cli()
    assert bare.returncode == 2 and "usage: p2pstate" in bare.stderr
    wrong = cli("get", "only-an-app")
    assert wrong.returncode == 2 and "KEY" in wrong.stderr
    version = cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"p2pstate {p2pstate.__version__}"


def test_the_installed_command_is_the_same() -> None:
    script = shutil.which("p2pstate", path=str(Path(sys.executable).parent)) or shutil.which(
        "p2pstate"
    )
    if script is None:
        pytest.skip("no p2pstate script on PATH: pip install -e . creates it")
    done = subprocess.run(
        [script, "--help"], env=ENV, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0 and "usage: p2pstate" in done.stdout, done.stderr


# --------------------------------------------------------------------------- one-shot tools


@pytest.mark.alone  # asserts a wall-clock bound
def test_tools_never_create_a_session(app_name: str) -> None:
    """With nobody hosting, get/set/del/keys/watch/join fail (status 1) and say
    why, instead of quietly hosting a session of their own as join() would."""
    for args in (
        ("get", app_name, "k"),
        ("set", app_name, "k", "1"),
        ("del", app_name, "k"),
        ("keys", app_name),
        ("watch", app_name),
        ("join", app_name),
    ):
        started = time.monotonic()
        done = cli(*args, "--timeout", "0.5")
        took = time.monotonic() - started
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert f"no session 'default' of '{app_name}' on the LAN" in done.stderr, done.stderr
        assert f"p2pstate host {app_name}" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr and done.stdout == ""
        assert took < 5, (args, took)
    # And nothing was left behind for the next one to find.
    assert p2pstate.browse(app_name, 1.0) == []


@pytest.mark.alone  # asserts a wall-clock bound
def test_get_set_del_keys(spawn: Callable[..., Any], app_name: str) -> None:
    host = spawn(name="host")
    host.wait_ready()
    values = {
        "level": ("3", 3),
        "motd": ("hello, LAN", "hello, LAN"),
        "quoted": ('"3"', "3"),
        "odd": ("NaN", "NaN"),  # not JSON we accept: a string
        "obj": ('{"a": [true, null, 2.5]}', {"a": [True, None, 2.5]}),
    }
    started = time.monotonic()
    for key, (typed, _) in values.items():
        done = cli("set", app_name, key, typed)
        assert done.returncode == 0, done.stderr
        assert done.stdout == "" and done.stderr == ""
    per_command = (time.monotonic() - started) / len(values)
    for key, (_, value) in values.items():
        assert host.cmd("get", key=key)["value"] == value  # the host holds the typed value
    for key in ("motd", "obj"):
        done = cli("get", app_name, key)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == values[key][1]

    done = cli("keys", app_name)
    assert done.returncode == 0 and done.stdout.split() == sorted(values)

    assert cli("del", app_name, "level").returncode == 0
    assert host.cmd("get", key="level")["value"] is None
    for args in (("get", app_name, "level"), ("del", app_name, "level")):
        done = cli(*args)
        assert (
            done.returncode == 1
            and f"no key 'level' in the session 'default' of '{app_name}'" in (done.stderr)
        ), done.stderr
    # The tools joined and left: only the host is a member now.
    assert host.cmd("info")["peers"] == [host.ready["id"]]  # type: ignore[index]
    assert per_command < 3, f"a one-shot command took {per_command:.2f} s"


def test_session_option_selects_the_session(spawn: Callable[..., Any], app_name: str) -> None:
    spawn("room-1").wait_ready()
    done = cli("set", app_name, "k", "1", "--session", "room-1")
    assert done.returncode == 0, done.stderr
    assert cli("get", app_name, "k", "--session", "room-1").stdout.strip() == "1"
    missing = cli("get", app_name, "k", "--timeout", "0.5")
    assert missing.returncode == 1 and "no session 'default'" in missing.stderr
    other = cli("keys", app_name, "--session", "room-2", "--timeout", "0.5")
    assert other.returncode == 1 and "--session room-2" in other.stderr, other.stderr


def test_watch_prints_changes_as_they_happen(
    spawn: Callable[..., Any], app_name: str, background: Callable[..., Background]
) -> None:
    host = spawn(name="alice")
    host.cmd("set", key="before", value=1)
    watch = background("watch", app_name, "--initial", "--name", "watcher")
    assert watch.wait_line(lambda line: line.startswith("set ")) == "set before 1"
    started = time.monotonic()
    host.cmd("set", key="level", value=3)
    assert watch.wait_line(lambda line: "level" in line) == "set level 3"
    latency = time.monotonic() - started
    assert cli("set", app_name, "my key", "two words").returncode == 0
    assert watch.wait_line(lambda line: "my key" in line) == 'set "my key" "two words"'
    assert cli("del", app_name, "level").returncode == 0
    assert watch.wait_line(lambda line: line.startswith("del")) == "del level"
    other = spawn(name="bob")
    other.wait_ready()
    assert watch.wait_line(lambda line: "bob" in line) == "# bob joined"
    other.stop()
    assert watch.wait_line(lambda line: "bob" in line) == "# bob left (left)"
    # SIGTERM leaves the session properly, like Ctrl-C: the host sees a leave.
    code, err = watch.signal(signal.SIGTERM)
    assert code == 128 + signal.SIGTERM and "Traceback" not in err, err
    assert "watching the session 'default'" in err
    assert latency < 1.0


def test_watch_stops_on_ctrl_c(
    spawn: Callable[..., Any], app_name: str, background: Callable[..., Background]
) -> None:
    host = spawn()
    host.wait_ready()
    watch = background("watch", app_name)
    watch.wait_err(lambda line: line.startswith("watching"))
    host.cmd("set", key="x", value=[1])
    assert watch.wait_line(lambda line: line.startswith("set")) == "set x [1]"
    code, err = watch.signal(signal.SIGINT)
    assert code == 0 and "Traceback" not in err, err


# --------------------------------------------------------------------------- lobby --once


def test_lobby_once(spawn: Callable[..., Any], app_name: str) -> None:
    empty = cli("lobby", app_name, "--once", "--timeout", "0.5")
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout.strip() == f"no sessions of app '{app_name}' on the LAN (looked for 0.5 s)"

    spawn(name="alice").wait_ready()
    spawn(name="bob").wait_ready()
    spawn("room-2", name="carol").wait_ready()
    done = cli("lobby", app_name, "--once")
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split() == [
        "APP",
        "SESSION",
        "HOST",
        "PLAYERS",
        "STATUS",
        "ACCESS",
        "VERSION",
        "ENDPOINT",
        "METADATA",
    ]
    assert [row.split()[:5] for row in rows] == [
        [app_name, "default", "alice", "2", "open"],
        [app_name, "room-2", "carol", "1", "open"],
    ]
    assert all(re.search(r"tcp://127\.0\.0\.1:\d+", row) for row in rows)

    data = json.loads(cli("lobby", app_name, "--once", "--json", "--session", "room-2").stdout)
    assert [(d["session"], d["host_name"], d["players"]) for d in data] == [("room-2", "carol", 1)]
    assert data[0]["max_players"] is None and data[0]["joinable"] is True

    # Every app: ours are among them (other tests' apps may be too).
    everything = cli("lobby", "--once")
    assert everything.returncode == 0
    assert re.search(rf"^{app_name}\s+room-2\s+carol\s", everything.stdout, re.M), everything.stdout

    bad = cli("lobby", app_name, "--once", "--meta", "players=2")
    assert bad.returncode == 1 and "'players' is a column of the table" in bad.stderr


def test_host_settings_show_in_the_lobby(
    spawn: Callable[..., Any], app_name: str, background: Callable[..., Background]
) -> None:
    host = background(
        "host", app_name, "--name", "alice", "--max-players", "2", "--meta", "map=dust", stdin=True
    )
    host.wait_err(lambda line: line.startswith("hosting"))
    host.type("info")
    assert host.wait_line(lambda line: line.startswith("settings")) == (
        'settings: max_players=2, metadata={"map": "dust"}'
    )
    row = cli("lobby", app_name, "--once", "--open", "--meta", "map=dust").stdout.splitlines()[1]
    assert re.match(rf"{app_name}\s+default\s+alice\s+1/2\s+open\s.*map=dust$", row), row

    spawn(name="bob").wait_ready()
    row = cli("lobby", app_name, "--once").stdout.splitlines()[1]
    assert re.match(rf"{app_name}\s+default\s+alice\s+2/2\s+full\s", row), row
    assert cli("lobby", app_name, "--once", "--open", "--timeout", "0.5").stdout.startswith(
        "no sessions"
    )
    # The tools join as members, so a full session turns them away too.
    full = cli("get", app_name, "k")
    assert full.returncode == 1 and "SessionFullError" in full.stderr, full.stderr

    host.proc.stdin.close()  # type: ignore[union-attr]  # Ctrl-D: the shell ends
    assert host.proc.wait(10) == 0


# --------------------------------------------------------------------------- terminals

try:
    import pexpect
except ImportError:  # the terminal tests skip; everything above still runs
    pexpect = None

needs_terminal = pytest.mark.skipif(
    pexpect is None, reason="pexpect is not installed (pip install pexpect)"
)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # e.g. readline's bracketed-paste switches


class Terminal:
    """``p2pstate ARGS`` in a real terminal (a pty), as a person runs it."""

    def __init__(self, *args: str, rows: int = 30, cols: int = 160) -> None:
        env = dict(ENV)
        env.pop("COLUMNS", None)  # the terminal's size says it
        env["TERM"] = "xterm"
        self.child = pexpect.spawn(
            COMMAND[0],
            [*COMMAND[1:], *args],
            env=env,
            encoding="utf-8",
            timeout=15,
            dimensions=(rows, cols),
        )

    def expect(self, pattern: str, timeout: float = 15) -> str:
        self.child.expect(pattern, timeout=timeout)
        return str(self.child.before) + str(self.child.after)

    def type(self, line: str) -> None:
        self.child.sendline(line)

    def run(self, line: str, role: str = "(host|peer)") -> str:
        """Type a command and return what it printed, up to the next prompt."""
        self.type(line)
        self.child.expect(rf"\S+/\S+ \({role}\)> ")
        out = ANSI.sub("", str(self.child.before)).replace("\r", "")
        return out.split("\n", 1)[1] if "\n" in out else ""

    def exit_status(self, timeout: float = 15) -> int:
        self.child.expect(pexpect.EOF, timeout=timeout)
        self.child.close()
        return int(self.child.exitstatus if self.child.exitstatus is not None else -1)

    def kill(self) -> None:
        if self.child.isalive():
            os.kill(self.child.pid, signal.SIGKILL)
        self.child.close(force=True)


@pytest.fixture
def terminal() -> Iterator[Callable[..., Terminal]]:
    opened: list[Terminal] = []

    def start(*args: str, **kw: int) -> Terminal:
        term = Terminal(*args, **kw)
        opened.append(term)
        return term

    yield start
    for term in opened:
        term.kill()


@needs_terminal
def test_live_lobby_in_a_terminal(
    terminal: Callable[..., Terminal], spawn: Callable[..., Any], app_name: str
) -> None:
    lobby = terminal("lobby", app_name)
    lobby.expect(r"\(no sessions found yet\)")
    alice = spawn(name="alice")
    alice.wait_ready()
    row = rf"{app_name}\s+default\s+alice\s+(\d)\s+open"
    lobby.expect(row)
    bob = spawn(name="bob")
    bob.wait_ready()
    lobby.expect(rf"{app_name}\s+default\s+alice\s+2\s+open")
    alice.stop()  # a graceful handoff: bob hosts now, alone
    lobby.expect(rf"{app_name}\s+default\s+bob\s+1\s+open")
    bob.stop()
    lobby.expect(r"\(no sessions found yet\)")
    lobby.child.sendintr()
    assert lobby.exit_status() == 0


@needs_terminal
def test_shells_in_two_terminals(terminal: Callable[..., Terminal], app_name: str) -> None:
    alice = terminal("host", app_name, "--name", "alice")
    alice.expect(rf"hosting session 'default' of '{app_name}' at tcp://127\.0\.0\.1:\d+")
    alice.expect(r"\(host\)> ")
    assert alice.run("set level 3") == ""
    assert alice.run('set motd "hi all"') == ""
    assert alice.run("get level").strip() == "3"
    assert alice.run("get nope").strip() == "error: no key 'nope'"
    assert alice.run("frobnicate").strip() == "error: unknown command 'frobnicate' (type help)"
    help_text = alice.run("help")
    for name in ("get", "set", "del", "keys", "peers", "watch", "info", "quit"):
        assert re.search(rf"\b{name}\b", help_text), help_text

    # A second copy of the command cannot host the same session...
    again = cli("host", app_name, "--timeout", "0.5")
    assert again.returncode == 1 and "already exists (host alice at tcp://" in again.stderr

    # ...but can join it.
    bob = terminal("join", app_name, "--name", "bob")
    bob.expect(rf"joined session 'default' of '{app_name}', hosted by alice, as 'bob'")
    bob.expect(r"\(peer\)> ")
    assert bob.run("get motd").strip() == '"hi all"'
    assert bob.run("keys").split() == ["level", "motd"]
    peers = bob.run("peers").splitlines()
    assert re.match(r"alice\s+\(host\)\s+tcp://", peers[0]), peers
    assert re.match(r"bob\s+\(you\)\s+tcp://", peers[1]), peers

    # watch shows alice's changes as they happen, until Ctrl-C.
    bob.type("watch")
    bob.expect("# watching; Ctrl-C to stop")
    alice.run("set level 4")
    alice.run("del motd")
    bob.expect(r"set level 4\s+del motd")
    bob.child.sendintr()
    bob.expect(r"\(peer\)> ")

    # alice quits: bob takes over, and hears about it at his next command.
    alice.type("quit")
    assert alice.exit_status() == 0
    info = bob.run("info", role="host")
    assert "# host: alice -> bob (epoch 2)" in info, info
    assert "you are 'bob' (host)" in info, info
    assert bob.run("get level", role="host").strip() == "4"
    bob.child.sendeof()  # Ctrl-D
    assert bob.exit_status() == 0
    assert p2pstate.browse(app_name, 1.0) == []  # the last one out: nothing left


def test_the_shell_reads_commands_from_a_pipe(spawn: Callable[..., Any], app_name: str) -> None:
    spawn().wait_ready()
    done = cli("join", app_name, stdin="set a [1, 2]\nget a\nkeys\nget missing\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[1, 2]", "a", "error: no key 'missing'"]


def test_say_sends_a_message_to_the_others(spawn: Callable[..., Any], app_name: str) -> None:
    listener = spawn()
    listener.wait_ready()
    done = cli("join", app_name, stdin="say hello, lan\n")
    assert done.returncode == 0, done.stderr
    got = listener.cmd("messages")["messages"]
    assert [payload for _, payload in got] == ["hello, lan"]
    from p2pstate.cli import describe
    from p2pstate.events import Message, Peer

    line = describe(Message(sender=Peer(id="x", name="bob", endpoint=""), payload="hi"))
    assert line == "# <bob> hi"


# --------------------------------------------------------------------------- demo


@pytest.mark.alone  # asserts a wall-clock bound
def test_demo_runs_from_the_package(tmp_path: Path) -> None:
    """What the README's first command runs, from outside the repository (so no
    demos/ folder), with P2PSTATE_INTERFACES unset: it stays on loopback anyway."""
    env = {k: v for k, v in ENV.items() if k != "P2PSTATE_INTERFACES"}
    started = time.monotonic()
    done = subprocess.run(
        [*COMMAND, "demo", "--fast"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "Every packet stays on 127.0.0.1." in out, out
    assert "alice  found no session, so it hosts one (epoch 1)" in out, out
    assert re.search(r"Killing it: os\.kill\(\d+, SIGKILL\)", out), out
    assert "bob took over as host (epoch 2); s.peers: bob (host), carol" in out, out
    assert out.rstrip().endswith("Tour complete."), out
    assert "Traceback" not in done.stderr, done.stderr
    assert time.monotonic() - started < 30
