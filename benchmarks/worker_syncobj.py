"""A PySyncObj (Raft) node for the comparison, in its own process.

    python benchmarks/worker_syncobj.py SELF_PORT OTHER_PORT...

Holds a ReplDict and a ReplCounter, with PySyncObj's default settings, on
loopback. Prints one JSON line once started; each JSON command line on stdin
gets one JSON reply line.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from harness import LOOPBACK, serve
from pysyncobj import SyncObj
from pysyncobj.batteries import ReplCounter, ReplDict


class Node:
    def __init__(self, me: str, others: list[str]) -> None:
        self.me = me
        self.dict = ReplDict()
        self.counter = ReplCounter()
        self.obj = SyncObj(me, others, consumers=[self.dict, self.counter])

    def op_wait_leader(self, within: float) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            leader = self.obj.getStatus()["leader"]
            if leader is not None and self.obj.isReady():
                return {"leader": str(leader), "me": self.me}
            time.sleep(0.02)
        raise TimeoutError(f"no leader within {within} s")

    def op_latency(self, key: str, n: int) -> dict[str, Any]:
        """ReplDict.set(sync=True), one after another: each call's duration."""
        samples = []
        for i in range(n):
            start = time.monotonic_ns()
            self.dict.set(key, i, sync=True, timeout=10)
            samples.append(time.monotonic_ns() - start)
        return {"ns": samples}

    def op_inc_rate(self, n: int, within: float) -> dict[str, Any]:
        """*n* asynchronous ReplCounter.inc calls: when had all been applied?"""
        done = threading.Event()
        answers = {"ok": 0, "failed": 0}
        lock = threading.Lock()

        def callback(result: Any, error: Any) -> None:
            with lock:
                answers["ok" if error == 0 else "failed"] += 1
                if answers["ok"] + answers["failed"] == n:
                    done.set()

        start = time.monotonic_ns()
        for _ in range(n):
            self.counter.inc(callback=callback)
        if not done.wait(within):
            raise TimeoutError(f"{answers} of {n} increments answered in {within} s")
        return {"start": start, "end": time.monotonic_ns(), **answers}

    def op_close(self) -> dict[str, Any]:
        self.obj.destroy()
        return {"closed": True}


def main() -> None:
    me, *others = (f"{LOOPBACK}:{port}" for port in sys.argv[1:])
    node = Node(me, others)
    if not serve(node, {"me": me}):
        node.obj.destroy()


if __name__ == "__main__":
    main()
