"""A terminal lobby for a LAN game: find a room, chat, get ready, start the match.

Run it in two or three terminals (or on several machines of the LAN):

    python demos/lobby.py --name alice        # lists the rooms; type: create den
    python demos/lobby.py --name bob          # lists them too; type: join den

In a room, a line of text is chat; commands start with a slash:

    /ready  /unready   set your ready flag (kept in your profile: every peer sees it)
    /who               the players, their ready flags, and who hosts
    /start             the host starts the match once everyone is ready
    /quit              leave (a host hands the room over to the next player)

Nothing here is a server: the room is a p2pstate session. If its host leaves,
the next player takes over and can /start the match.
"""

from __future__ import annotations

import argparse
import contextlib
import queue
import sys
import threading

import p2pstate

ROOM_HELP = "type to chat; /ready /unready /who /start /quit"


def read_lines(into: queue.Queue[str | None]) -> None:
    """Feed stdin's lines to the main loop (None at end of input)."""
    for line in sys.stdin:
        into.put(line.strip())
    into.put(None)


def show_rooms(app: str, timeout: float) -> list[p2pstate.SessionInfo]:
    rooms = p2pstate.browse(app, timeout, open_slots=True)
    if not rooms:
        print(f"No open rooms of {app} on the LAN (looked for {timeout:g} s).")
    else:
        print(f"Open rooms of {app} on the LAN:")
        for info in rooms:
            slots = f"/{info.max_players}" if info.max_players is not None else ""
            state = info.metadata.get("state", "waiting")
            print(
                f"  {info.session:<16} host {info.host_name:<12} "
                f"{info.players}{slots} players  {state}"
            )
    print("Type: create NAME, join NAME, list, or quit.", flush=True)
    return rooms


def choose_room(args: argparse.Namespace, lines: queue.Queue[str | None]) -> tuple[str, str] | None:
    """Ask until the person picks a room: ("create" or "join", NAME), or None to quit."""
    if args.create:
        return "create", args.create
    if args.join:
        return "join", args.join
    rooms = show_rooms(args.app, args.session_list_timeout)
    while True:
        line = lines.get()
        if line is None or line in ("quit", "/quit"):
            return None
        verb, _, name = line.partition(" ")
        name = name.strip()
        if verb == "list":
            rooms = show_rooms(args.app, args.session_list_timeout)
        elif verb in ("create", "join") and name:
            known = {info.session for info in rooms}
            if verb == "join" and name not in known:
                found = p2pstate.browse(args.app, args.session_list_timeout, session=name, limit=1)
                if not found:
                    print(f"No room {name!r} here. Type: create {name}", flush=True)
                    continue
            return verb, name
        elif line:
            print("Type: create NAME, join NAME, list, or quit.", flush=True)


class Room:
    """One room: the session, and what the person types in it."""

    def __init__(self, s: p2pstate.SharedState) -> None:
        self.s = s
        self.my_id = s.me.id
        self.started = False

    def who(self) -> None:
        for peer in self.s.peers:
            ready = "ready" if peer.profile.get("ready") else "not ready"
            tags = [
                ready,
                *(["host"] if peer.is_host else []),
                *(["you"] if peer.id == self.my_id else []),
            ]
            print(f"  {peer.name:<12} {', '.join(tags)}")

    def start(self) -> None:
        if not self.s.is_host:
            host = self.s.host
            print(f"Only the host ({host.name if host else 'nobody yet'}) can /start.")
        elif self.started:
            print("The match has already started.")
        elif waiting := [p.name for p in self.s.peers if not p.profile.get("ready")]:
            print(f"Not everyone is ready: waiting for {', '.join(waiting)}.")
        else:
            self.s.set_session_info(joinable=False, metadata={"state": "playing"})
            self.s["match"] = "started"

    def command(self, line: str) -> bool:
        """Act on one typed line; False to leave."""
        if line == "/quit":
            return False
        if line in ("/ready", "/unready"):
            self.s.set_profile({**self.s.me.profile, "ready": line == "/ready"})
        elif line == "/who":
            self.who()
        elif line == "/start":
            self.start()
        elif line.startswith("/"):
            print(f"Unknown command {line.split(maxsplit=1)[0]}: {ROOM_HELP}")
        elif line:
            self.s.broadcast({"chat": line})
        return True

    def show(self, event: p2pstate.Event) -> None:
        match event:
            case p2pstate.Message(sender=sender, payload={"chat": str(text)}):
                print(f"<{sender.name}> {text}")
            case p2pstate.PeerJoined(peer=peer):
                print(f"* {peer.name} joined")
            case p2pstate.PeerLeft(peer=peer, reason=reason):
                print(f"* {peer.name} left" + ("" if reason == "left" else f" ({reason})"))
            case p2pstate.PeerUpdated(peer=peer):
                print(f"* {peer.name} is {'ready' if peer.profile.get('ready') else 'not ready'}")
            case p2pstate.HostChanged(old=old, new=new) if old is not None:
                if new.id == self.my_id:
                    print(f"* {new.name} is now hosting (you: /start when everyone is /ready)")
                else:
                    print(f"* {new.name} is now hosting")
            case p2pstate.KeyChanged(key="match", value="started") if not self.started:
                self.started = True
                print("MATCH STARTED")

    def run(self, lines: queue.Queue[str | None]) -> None:
        while True:
            for event in self.s.poll():
                self.show(event)
            sys.stdout.flush()
            try:
                line = lines.get(timeout=0.05)
            except queue.Empty:
                continue
            try:
                if line is None or not self.command(line):
                    return
            except p2pstate.P2PStateError as exc:
                print(f"Could not do that: {type(exc).__name__}: {exc}")


def main() -> int:
    parser = argparse.ArgumentParser(description="A terminal lobby for a LAN game.")
    parser.add_argument("--name", help="your player name (default: host-pid)")
    parser.add_argument("--app", default="lobby-demo", help="app name (default: lobby-demo)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--create", metavar="NAME", help="create room NAME at once")
    group.add_argument("--join", metavar="NAME", help="join room NAME at once")
    parser.add_argument(
        "--session-list-timeout", type=float, default=1.0, help="seconds to look for rooms"
    )
    args = parser.parse_args()

    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=read_lines, args=(lines,), name="stdin", daemon=True).start()
    try:
        choice = choose_room(args, lines)
        if choice is None:
            return 0
        verb, room = choice
        try:
            s = p2pstate.join(args.app, room, name=args.name, profile={"ready": False})
        except p2pstate.SessionFullError:
            print(f"Room {room!r} takes no one now (full, or its match has started).")
            return 1
        with s:
            if s.is_host:
                if verb == "join":
                    print(f"Room {room!r} was gone, so you host a new one.")
                s.set_session_info(metadata={"state": "waiting"})
                print(f"You created room {room!r} as {s.me.name}; you host it.")
            else:
                host = s.host.name if s.host else "?"
                print(f"You joined room {room!r} as {s.me.name}; {host} hosts.")
            print(ROOM_HELP, flush=True)
            Room(s).run(lines)
        print("You left the room.", flush=True)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
