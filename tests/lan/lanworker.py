"""A p2pstate peer in a network namespace, driven by JSON lines on stdin.

Run as ``ip netns exec NS python lanworker.py APP SESSION OPTIONS_JSON`` with
``P2PSTATE_INTERFACES`` set to the namespace's own address. Each command line
gets exactly one JSON reply line on stdout; library logs go to stderr.

A *stream* is a background writer: one blocking write of a new key at a time
(``<prefix><n>``), keeping the keys the library acknowledged. A *counter*
is another: ``apply_op`` increments of one key, back to back, counting the
calls that returned and those that raised (by error type), with the time of
each acknowledgement. Every ``WritesRolledBack`` and ``WritesRestored`` event
is kept (``Reports``), to compare with what went missing.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections import Counter as Tally
from typing import Any

import p2pstate

log = logging.getLogger("lanworker")


class Stream:
    def __init__(self, s: p2pstate.SharedState, prefix: str, interval: float) -> None:
        self.acked: list[str] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(s, prefix, interval), name="stream", daemon=True
        )
        self._thread.start()

    def _run(self, s: p2pstate.SharedState, prefix: str, interval: float) -> None:
        n = 0
        while not self._stop.is_set():
            key = f"{prefix}{n}"
            try:
                s[key] = n
            except p2pstate.P2PStateError as exc:
                self.errors.append(f"{key}: {type(exc).__name__}: {exc}")
            else:
                self.acked.append(key)
            n += 1
            self._stop.wait(interval)

    def stop(self, timeout: float) -> bool:
        self._stop.set()
        self._thread.join(timeout)
        return not self._thread.is_alive()


class Counter:
    """``apply_op(key, n + 1)`` back to back in a thread until stopped. Keeps
    (start, end, host id) of every call that returned: the increments the
    library acknowledged, and when."""

    def __init__(self, s: p2pstate.SharedState, key: str, interval: float) -> None:
        self.acks: list[tuple[float, float, str | None]] = []
        self.errors: Tally[str] = Tally()
        self.samples: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(s, key, interval), name="counter", daemon=True
        )
        self._thread.start()

    def _run(self, s: p2pstate.SharedState, key: str, interval: float) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            try:
                s.apply_op(key, lambda n: n + 1)
            except Exception as exc:  # noqa: BLE001  (every failure is counted, by type)
                self.errors[type(exc).__name__] += 1
                if len(self.samples) < 5:
                    self.samples.append(f"{type(exc).__name__}: {exc}")
            else:
                host = s.host
                self.acks.append((start, time.monotonic(), host.id if host else None))
            if interval:
                self._stop.wait(interval)

    def stop(self, timeout: float) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(timeout)
        return {
            "stopped": not self._thread.is_alive(),
            "ok": len(self.acks),
            "errors": dict(self.errors),
            "samples": self.samples,
        }

    def first_ack(self, after: float, *, fresh: bool, old_host: str | None) -> float | None:
        """When the first call acknowledged after *after* (and started after it,
        if *fresh*; by a host other than *old_host*, if given) returned."""
        for start, end, host in list(self.acks):
            if end <= after or (fresh and start <= after):
                continue
            if old_host is None or host != old_host:
                return end
        return None


class Reports:
    """What this peer was told of undone writes: those reported rolled back
    and not restored since (``rolled``, with detail), its own reported by
    number only (``more``, less those back since), and its own writes a host
    declined that a merge showed applied after all (``applied``: apply_op
    tried each again, so the count holds one more increment than the calls
    that returned)."""

    def __init__(self) -> None:
        self.rolled: list[dict[str, Any]] = []
        self.more = 0
        self.applied: list[list[str]] = []  # the keys of each

    def rolled_back(self, event: p2pstate.WritesRolledBack) -> None:
        mine = set(event.mine)
        self.rolled.extend(
            {"writer": w.writer, "request": w.request, "keys": list(w.keys), "mine": w in mine}
            for w in event.writes
        )
        self.more += event.more

    def restored(self, event: p2pstate.WritesRestored) -> None:
        back = {(w.writer, w.request) for w in event.writes}
        reported = {(r["writer"], r["request"]) for r in self.rolled}
        # never reported undone: a write declined, then applied after all
        self.applied += [list(w.keys) for w in event.mine if (w.writer, w.request) not in reported]
        self.rolled[:] = [r for r in self.rolled if (r["writer"], r["request"]) not in back]
        self.more -= event.more

    def summary(self, key: str) -> dict[str, int]:
        """How many writes reported rolled back (and not restored since)
        touch *key*: all, and this peer's own; how many of its own were
        reported by number only (their keys are not known); and how many of
        its own declined writes touching *key* were applied after all."""
        touching = [r for r in self.rolled if key in r["keys"]]
        return {
            "all": len(touching),
            "mine": sum(1 for r in touching if r["mine"]),
            "more": self.more,
            "applied": sum(1 for keys in self.applied if key in keys),
        }


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    app, session = sys.argv[1], sys.argv[2]
    options: dict[str, Any] = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    name = options.pop("name", f"lan{os.getpid()}")
    s = p2pstate.join(app, session, name=name, timeout=15.0, **options)
    reports = Reports()
    hosts: list[dict[str, Any]] = []

    def on_event(event: p2pstate.Event) -> None:
        if isinstance(event, p2pstate.WritesRolledBack):
            mine = set(event.mine)
            # in the worker's log, to line up with the other workers' afterwards
            log.warning(
                "%.3f rolled back: %s",
                time.monotonic(),
                [(w.writer[:6], w.request, w.keys, w in mine) for w in event.writes],
            )
            reports.rolled_back(event)
        elif isinstance(event, p2pstate.WritesRestored):
            back = sorted((w.writer, w.request) for w in event.writes)
            log.warning("%.3f restored: %s", time.monotonic(), back)
            reports.restored(event)
        elif isinstance(event, p2pstate.HostChanged):
            hosts.append({"new": event.new.id, "epoch": event.epoch})
            log.warning("%.3f host %s epoch %d", time.monotonic(), event.new.id[:6], event.epoch)
        elif isinstance(event, p2pstate.IsolationChanged):
            log.warning("%.3f isolated %s", time.monotonic(), event.isolated)

    s.on_change(on_event)
    stream: Stream | None = None
    counter: Counter | None = None

    def reply(obj: Any) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    def info() -> dict[str, Any]:
        host = s.host
        return {
            "pid": os.getpid(),
            "id": s.me.id,
            "is_host": s.is_host,
            "epoch": s.epoch,
            "host": host.id if host else None,
            "peers": [p.id for p in s.peers],
            "acked": len(stream.acked) if stream else 0,
            "counted": len(counter.acks) if counter else 0,
        }

    reply({"ready": True, **info()})
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        try:
            if op == "info":
                reply(info())
            elif op == "set":
                s[cmd["key"]] = cmd["value"]
                reply({"ok": True})
            elif op == "dump":
                reply({"state": dict(s.items())})
            elif op == "stream":
                stream = Stream(s, cmd["prefix"], cmd.get("interval", 0.01))
                reply({"started": True})
            elif op == "stop_stream":
                assert stream is not None
                stopped = stream.stop(cmd.get("timeout", 15.0))
                reply({"stopped": stopped, "acked": stream.acked, "errors": stream.errors})
            elif op == "count":
                counter = Counter(s, cmd["key"], cmd.get("interval", 0.0))
                reply({"started": True, "at": time.monotonic()})
            elif op == "stop_count":
                assert counter is not None
                reply(counter.stop(cmd.get("timeout", 15.0)))
            elif op == "first_ack":
                assert counter is not None
                at = counter.first_ack(
                    cmd["after"], fresh=cmd.get("fresh", False), old_host=cmd.get("old_host")
                )
                reply({"at": at})
            elif op == "rollbacks":
                reply(reports.summary(cmd["key"]))
            elif op == "hosts":
                reply({"hosts": hosts})
            elif op == "events":
                reply({"rolled": reports.rolled, "hosts": hosts, "stats": s.stats})
            elif op == "close":
                s.close()
                reply({"closed": True})
                return
            else:
                reply({"error": f"unknown op {op}"})
        except p2pstate.P2PStateError as exc:
            reply({"error": f"{type(exc).__name__}: {exc}"})


if __name__ == "__main__":
    main()
