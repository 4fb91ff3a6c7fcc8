"""The shared counter: why ``apply_op`` exists.

Several copies of a program add 1 to the same shared number, many times.

    python demos/counter.py                      # 3 workers, 200 increments each
    python demos/counter.py --workers 5 --count 500

Round 1 does it the obvious way, ``s["naive"] = s["naive"] + 1``: read the
value, add one, write it back. Two workers that read the same value both write
value + 1, and one increment is lost. Round 2 uses
``s.apply_op("safe", lambda v: v + 1)``: the host only accepts the write if
nobody changed the value since it was read, and apply_op retries otherwise, so
no increment is ever lost.

The workers are separate processes, each joining the same session, exactly as
separate copies of a program on different machines would. Set
P2PSTATE_INTERFACES=127.0.0.1 to keep the demo on loopback.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from typing import Any

import p2pstate

APP = "p2pstate-demo-counter"
BARRIER_TIMEOUT = 30.0  # seconds; a stuck worker ends the demo instead of hanging it


def worker(session: str, count: int, start: Any, halfway: Any) -> None:
    """One copy of the program: join, then run both rounds in step with the others."""
    try:
        with p2pstate.join(APP, session, name=f"worker-{os.getpid()}") as s:
            start.wait(BARRIER_TIMEOUT)  # everyone has joined: go

            # Round 1, the naive way. Between our read and our write another
            # worker may write; our write then overwrites theirs.
            for _ in range(count):
                s["naive"] = s["naive"] + 1

            halfway.wait(BARRIER_TIMEOUT)  # everyone finished round 1

            # Round 2, the safe way. apply_op reads, computes v + 1, and asks
            # the host to write it only if the value is still what it read;
            # if someone got there first it recomputes from the newer value.
            for _ in range(count):
                s.apply_op("safe", lambda v: v + 1)
    except BaseException:
        start.abort()  # wake the others (and the coordinator) instead of leaving them waiting
        halfway.abort()
        raise


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=3, help="how many processes (default 3)")
    parser.add_argument("--count", type=int, default=200, help="increments per worker per round")
    args = parser.parse_args()
    expected = args.workers * args.count
    # A session name of our own, so two runs of this demo at once do not mix.
    session = f"counter-{os.getpid()}"

    # "spawn" starts each worker as a fresh Python: it joins with its own
    # sockets, like a program started on another machine would.
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(args.workers + 1)
    halfway = ctx.Barrier(args.workers + 1)

    # This process starts first, so it hosts the session. It sets both
    # counters to 0 before any worker starts, then only watches.
    with p2pstate.join(APP, session, name="coordinator", discovery_window=0.3) as s:
        s.update({"naive": 0, "safe": 0})
        print(f"{args.workers} workers, {args.count} increments each, in session {session!r}")

        procs = [
            ctx.Process(target=worker, args=(session, args.count, start, halfway))
            for _ in range(args.workers)
        ]
        for proc in procs:
            proc.start()
        try:
            start.wait(BARRIER_TIMEOUT)
            began = time.monotonic()
            halfway.wait(BARRIER_TIMEOUT)
            naive_secs = time.monotonic() - began
            # We are the host: every acknowledged write is already in our copy.
            naive = s["naive"]
            began = time.monotonic()
            for proc in procs:
                proc.join(BARRIER_TIMEOUT)
            safe_secs = time.monotonic() - began
            safe = s["safe"]
        finally:
            for proc in procs:
                if proc.is_alive():
                    proc.kill()
                proc.join()

    failed = [proc.exitcode for proc in procs if proc.exitcode != 0]
    if failed:
        print(f"{len(failed)} worker(s) failed (exit codes {failed})", file=sys.stderr)
        return 1

    lost = expected - naive
    print(
        f"naive     s[k] = s[k] + 1 : expected {expected}, got {naive}"
        f"  ({lost} lost, {naive_secs:.1f} s)"
    )
    print(
        f"apply_op  s.apply_op(k, f): expected {expected}, got {safe}"
        f"  ({expected - safe} lost, {safe_secs:.1f} s)"
    )
    if lost:
        print("The naive loop lost updates: workers read the same value and overwrote each other.")
    else:
        print("The naive loop got lucky this time (try more workers); it is still unsafe.")
    return 0 if safe == expected else 1


if __name__ == "__main__":
    sys.exit(main())
