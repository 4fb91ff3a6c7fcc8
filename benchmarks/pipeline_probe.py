"""Where a pipelined run's CPU goes: three peers (host, successor, writer)
in three processes; the writer makes bursts of ``set(k, v, wait=False)`` of
distinct keys then ``flush()``, as row 3a does. Per round: the rate, each
process's CPU per write by thread (from /proc), and per write the messages
each core took in and sent by type, its frames and I/O passes. With
``--profile DIR`` each process's I/O thread is profiled too (cProfile, by
thread CPU time), one file per role for ``python -m pstats``.

    python benchmarks/pipeline_probe.py [--rounds 5] [--burst 2000] [--profile DIR]
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from typing import Any

from harness import Group, Worker

ROLES = ("host", "successor", "writer")


def start(group: Group, app: str, session: str) -> list[Worker]:
    workers = []
    for _ in ROLES:
        workers.append(group.start("worker_p2pstate.py", app, session, "{}"))
        workers[-1].hello()
    assert workers[0].hello()["is_host"], "the first peer did not become host"
    return workers


def per_write(counts: dict[str, int], n: int) -> str:
    return ", ".join(f"{k} {v / n:.3g}" for k, v in sorted(counts.items()) if v / n >= 0.001)


def one_round(
    workers: list[Worker], key: str, n: int, profile: str | None, *, count: bool
) -> float:
    for w in workers:
        if count:
            w.cmd("count_start")
        if profile:
            w.cmd("profile_start")
    before = [w.cmd("threads")["cpu_ns"] for w in workers]
    burst = workers[2].cmd("burst", timeout=180, key=key, n=n, window=n)
    after = [w.cmd("threads")["cpu_ns"] for w in workers]
    rate = n / ((burst["end"] - burst["start"]) / 1e9)
    print(f"  {rate:,.0f} write/s")
    for role, w, b, a in zip(ROLES, workers, before, after, strict=True):
        counts = w.cmd("count_stop") if count else {"received": {}, "sent": {}, "stats": {}}
        if profile:
            w.cmd("profile_stop", path=os.path.join(profile, f"{role}.prof"))
        cpu = {name: (a[name] - b.get(name, 0)) / n / 1000 for name in a}
        threads = ", ".join(f"{k} {v:.1f}" for k, v in sorted(cpu.items()) if v >= 0.05)
        stats: dict[str, Any] = counts["stats"]
        print(
            f"  {role:9} CPU/write {sum(cpu.values()):5.1f} µs ({threads}); in: "
            f"{per_write(counts['received'], n)}; out: {per_write(counts['sent'], n)}; "
            f"frames in {stats.get('frames', 0) / n:.3g}, "
            f"passes {stats.get('io_passes', 0) / n:.3g}"
        )
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--burst", type=int, default=2000)
    parser.add_argument("--profile", help="write host/successor/writer .prof files here")
    parser.add_argument(
        "--no-count",
        action="store_true",
        help="don't count messages (a mypyc-compiled core's methods cannot be wrapped)",
    )
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}")
    app = f"probe-{secrets.token_hex(4)}"
    with Group() as group:
        workers = start(group, app, "pipe")
        workers[2].cmd("burst", timeout=180, key="warm", n=args.burst, window=args.burst)
        rates = []
        for i in range(args.rounds):
            last = args.profile if i == args.rounds - 1 else None
            rates.append(one_round(workers, f"r{i}_", args.burst, last, count=not args.no_count))
        rates.sort()
        print(f"median {rates[len(rates) // 2]:,.0f} write/s; load {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
