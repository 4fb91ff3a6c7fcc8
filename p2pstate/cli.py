"""The ``p2pstate`` command: the LAN lobby, one-shot tools, an interactive shell, the demo.

    p2pstate lobby [APP]              a live table of the LAN's sessions (--once: print it once)
    p2pstate get APP KEY              print a value (as JSON)
    p2pstate set APP KEY VALUE        write one (VALUE is JSON if it parses, else a string)
    p2pstate del APP KEY              delete one
    p2pstate keys APP                 list the keys
    p2pstate watch APP                print the changes as they happen
    p2pstate backup APP FILE          write the session's lasting keys to a backup file
    p2pstate restore APP FILE         replace the session's keys by a backup's, as one change
    p2pstate host APP                 start a session and type commands in it
    p2pstate join APP                 join a session and type commands in it
    p2pstate demo                     three local peers, a kill -9 of the host, failover
    p2pstate id                       this installation's identity and where it is kept
    p2pstate ban|unban APP ID         ban an identity, or lift its ban (the admin only)
    p2pstate authorize|unauthorize APP ID   let an identity in, or take that back (admin)
    p2pstate access APP               the admin, modes, limits, authorized and banned

``--session NAME`` picks a session of the app (default "default"); ``--secret``
(or $P2PSTATE_SECRET, which other users can't see in ``ps``) is the secret of a
secured session. The tools
that read or write an existing session never start one: they look for it
first and fail with exit status 1 if nobody hosts it. Exit status: 0 done
(also when Ctrl-C ends lobby, watch or a shell), 1 failed (message on
stderr), 2 bad usage, 130 interrupted otherwise, 143 terminated (SIGTERM:
the session is still left properly).
"""

from __future__ import annotations

import argparse
import cmd
import contextlib
import dataclasses
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import sys
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import IO, Any, TextIO

from . import __version__, join
from .backup import read_backup
from .codec import check_key, normalize
from .core.ids import identity_of
from .errors import P2PStateError
from .events import (
    Event,
    HostChanged,
    KeyChanged,
    KeyDeleted,
    Message,
    Peer,
    PeerJoined,
    PeerLeft,
    PeerUpdated,
    WritesRestored,
    WritesRolledBack,
)
from .lobby import (
    Lobby,
    SessionAppeared,
    SessionChanged,
    SessionInfo,
    SessionVanished,
    browse,
)
from .state import SharedState

__all__ = ["main"]

log = logging.getLogger(__name__)

PROG = "p2pstate"
DEFAULT_SESSION = "default"
#: Seconds a tool looks for the session before saying there is none.
DEFAULT_FIND_TIMEOUT = 1.0
#: Seconds ``lobby --once`` listens.
DEFAULT_LOBBY_TIMEOUT = 1.0
#: Seconds join() may take once the host is found.
JOIN_TIMEOUT = 10.0
_MAX_NAME_BYTES = 100
#: The session secret for the commands that join, if --secret is not given.
ENV_SECRET = "P2PSTATE_SECRET"
_CLEAR_SCREEN = "\x1b[H\x1b[2J"


class CliError(Exception):
    """A command failed in a way the user should read about (exit status 1)."""


# =============================================================================
# Values and events as text
# =============================================================================

# Bidirectional overrides, embeddings, isolates and marks: they reorder what
# the terminal shows ("evil\u202etxt.exe" reads as "evilexe.txt").
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def terminal_safe(text: str) -> str:
    """*text* with whatever a terminal would act on instead of show written as
    a visible escape (``\\n``, ``\\u001b``): control characters (ESC and the
    C1 set among them, so no escape sequence of a stranger's reaches the
    terminal), line separators, bidi controls and lone surrogates. Every
    string that came from the network goes through it before it is printed;
    what it returns is valid inside a JSON string, and unchanged by a second
    pass."""
    if text.isprintable():  # the usual case: nothing to look at
        return text
    return "".join(_visible(ch) for ch in text)


def _visible(ch: str) -> str:
    if ch in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[ch]
    if ch in _BIDI or unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp"):
        return f"\\u{ord(ch):04x}"
    return ch


class _SafeFormatter(logging.Formatter):
    """Log lines quote peer ids, names and reasons from the network: each line
    of a record goes through terminal_safe (a traceback keeps its lines)."""

    def format(self, record: logging.LogRecord) -> str:
        return "\n".join(terminal_safe(line) for line in super().format(record).split("\n"))


def _out(text: str, *, file: IO[str] | None = None, flush: bool = False) -> None:
    """print() for a line that may hold remote data (names, keys, values)."""
    print(terminal_safe(text), file=file, flush=flush)


def parse_value(text: str) -> Any:
    """A value typed by the user: JSON if it parses (``3``, ``[1, 2]``,
    ``"3"``, ``null``), else the text itself as a string."""

    def reject(constant: str) -> Any:
        raise ValueError(constant)  # NaN and Infinity: keep them as text

    try:
        return json.loads(text, parse_constant=reject)
    except ValueError:
        return text


def format_value(value: Any) -> str:
    """A value as JSON, or as Python's repr if JSON cannot hold it (bytes)."""
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def format_key(key: str) -> str:
    """A key as typed in the shell: bare, or JSON-quoted if it has spaces or quotes."""
    if not key or any(ch.isspace() or ch in "\"'\\#" for ch in key):
        return json.dumps(key, ensure_ascii=False)
    return key


def _rolled_back(event: WritesRolledBack) -> str:
    return _writes_line("a merge of two halves of the session undid", "write(s)", event)


def _restored(event: WritesRestored) -> str:
    return _writes_line("a later merge brought back", "write(s) reported undone", event)


def _writes_line(did: str, what: str, event: WritesRolledBack | WritesRestored) -> str:
    """One line for a report of writes, with the keys of ours it names."""
    keys = sorted({key for write in event.mine for key in write.keys})
    return (
        f"# {did} {len(event.writes) + event.more} {what}, "
        f"{len(event.mine) + event.more} of them yours"
        + (f": {', '.join(keys)}" if keys else "")
        + (f" (and {event.more} older ones)" if event.more and keys else "")
    )


def _host_changed(event: HostChanged) -> str:
    old = event.old.name if event.old is not None else "nobody"
    return f"# host: {old} -> {event.new.name} (epoch {event.epoch})"


_DESCRIBE: dict[type[Any], Callable[[Any], str]] = {
    KeyChanged: lambda e: f"set {format_key(e.key)} {format_value(e.value)}",
    KeyDeleted: lambda e: f"del {format_key(e.key)}",
    PeerJoined: lambda e: f"# {e.peer.name} joined",
    PeerLeft: lambda e: f"# {e.peer.name} left ({e.reason})",
    HostChanged: _host_changed,
    WritesRolledBack: _rolled_back,
    WritesRestored: _restored,
    Message: lambda e: (
        f"# <{e.sender.name}> "
        + (e.payload if isinstance(e.payload, str) else format_value(e.payload))
        + (" (to you)" if e.to else "")
    ),
    PeerUpdated: lambda e: f"# {e.peer.name} is now {format_value(e.peer.profile)}",
}


def describe(event: Event) -> str:
    """One line per event. Changes read as shell commands (set/del); the rest as
    comments (#). An event kind without a line of its own is shown field by field."""
    formatter = _DESCRIBE.get(type(event))
    if formatter is not None:
        return formatter(event)
    parts = []
    for item in dataclasses.fields(event):
        value = getattr(event, item.name)
        shown = value.name if isinstance(value, Peer) else format_value(value)
        parts.append(f"{item.name}={shown}")
    return f"# {type(event).__name__} " + " ".join(parts)


# =============================================================================
# Finding and joining a session
# =============================================================================


def _interfaces(args: argparse.Namespace) -> list[str] | None:
    text: str | None = args.interfaces
    if text is None:
        return None
    from .discovery import resolve_interfaces  # noqa: PLC0415 (zeroconf: only when used)

    try:
        return resolve_interfaces([part for part in text.split(",") if part.strip()])
    except ValueError as exc:
        raise CliError(f"--interfaces: {exc}") from None


def _where(args: argparse.Namespace) -> str:
    return f"session {args.session!r} of {args.app!r}"


def _default_name() -> str:
    name = f"cli-{socket.gethostname()}-{os.getpid()}"
    return name.encode()[:_MAX_NAME_BYTES].decode(errors="ignore")


def _secret(args: argparse.Namespace) -> dict[str, str]:
    """join()'s secret option, from --secret or $P2PSTATE_SECRET."""
    if args.secret == "":
        raise CliError("--secret must not be empty")
    secret: str | None = args.secret if args.secret is not None else os.environ.get(ENV_SECRET)
    if secret == "":
        # Set but empty: a user who meant to secure the session must not get
        # an open one without a word (join(secret="") is refused the same way).
        raise CliError(
            f"${ENV_SECRET} is set but empty: give the session's secret, "
            f"or unset {ENV_SECRET} for a session without one"
        )
    return {} if secret is None else {"secret": secret}


def find_session(args: argparse.Namespace) -> SessionInfo | None:
    """The host of the chosen session, if one answers within ``--timeout``."""
    found = browse(
        args.app,
        args.timeout,
        session=args.session,
        limit=1,
        interfaces=_interfaces(args),
    )
    return found[0] if found else None


def connect(args: argparse.Namespace) -> SharedState:
    """Join the chosen session, which must exist: join() alone would host it."""
    if find_session(args) is None:
        raise CliError(
            f"no {_where(args)} on the LAN (looked for {args.timeout:g} s). "
            f"Start one with: {PROG} host {shlex.quote(args.app)}"
            + ("" if args.session == DEFAULT_SESSION else f" --session {shlex.quote(args.session)}")
        )
    s = join(
        args.app,
        args.session,
        name=args.name or _default_name(),
        timeout=JOIN_TIMEOUT,
        interfaces=_interfaces(args),
        identity_dir=getattr(args, "identity_dir", None),
        **_secret(args),
    )
    if s.is_host:  # the host left between our look and our join
        s.close()
        raise CliError(f"the {_where(args)} ended before we could join it")
    return s


# =============================================================================
# One-shot tools
# =============================================================================


def cmd_get(args: argparse.Namespace) -> int:
    with connect(args) as s:
        try:
            value = s[args.key]
        except KeyError:
            raise CliError(f"no key {args.key!r} in the {_where(args)}") from None
    _out(format_value(value))
    return 0


def cmd_set(args: argparse.Namespace) -> int:
    # Checked before joining: a key or value no peer can hold (a name decoded
    # with surrogateescape, "\\ud800" in JSON, an int past 64 bits) fails now.
    key, value = check_key(args.key), normalize(parse_value(args.value))
    with connect(args) as s:
        s[key] = value  # returns once the host and its successor hold it
    return 0


def cmd_del(args: argparse.Namespace) -> int:
    check_key(args.key)
    with connect(args) as s:
        try:
            del s[args.key]
        except KeyError:
            raise CliError(f"no key {args.key!r} in the {_where(args)}") from None
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    with connect(args) as s:
        keys = sorted(s)
    for key in keys:
        _out(key)
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    with connect(args) as s:
        count = s.backup(args.file)
    print(f"wrote {count} keys of the {_where(args)} to {args.file}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    read_backup(args.file, app=args.app)  # a bad file fails here, before we join
    with connect(args) as s:
        count = s.restore(args.file)
    print(f"restored {count} keys from {args.file} into the {_where(args)}")
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    with connect(args) as s:
        wake = threading.Event()
        s.on_change(lambda _event: wake.set())
        if args.initial:
            for key in sorted(s):
                with contextlib.suppress(KeyError):
                    _out(f"set {format_key(key)} {format_value(s[key])}", flush=True)
        host = s.host.name if s.host is not None else "nobody"
        _status(f"watching the {_where(args)} (host: {host}); Ctrl-C to stop")
        try:
            _watch_loop(s, wake, sys.stdout)
        except KeyboardInterrupt:
            return 0
    raise CliError(f"lost the {_where(args)}")


def _watch_loop(s: SharedState, wake: threading.Event, out: IO[str]) -> None:
    """Print every event as it comes, until Ctrl-C or the state closes."""
    while not s.closed:
        wake.wait(0.5)  # a timeout, so that Ctrl-C is seen on every platform
        wake.clear()
        for event in s.poll():
            out.write(terminal_safe(describe(event)) + "\n")
        out.flush()


def _status(text: str) -> None:
    _out(text, file=sys.stderr, flush=True)


# =============================================================================
# The lobby
# =============================================================================


def _players(info: SessionInfo) -> str:
    return str(info.players) if info.max_players is None else f"{info.players}/{info.max_players}"


def _status_word(info: SessionInfo) -> str:
    word = "open" if info.has_room else "closed" if not info.joinable else "full"
    return word + (", secured" if info.secured else "")


def _access_word(info: SessionInfo) -> str:
    """Who may read and write, for the table: "-" (anyone), else e.g.
    "read:authorized,write:admin" (the modes without "_only")."""
    parts = [
        f"{what}:{mode.removesuffix('_only')}"
        for what, mode in (("read", info.readmode), ("write", info.writemode))
        if mode != "any"
    ]
    return ",".join(parts) or "-"


def session_table(sessions: Sequence[SessionInfo], width: int = 100) -> list[str]:
    """The lobby's table, one line per session, at most *width* columns wide
    (the metadata column is cut to fit)."""
    header = (
        "APP",
        "SESSION",
        "HOST",
        "PLAYERS",
        "STATUS",
        "ACCESS",
        "VERSION",
        "ENDPOINT",
        "METADATA",
    )
    rows: list[tuple[str, ...]] = [header]
    for info in sessions:
        meta = " ".join(f"{k}={v}" for k, v in sorted(info.metadata.items()))
        # Every cell came from an unauthenticated mDNS advert; escaped
        # before the widths are measured, so the columns still line up.
        cells = (
            info.app,
            info.session,
            info.host_name,
            _players(info),
            _status_word(info),
            _access_word(info),
            info.version if info.version is not None else "-",
            info.endpoint,
            meta or "-",
        )
        rows.append(tuple(terminal_safe(cell) for cell in cells))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = []
    for row in rows:
        line = (
            "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True))
            + "  "
            + row[-1]
        )
        if len(line) > width:
            line = line[: max(0, width - 1)] + "…"
        lines.append(line.rstrip())
    return lines


def _pairs(items: Sequence[str], option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"{option} expects KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def _lobby_filters(args: argparse.Namespace) -> dict[str, Any]:
    filters: dict[str, Any] = {"session": args.session, "open_slots": args.open}
    for key, value in _pairs(args.meta, "--meta").items():
        if key in {f.name for f in dataclasses.fields(SessionInfo)}:
            raise CliError(f"--meta {key}={value}: {key!r} is a column of the table, not metadata")
        filters[key] = value
    return filters


def _session_json(info: SessionInfo) -> dict[str, Any]:
    data = dataclasses.asdict(info)
    data["endpoints"] = list(info.endpoints)
    return data


def cmd_lobby(args: argparse.Namespace) -> int:
    what = f"app {args.app!r}" if args.app else "every app"
    filters = _lobby_filters(args)
    interfaces = _interfaces(args)
    if args.once:
        sessions = browse(args.app, args.timeout, interfaces=interfaces, **filters)
        if args.json:
            _out(json.dumps([_session_json(i) for i in sessions], ensure_ascii=False))
        elif sessions:
            print("\n".join(session_table(sessions, _width())))  # cells escaped there
        else:
            print(f"no sessions of {what} on the LAN (looked for {args.timeout:g} s)")
        return 0
    lobby = Lobby(args.app, interfaces=interfaces, **filters)
    wake = threading.Event()
    lobby.on_change(lambda _event: wake.set())
    tty = sys.stdout.isatty()
    with lobby:
        try:
            if args.json:
                _lobby_json_loop(lobby, wake)
            else:
                _lobby_table_loop(lobby, wake, what, tty=tty)
        except KeyboardInterrupt:
            if tty and not args.json:
                print()
            return 0
    return 0


def _lobby_json_loop(lobby: Lobby, wake: threading.Event) -> None:
    kinds: dict[type[Any], str] = {
        SessionAppeared: "appeared",
        SessionChanged: "changed",
        SessionVanished: "vanished",
    }
    while True:
        wake.wait(0.5)
        wake.clear()
        for event in lobby.poll():
            info = event.new if isinstance(event, SessionChanged) else event.info
            line = {"event": kinds[type(event)], "session": _session_json(info)}
            _out(json.dumps(line, ensure_ascii=False), flush=True)


def _lobby_table_loop(lobby: Lobby, wake: threading.Event, what: str, *, tty: bool) -> None:
    first = True
    while True:
        # Redraw on a change; on a terminal also every few seconds, for the clock.
        wake.wait(0.5 if first else 5.0 if tty else 3600.0)
        wake.clear()
        events = lobby.poll()
        if not (first or events or tty):
            continue
        first = False
        sessions = lobby.sessions
        stamp = time.strftime("%H:%M:%S")
        lines = [terminal_safe(f"LAN sessions of {what} at {stamp} (Ctrl-C to quit)"), ""]
        lines += session_table(sessions, _width()) if sessions else ["(no sessions found yet)"]
        if tty:
            sys.stdout.write(_CLEAR_SCREEN + "\n".join(lines) + "\n")
        else:
            sys.stdout.write("\n".join(lines) + "\n\n")
        sys.stdout.flush()


def _width() -> int:
    return max(40, shutil.get_terminal_size((120, 24)).columns)


# =============================================================================
# The interactive shell
# =============================================================================


def _split_key(line: str) -> tuple[str, str]:
    """The key at the start of *line* and the rest. A key with spaces is
    quoted: "JSON style" (as ``watch`` prints it) or 'single quotes'."""
    line = line.strip()
    if not line:
        raise ValueError("a key is needed")
    if line[0] == '"':
        try:
            key, end = json.JSONDecoder().raw_decode(line)
        except ValueError:
            raise ValueError("unfinished quoted key") from None
        if not isinstance(key, str):
            raise ValueError("a key is a string")
        return key, line[end:].strip()
    if line[0] == "'":
        end = line.find("'", 1)
        if end < 0:
            raise ValueError("unfinished quoted key")
        return line[1:end], line[end + 1 :].strip()
    parts = line.split(None, 1)
    return parts[0], parts[1].strip() if len(parts) > 1 else ""


class Shell(cmd.Cmd):
    """Commands typed at ``p2pstate host`` and ``p2pstate join``. Each ``do_NAME``
    is one command; its docstring is its help."""

    doc_header = "Commands (help NAME for more):"
    ruler = ""

    def __init__(self, s: SharedState, *, stdin: TextIO, stdout: TextIO, interactive: bool) -> None:
        super().__init__(stdin=stdin, stdout=stdout)
        self.s = s
        self.interactive = interactive
        self.use_rawinput = stdin is sys.stdin
        self._wake = threading.Event()
        s.on_change(lambda _event: self._wake.set())
        self._update_prompt()

    # ------------------------------------------------------------ plumbing

    def say(self, text: str) -> None:  # not a command: commands are do_*
        self.stdout.write(terminal_safe(text) + "\n")
        self.stdout.flush()

    def _update_prompt(self) -> None:
        if not self.interactive:
            self.prompt = ""
            return
        role = "host" if self.s.is_host else "peer"
        self.prompt = f"{self.s.app}/{self.s.session} ({role})> "

    def _notices(self) -> None:
        """What happened to the session since the last command (key changes aside)."""
        for event in self.s.poll():
            if not isinstance(event, (KeyChanged, KeyDeleted)):
                self.say(describe(event))

    def precmd(self, line: str) -> str:
        self._notices()
        return line

    def postcmd(self, stop: bool, line: str) -> bool:
        if self.s.closed:
            self.say("# the session is closed")
            return True
        self._update_prompt()
        return stop

    def onecmd(self, line: str) -> bool:
        try:
            return super().onecmd(line)
        except KeyError as exc:
            self.say(f"error: no key {exc.args[0]!r}")
        except (P2PStateError, ValueError, TypeError) as exc:
            self.say(f"error: {exc}")
        return False

    def emptyline(self) -> bool:
        return False  # cmd's default repeats the last command

    def default(self, line: str) -> None:
        self.say(f"error: unknown command {line.split(maxsplit=1)[0]!r} (type help)")

    def completenames(self, text: str, *ignored: Any) -> list[str]:
        return [name for name in super().completenames(text, *ignored) if name != "EOF"]

    def _keys_starting(self, text: str) -> list[str]:
        return sorted(k for k in self.s if k.startswith(text))

    def complete_get(self, text: str, *_: Any) -> list[str]:
        return self._keys_starting(text)

    complete_set = complete_get
    complete_del = complete_get

    # ------------------------------------------------------------ commands

    def do_get(self, arg: str) -> bool:
        """get KEY: print KEY's value, as JSON."""
        key, rest = _split_key(arg)
        if rest:
            raise ValueError("usage: get KEY (quote a key that has spaces)")
        self.say(format_value(self.s[key]))
        return False

    def do_set(self, arg: str) -> bool:
        """set KEY VALUE: write KEY. VALUE is the rest of the line: JSON if it
        parses (3, [1, 2], {"a": 1}, "3", null), else that text as a string."""
        key, rest = _split_key(arg)
        if not rest:
            raise ValueError('usage: set KEY VALUE (for an empty string: set KEY "")')
        self.s[key] = parse_value(rest)
        return False

    def do_del(self, arg: str) -> bool:
        """del KEY: delete KEY."""
        key, rest = _split_key(arg)
        if rest:
            raise ValueError("usage: del KEY (quote a key that has spaces)")
        del self.s[key]
        return False

    def do_keys(self, arg: str) -> bool:
        """keys: list the keys, sorted."""
        for key in sorted(self.s):
            self.say(format_key(key))
        return False

    def do_peers(self, arg: str) -> bool:
        """peers: list the members of the session, in succession order."""
        me = self.s.me.id
        peers = self.s.peers
        width = max((len(p.name) for p in peers), default=0)
        for peer in peers:
            tags = [t for t, on in (("host", peer.is_host), ("you", peer.id == me)) if on]
            label = f"({', '.join(tags)})" if tags else ""
            self.say(f"{peer.name.ljust(width)}  {label:<12} {peer.endpoint}".rstrip())
        return False

    def do_info(self, arg: str) -> bool:
        """info: this session: app, session, your role, host, epoch, sizes."""
        s = self.s
        host = s.host.name if s.host is not None else "nobody"
        role = "host" if s.is_host else "peer"
        self.say(
            f"app {s.app!r}, session {s.session!r}; you are {s.me.name!r} ({role}); "
            f"host {host}, epoch {s.epoch}; {len(s.peers)} peer(s), {len(s)} key(s)"
        )
        settings = {
            key: value
            for key, value in s.session_info.items()
            if value not in (None, {}) and not (key == "joinable" and value is True)
        }
        if settings:
            shown = ", ".join(f"{k}={format_value(v)}" for k, v in sorted(settings.items()))
            self.say(f"settings: {shown}")
        return False

    def do_say(self, arg: str) -> bool:
        """say TEXT: send TEXT to every other peer (a message, not state)."""
        if not arg.strip():
            raise ValueError("usage: say TEXT")
        self.s.broadcast(arg.strip())
        return False

    def do_watch(self, arg: str) -> bool:
        """watch: print every change as it happens, until Ctrl-C."""
        self.s.poll()  # what came before is not news (precmd already told it)
        self._wake.clear()
        self.say("# watching; Ctrl-C to stop")
        try:
            _watch_loop(self.s, self._wake, self.stdout)
        except KeyboardInterrupt:
            self.say("")
        return False

    def do_quit(self, arg: str) -> bool:
        """quit: leave the session (a host hands it to the next peer). Also exit, Ctrl-D."""
        return True

    do_exit = do_quit

    def do_EOF(self, arg: str) -> bool:  # noqa: N802 (cmd's name for Ctrl-D)
        """Ctrl-D: leave the session."""
        if self.interactive:
            self.say("")
        return True


def run_shell(s: SharedState, *, stdin: TextIO, stdout: TextIO) -> None:
    interactive = stdin.isatty()
    if interactive and stdin is sys.stdin:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401, PLC0415 (line editing and history for input())
    shell = Shell(s, stdin=stdin, stdout=stdout, interactive=interactive)
    while True:
        try:
            shell.cmdloop()
            return
        except KeyboardInterrupt:
            shell.say("")
            if not interactive:
                return


def _banner(s: SharedState, args: argparse.Namespace, verb: str) -> None:
    host = s.host
    where = f"session {s.session!r} of {s.app!r}"
    if s.is_host:
        endpoint = host.endpoint if host is not None else "?"
        _status(f"{verb} {where} at {endpoint} (epoch {s.epoch}) as {s.me.name!r}.")
    else:
        name = host.name if host is not None else "nobody"
        _status(f"joined {where}, hosted by {name}, as {s.me.name!r}.")
    _status("Type help for the commands, quit (or Ctrl-D) to leave.")


def cmd_host(args: argparse.Namespace) -> int:
    found = find_session(args)
    if found is not None:
        raise CliError(
            f"the {_where(args)} already exists (host {found.host_name} at {found.endpoint}). "
            f"Join it with: {PROG} join {shlex.quote(args.app)}"
            + ("" if args.session == DEFAULT_SESSION else f" --session {shlex.quote(args.session)}")
        )
    settings: dict[str, Any] = {"metadata": _pairs(args.meta, "--meta")}
    if args.max_players is not None:
        settings["max_players"] = args.max_players
    with join(
        args.app,
        args.session,
        name=args.name or _default_name(),
        timeout=JOIN_TIMEOUT,
        interfaces=_interfaces(args),
        **settings,
        **_secret(args),
    ) as s:
        # Another copy may have started it at the same instant: then we joined it.
        _banner(s, args, "hosting")
        run_shell(s, stdin=sys.stdin, stdout=sys.stdout)
    return 0


def cmd_join(args: argparse.Namespace) -> int:
    with connect(args) as s:
        _banner(s, args, "joined")
        run_shell(s, stdin=sys.stdin, stdout=sys.stdout)
    return 0


# =============================================================================
# The identity
# =============================================================================


def cmd_id(args: argparse.Namespace) -> int:
    from .identity import load_identity  # noqa: PLC0415 (zmq: only when used)

    identity = load_identity(args.identity_dir)
    print(f"identity:   {identity.fingerprint}")
    print(f"public key: {identity.public_key.decode()}")
    print(f"file:       {identity.path}")
    return 0


# =============================================================================
# Permissions: ban, unban, authorize, unauthorize, access
# =============================================================================


def cmd_acl(args: argparse.Namespace) -> int:
    """ban/unban/authorize/unauthorize ID, as this installation's identity."""
    action: str = args.command
    from .identity import is_fingerprint  # noqa: PLC0415 (zmq: only when used)

    identity = identity_of(args.id)
    # A typo must not ban or authorize nobody in particular and look done.
    if not is_fingerprint(identity):
        raise CliError(
            f"{args.id!r} is not a peer id (IDENTITY.INSTANCE) or an identity (16 hex "
            f"digits: see '{PROG} access' and '{PROG} id')"
        )
    with connect(args) as s:
        me = identity_of(s.me.id)
        if me != s.admin:
            raise CliError(
                f"only the admin of the {_where(args)} may {action}: that is identity "
                f"{s.admin}, this installation is {me} (run this on the admin's machine, "
                "or give its --identity-dir)"
            )
        getattr(s, action)(args.id)
    done = {"ban": "banned", "unban": "unbanned"}.get(action, action + "d")
    print(f"{done} {identity} in the {_where(args)}")
    return 0


def access_report(s: SharedState) -> dict[str, Any]:
    """Who may do what in the session: what ``p2pstate access`` prints."""
    return {
        "admin": s.admin,
        "readmode": s.readmode,
        "writemode": s.writemode,
        **s.limits,
        "authorized": sorted(s.authorized),
        "banned": sorted(s.banned),
    }


def cmd_access(args: argparse.Namespace) -> int:
    with connect(args) as s:
        report = access_report(s)
    if args.json:
        print(json.dumps(report))  # ensure_ascii: every control character escaped
        return 0
    for name, value in report.items():
        _out(f"{name + ':':<16} {_access_cell(value)}")
    return 0


def _access_cell(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(value) if value else "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# =============================================================================
# The demo
# =============================================================================


def cmd_demo(args: argparse.Namespace) -> int:
    from . import _demo  # noqa: PLC0415 (multiprocessing and friends: only when used)

    return _demo.run(fast=args.fast, interfaces=_interfaces(args))


# =============================================================================
# The parser
# =============================================================================


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


_Add = Callable[..., argparse.ArgumentParser]


def _net_parent() -> argparse.ArgumentParser:
    """Flags of every command that touches the network."""
    net = argparse.ArgumentParser(add_help=False)
    net.add_argument(
        "--interfaces",
        metavar="ADDRS",
        help="comma-separated IPv4 addresses to use (default: $P2PSTATE_INTERFACES, "
        "else every usable one)",
    )
    _add_verbose(net)
    return net


def _add_verbose(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more (-vv: debug) on stderr"
    )


def _app_parent() -> argparse.ArgumentParser:
    """Flags of every command that joins one session of an app."""
    app = argparse.ArgumentParser(add_help=False)
    app.add_argument("app", metavar="APP", help="the application's name, as passed to join()")
    app.add_argument(
        "--session",
        metavar="NAME",
        default=DEFAULT_SESSION,
        help=f"the session of APP (default: {DEFAULT_SESSION!r})",
    )
    app.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_positive,
        default=DEFAULT_FIND_TIMEOUT,
        help=f"how long to look for the session (default: {DEFAULT_FIND_TIMEOUT:g})",
    )
    app.add_argument(
        "--name", metavar="NAME", help="your name in the session (default: cli-HOST-PID)"
    )
    app.add_argument(
        "--secret",
        metavar="SECRET",
        help=f"the session's secret, if it is secured (default: ${ENV_SECRET}; "
        "prefer it: a command line is visible to other users)",
    )
    return app


def _identity_parent() -> argparse.ArgumentParser:
    ident = argparse.ArgumentParser(add_help=False)
    ident.add_argument(
        "--identity-dir",
        metavar="DIR",
        help="the installation whose identity to act as (default: $P2PSTATE_HOME, else "
        "the user's config directory); the admin's, to change permissions",
    )
    return ident


def _add_lobby(add: _Add, net: argparse.ArgumentParser) -> None:
    p = add(
        "lobby",
        cmd_lobby,
        "a live table of the sessions on the LAN",
        parents=[net],
        description="Show the sessions on the LAN (of APP, or of every app) as they "
        "appear, change and vanish. --once prints the table once and exits.",
    )
    p.add_argument("app", metavar="APP", nargs="?", help="only this application's sessions")
    p.add_argument("--session", metavar="NAME", help="only the session of this name")
    p.add_argument("--open", action="store_true", help="only sessions with room to join")
    p.add_argument(
        "--meta",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="only sessions whose metadata has KEY=VALUE (repeatable)",
    )
    p.add_argument("--once", action="store_true", help="print the table once and exit")
    p.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_positive,
        default=DEFAULT_LOBBY_TIMEOUT,
        help=f"with --once: how long to listen (default: {DEFAULT_LOBBY_TIMEOUT:g})",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="JSON: with --once a list of sessions, else one line per event",
    )


def _add_key_tools(add: _Add, parents: list[argparse.ArgumentParser]) -> None:
    """get, set, del and keys."""
    p = add(
        "get",
        cmd_get,
        "print the value of KEY (as JSON)",
        parents=parents,
        epilog="Fails (exit status 1) if the session or the key does not exist.",
    )
    p.add_argument("key", metavar="KEY", help="the key")
    p = add(
        "set",
        cmd_set,
        "write KEY",
        parents=parents,
        description="Write KEY in an existing session. Returns once the write is "
        "acknowledged (held by the host and its successor).",
        epilog="VALUE is read as JSON if it parses (3, true, null, '[1, 2]', '\"3\"'), "
        "else taken as a string: p2pstate set mygame motd 'hello all'.",
    )
    p.add_argument("key", metavar="KEY", help="the key (any text)")
    p.add_argument("value", metavar="VALUE", help="the value: JSON, or else a string")
    p = add("del", cmd_del, "delete KEY", parents=parents)
    p.add_argument("key", metavar="KEY", help="the key")
    add("keys", cmd_keys, "list the keys, sorted", parents=parents)


def _add_backup_tools(add: _Add, parents: list[argparse.ArgumentParser]) -> None:
    """backup and restore."""
    p = add(
        "backup",
        cmd_backup,
        "write the session's keys to a backup file",
        parents=parents,
        description="Join the session and write its lasting keys (not ephemeral ones) to "
        "FILE, a versioned p2pstate backup, whole or not at all.",
    )
    p.add_argument("file", metavar="FILE", help="the backup file to write (replaced if it exists)")
    p = add(
        "restore",
        cmd_restore,
        "replace the session's keys by a backup's",
        parents=parents,
        description="Check FILE, join the session and replace its lasting keys by the "
        "backup's as one change every peer sees (the players' ephemeral keys stay). "
        "Administrators only where the session sets permissions.",
        epilog="A corrupt, truncated or foreign file, or a backup of another app, fails "
        "(exit status 1) and changes nothing.",
    )
    p.add_argument("file", metavar="FILE", help="a backup written by 'p2pstate backup'")


def _add_shells(add: _Add, parents: list[argparse.ArgumentParser]) -> None:
    """watch, host and join."""
    p = add(
        "watch",
        cmd_watch,
        "print changes as they happen",
        parents=parents,
        description="Join the session and print each change as it happens, until Ctrl-C: "
        "'set KEY VALUE' and 'del KEY' lines, and '# ...' lines for peers and hosts.",
    )
    p.add_argument("--initial", action="store_true", help="first print every key's value")
    p = add(
        "host",
        cmd_host,
        "start a session and type commands in it",
        parents=parents,
        description="Start the session and open a shell in it (get, set, del, keys, peers, "
        "info, watch, quit). Fails if the session already exists: use join.",
    )
    p.add_argument(
        "--max-players", metavar="N", type=int, help="at most N players (default: no limit)"
    )
    p.add_argument(
        "--meta",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="metadata shown in the lobby, e.g. --meta map=dust (repeatable)",
    )
    add(
        "join",
        cmd_join,
        "join a session and type commands in it",
        parents=parents,
        description="Join an existing session and open a shell in it (get, set, del, keys, "
        "peers, info, watch, quit). Fails if nobody hosts it: use host.",
    )


def _add_access_tools(add: _Add, parents: list[argparse.ArgumentParser]) -> None:
    """ban, unban, authorize, unauthorize and access."""
    acl_help = {
        "ban": "ban a player's identity: its peers leave at once and are refused after",
        "unban": "lift a ban",
        "authorize": "let an identity in where a mode is authorized_only",
        "unauthorize": "take an authorization back",
    }
    for action, summary in acl_help.items():
        p = add(
            action,
            cmd_acl,
            summary,
            parents=parents,
            description=f"Join the session as this installation's identity and {action} ID. "
            "Only the session's admin (the identity that created it) may.",
            epilog="Fails (exit status 1) if this installation is not the admin.",
        )
        p.add_argument("id", metavar="ID", help="a peer id (see 'info' in join) or an identity")
    p = add(
        "access",
        cmd_access,
        "show who may read and write the session, and its limits",
        parents=parents,
        description="Print the session's admin, readmode and writemode, limits, and its "
        "authorized and banned identities.",
    )
    p.add_argument("--json", action="store_true", help="one JSON object")


def _add_demo_and_id(add: _Add, net: argparse.ArgumentParser) -> None:
    p = add(
        "demo",
        cmd_demo,
        "a guided tour: local peers, a kill -9 of the host, failover",
        parents=[net],
        description="Start three peers on this machine (on 127.0.0.1 unless --interfaces "
        "or $P2PSTATE_INTERFACES says otherwise), write, kill the host with SIGKILL, "
        "and show the session carrying on.",
    )
    p.add_argument("--fast", action="store_true", help="no pauses")
    p = add(
        "id",
        cmd_id,
        "show this installation's identity",
        description="Print this installation's identity (peer ids start with it), its "
        "public key and the file that holds its keypair, making one on first use.",
    )
    p.add_argument(
        "--identity-dir",
        metavar="DIR",
        help="where the identity is kept (default: $P2PSTATE_HOME, else the user's "
        "config directory)",
    )
    _add_verbose(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="p2pstate: a shared dict for the copies of a program on one LAN. "
        "See the sessions on the LAN, read and write them, or run the demo.",
        epilog=f"Start with '{PROG} demo'. Each command has --help.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(
        name: str, handler: Callable[[argparse.Namespace], int], summary: str, **kw: Any
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=summary, description=kw.pop("description", summary), **kw)
        p.set_defaults(handler=handler)
        return p

    net, app = _net_parent(), _app_parent()
    # In the order `p2pstate --help` lists them.
    _add_lobby(add, net)
    _add_key_tools(add, [app, net])
    _add_backup_tools(add, [app, net])
    _add_shells(add, [app, net])
    _add_access_tools(add, [app, _identity_parent(), net])
    _add_demo_and_id(add, net)
    return parser


# =============================================================================
# main
# =============================================================================


@contextlib.contextmanager
def _sigterm_exits() -> Iterator[None]:
    """SIGTERM leaves like Ctrl-C does (the session is closed, a host hands over)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the p2pstate command; return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    levels = (logging.WARNING, logging.INFO, logging.DEBUG)
    log_handler = logging.StreamHandler()
    log_handler.setFormatter(_SafeFormatter("%(name)s: %(levelname)s: %(message)s"))
    logging.basicConfig(  # does nothing if the caller set logging up already
        level=levels[min(args.verbose, 2)], handlers=[log_handler]
    )
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        with _sigterm_exits():
            return handler(args)
    # An error may quote what a peer sent (a reason, a key, a host's name).
    except CliError as exc:
        _out(f"{PROG} {args.command}: {exc}", file=sys.stderr)
        return 1
    except P2PStateError as exc:
        _out(f"{PROG} {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except (KeyError, ValueError, TypeError) as exc:  # a bad key; a value msgpack cannot carry
        log.debug("%s failed", args.command, exc_info=True)
        _out(f"{PROG} {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
