"""Fingerprints of seeded simulator schedules, to show that a refactoring of
the core changed no behaviour: run it on two checkouts and diff the outputs.

    PYTHONHASHSEED=0 PYTHONPATH=$PWD python tests/core/fingerprint.py 300 > a.txt

One line per schedule (chaos.py's three kinds and lanchaos.py's two, for
each seed below the count given): a hash of what every node ended with
(role, epoch, seq, host, every stats counter, members, keys) and the
simulated time, or the guarantee that failed. PYTHONHASHSEED must be fixed:
a few decisions iterate over sets of node ids.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]

from chaos import Kind, Report, run_schedule  # noqa: E402
from lanchaos import LanKind, run_lan_schedule  # noqa: E402


def fingerprint(report: Report) -> str:
    net = report.net
    rows: list[object] = []
    for nid in sorted(net.nodes):
        n = net.nodes[nid]
        r = n.replica
        members = sorted(m.id for m in r.members)
        stats = sorted(n.stats.items())
        rows.append((nid, n.role.name, n.epoch, r.seq, r.host_id, stats, members, sorted(r.data)))
    rows.append(net.now)
    return hashlib.sha256(repr(rows).encode()).hexdigest()[:16]


def _schedules(seed: int) -> list[tuple[str, Callable[[], Report]]]:
    runs: list[tuple[str, Callable[[], Report]]] = [
        (f"chaos {seed} {k.value}", partial(run_schedule, seed, k)) for k in Kind
    ]
    for lan, base in ((LanKind.SHORT, 400_000), (LanKind.LONG, 500_000)):
        runs.append((f"lan {seed} {lan.name}", partial(run_lan_schedule, base + seed, lan)))
    return runs


def main(count: int) -> None:
    for seed in range(count):
        for name, run in _schedules(seed):
            try:
                print(name, fingerprint(run()))
            except AssertionError as exc:
                print(name, "FAIL", str(exc).splitlines()[0])


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)
