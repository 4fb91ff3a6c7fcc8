"""The shared counter: why ``apply_op`` exists.

Several copies of a program add 1 to the same shared number, many times.

    python demos/counter.py                       # 3 workers, 200 increments each
    python demos/counter.py --workers 5 --count 500

Round 1 does it the obvious way, ``s["naive"] = s["naive"] + 1``: read the
value, add one, write it back. Two workers that read the same value both write
value + 1, and one of the two increments is lost.

Round 2 uses ``s.apply_op("safe", lambda v: v + 1)``: the host accepts the
write only if nobody changed the value since it was read; otherwise apply_op
reads the newer value and tries again. No increment is ever lost.

The workers are separate processes, each joining the same session, just as
copies of a program on different machines would. To keep the demo on this
machine, run it with P2PSTATE_INTERFACES=127.0.0.1.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from typing import Any

import p2pstate

APP = "p2pstate-demo-counter"
# Seconds a worker looks for the coordinator's session. join() returns as soon
# as it finds the host, so a generous window costs nothing, and on a busy
# machine it keeps a slow worker from starting a session of its own.
JOIN_WINDOW = 3.0
STEP_TIMEOUT = 30.0  # seconds; a stuck worker ends the demo instead of hanging it


def worker(session: str, count: int, start: Any, halfway: Any, retries: Any) -> None:
    """One copy of the program: join, then run both rounds in step with the others."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the coordinator's to handle
    try:
        with p2pstate.join(
            APP, session, name=f"worker-{os.getpid()}", discovery_window=JOIN_WINDOW
        ) as s:
            if s.is_host:  # we started a session of our own: the count would be wrong
                raise RuntimeError("did not find the coordinator's session over mDNS")
            start.wait(STEP_TIMEOUT)  # everyone has joined: go

            # Round 1, the naive way. Between our read and our write another
            # worker may write too; then one of the two writes overwrites the other.
            for _ in range(count):
                s["naive"] = s["naive"] + 1

            halfway.wait(STEP_TIMEOUT)  # everyone has finished round 1

            # Round 2, the safe way. apply_op reads, computes v + 1, and asks
            # the host to write it only if the value is still the one it read;
            # if another worker got there first, it recomputes from the newer value.
            for _ in range(count):
                s.apply_op("safe", lambda v: v + 1)

            with retries.get_lock():
                retries.value += s.stats.get("apply_op_retries", 0)
    except BaseException:
        start.abort()  # wake the others (and the coordinator) instead of leaving them waiting
        halfway.abort()
        raise


def main() -> int:
    parser = argparse.ArgumentParser(description="Naive read-modify-write versus apply_op.")
    parser.add_argument("--workers", type=int, default=3, help="worker processes (default 3)")
    parser.add_argument("--count", type=int, default=200, help="increments per worker and round")
    args = parser.parse_args()
    expected = args.workers * args.count
    # A session of our own, so that two runs of this demo at once do not mix.
    session = f"counter-{os.getpid()}"

    # "spawn" starts each worker as a fresh Python that joins with its own
    # sockets, like a copy of the program started on another machine.
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(args.workers + 1)
    halfway = ctx.Barrier(args.workers + 1)
    retries = ctx.Value("i", 0)

    # This process starts first, so it hosts the session. It sets both
    # counters to 0 before any worker starts, then only watches.
    with p2pstate.join(APP, session, name="coordinator", discovery_window=0.3) as s:
        s.update({"naive": 0, "safe": 0})
        print(f"{args.workers} workers, {args.count} increments each, in session {session!r}")
        print("Starting the workers...", flush=True)

        procs = [
            ctx.Process(target=worker, args=(session, args.count, start, halfway, retries))
            for _ in range(args.workers)
        ]
        for proc in procs:
            proc.start()
        try:
            start.wait(STEP_TIMEOUT)
            began = time.monotonic()
            halfway.wait(STEP_TIMEOUT)
            naive_secs = time.monotonic() - began
            # We are the host, so every acknowledged write is already in our copy.
            naive = s["naive"]
            began = time.monotonic()
            for proc in procs:
                proc.join(STEP_TIMEOUT)
            safe_secs = time.monotonic() - began
            safe = s["safe"]
        except threading.BrokenBarrierError:
            print("A worker failed (its error is above); stopping.", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("Interrupted: stopping the workers.")
            return 130
        finally:
            for proc in procs:
                if proc.is_alive():
                    proc.kill()
                proc.join()

    if any(proc.exitcode != 0 for proc in procs):
        print("A worker failed (its error is above).", file=sys.stderr)
        return 1

    print(
        f"naive     s[k] = s[k] + 1 : expected {expected}, got {naive}"
        f"  ({expected - naive} lost, {naive_secs:.1f} s)"
    )
    print(
        f"apply_op  s.apply_op(k, f): expected {expected}, got {safe}"
        f"  ({expected - safe} lost, {safe_secs:.1f} s; {retries.value} retries after conflicts)"
    )
    if naive < expected:
        print("The naive loop lost updates: workers read the same value and overwrote each other.")
    else:
        print("The naive loop got lucky this time (try more workers); it is still unsafe.")
    return 0 if safe == expected else 1


if __name__ == "__main__":
    sys.exit(main())
