"""A p2pstate peer in its own process, driven by JSON lines on stdin.

Each command line gets exactly one JSON reply line on stdout. Used by the
tests in this folder to run real peers in separate processes on loopback.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

import p2pstate


def main() -> None:
    app, session = sys.argv[1], sys.argv[2]
    options: dict[str, Any] = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    name = options.pop("name", f"w{os.getpid()}")
    s = p2pstate.join(app, session, name=name, timeout=10.0, **options)
    events: list[Any] = []
    s.on_change(events.append)
    messages: list[p2pstate.Message] = []
    s.on_change(lambda e: messages.append(e) if isinstance(e, p2pstate.Message) else None)
    jobs: dict[str, threading.Thread] = {}
    results: dict[str, Any] = {}

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
            "admin": s.admin,
            "endpoint": s.me.endpoint,
        }

    def incr(job: str, key: str, n: int) -> None:
        done = 0
        for _ in range(n):
            s.apply_op(key, lambda v: v + 1)
            done += 1
        results[job] = done

    def writes(job: str, prefix: str, n: int) -> None:
        for i in range(n):
            s[f"{prefix}{i}"] = i
        results[job] = n

    reply({"ready": True, **info()})
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        try:
            if op == "info":
                reply(info())
            elif op == "set":
                flags = {k: cmd[k] for k in ("ephemeral", "owner_only", "ttl") if k in cmd}
                s.set(cmd["key"], cmd["value"], **flags)
                reply({"ok": True})
            elif op == "say":
                s.broadcast(cmd["payload"])
                reply({"ok": True})
            elif op == "messages":
                reply({"messages": [[e.sender.id, e.payload] for e in messages]})
            elif op == "get":
                reply({"value": s.get(cmd["key"])})
            elif op == "dump":
                reply({"state": dict(s.items())})
            elif op in ("incr", "writes"):
                target = incr if op == "incr" else writes
                args = (cmd["key"], cmd["n"]) if op == "incr" else (cmd["prefix"], cmd["n"])
                job = threading.Thread(target=target, args=(cmd["job"], *args), daemon=True)
                jobs[cmd["job"]] = job
                job.start()
                reply({"started": cmd["job"]})
            elif op == "join_job":
                jobs[cmd["job"]].join(cmd.get("timeout", 60))
                reply({"done": results.get(cmd["job"])})
            elif op == "wait":
                deadline = time.monotonic() + cmd.get("timeout", 10)
                while s.get(cmd["key"]) != cmd["value"] and time.monotonic() < deadline:
                    time.sleep(0.005)
                reply({"value": s.get(cmd["key"])})
            elif op == "acl":  # authorize, unauthorize, ban, unban (admin only)
                getattr(s, cmd["action"])(cmd["id"])
                reply({"ok": True})
            elif op == "stats":
                reply({"stats": s.stats})
            elif op == "events":
                reply({"events": [type(e).__name__ for e in events]})
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
