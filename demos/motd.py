"""Message of the day: one shared line of text that every copy shows.

Start a few readers (in several terminals, or on several machines of the LAN):

    python demos/motd.py                     # show the message, and again on every change

then, from anywhere, change it for all of them:

    python demos/motd.py --set "Server maintenance at 18:00"

There is no server: the readers share the message between themselves. It lives
as long as at least one copy of the program is running.
"""

from __future__ import annotations

import argparse
import sys
import threading

import p2pstate

APP = "p2pstate-demo-motd"  # every copy of this program uses the same app name...
KEY = "motd"  # ...and keeps the message under this key of the shared dict


def show_if_changed(s: p2pstate.SharedState, shown: str) -> str:
    """Print the message unless it is the one already shown (whose hash is *shown*).

    get_if_changed compares the value with the hash we pass and raises
    DataUnchangedError when they match: someone writing the same text again
    then costs us nothing. Returns the hash of what is now on screen.
    """
    try:
        text = s.get_if_changed(KEY, shown)
    except p2pstate.DataUnchangedError:
        return shown
    except KeyError:  # nobody has set a message yet
        return shown
    print(f"MOTD: {text}", flush=True)
    return p2pstate.hash_value(text)


def read(session: str) -> None:
    with p2pstate.join(APP, session) as s:
        # on_change calls us on the state's callback thread for every event
        # (never its network thread): here, just wake the main thread up.
        changed = threading.Event()

        def on_event(event: p2pstate.Event) -> None:
            if isinstance(event, (p2pstate.KeyChanged, p2pstate.KeyDeleted)) and event.key == KEY:
                changed.set()

        s.on_change(on_event)  # before the first read, so no change slips in between

        if KEY not in s:
            print("MOTD: (none yet; set one with --set)", flush=True)
        shown = show_if_changed(s, shown="")
        try:
            while True:
                changed.wait()
                changed.clear()
                shown = show_if_changed(s, shown)
        except KeyboardInterrupt:
            pass  # Ctrl-C: leaving the with-block closes the session cleanly


def set_message(session: str, text: str) -> None:
    with p2pstate.join(APP, session) as s:
        s[KEY] = text  # returns once the write is safely acknowledged
        others = len(s.peers) - 1
        if others == 0:
            print(f"MOTD set to {text!r}, but no other copy is running to keep it.")
        else:
            copies = "copy is" if others == 1 else "copies are"
            print(f"MOTD set to {text!r}; {others} other {copies} running.")


def main() -> int:
    parser = argparse.ArgumentParser(description="A shared message of the day.")
    parser.add_argument("--set", metavar="TEXT", help="set the message for everyone and exit")
    parser.add_argument("--session", default="default", help="which group of copies to join")
    args = parser.parse_args()
    if args.set is None:
        read(args.session)
    else:
        set_message(args.session, args.set)
    return 0


if __name__ == "__main__":
    sys.exit(main())
