"""Issue 17's fault table, run many times, and two recovery times (needs root).

    sudo python benchmarks/faults.py               # every row 5 times, then recovery
    python benchmarks/faults.py --runs 1           # once each
    python benchmarks/faults.py --rows host-blips,writer-cut-1.5 --runs 10
    python benchmarks/faults.py --long             # also the rows too slow for CI
    python benchmarks/faults.py --no-rows --recovery-rounds 5

Every peer runs in a network namespace made here (``tests/lan/netlab.py``),
on a private bridge; nothing leaves those namespaces, and each run deletes
its namespaces and stops its workers by pid, pass or fail.

The rows are those of ``tests/lan/test_real_faults.py`` (defined once in
``tests/lan/faultrows.py``): 7 peers, 4 writers running ``apply_op``
increments on one counter, one fault (also a slow CPU, a restart, and
carrier blips with the longer ``host_timeout`` the README gives as their
knob: the last epoch per run shows whether a failover happened). A run
*fails* when the final counter is not the number of increments acknowledged
on every survivor, a call raised, the rolled-back reports differ from what
was undone, or the session did not settle. "undone" is acknowledged
increments minus the final count.

Recovery, in a session of 3 (host, successor, a writer running increments
back to back), each the median of ``--recovery-rounds`` fresh sessions:

* **blip → fresh ack**: the host's link down for 0.3 s (below
  ``host_timeout``); from the moment the restore is asked for to the first
  increment acknowledged among those the writer *started* after it, i.e. writes
  back to normal, not just the one that waited out the blip.
* **loss → fresh ack**: the same with the port losing every packet while
  its carrier stays up (``Lan.drop``: no ARP flush, see tests/lan/test_blips.py).
* **kill -9 → first ack**: SIGKILL of the host's pid; from the kill to the
  first increment acknowledged with another peer as host.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "lan"))

from faultrows import (
    COUNTER,
    KNOB_ROWS,
    LONG_ROWS,
    ROWS,
    Outcome,
    Row,
    Run,
    run_row,
    start,
    start_counting,
)
from netlab import Lan, unavailable_reason, wait_for

BLIP_S = 0.3


def _app() -> str:
    return f"faults-{secrets.token_hex(4)}"


def run_once(row: Row, logdir: Path) -> Outcome:
    """One run of *row* in a fresh Lan; a run the harness could not finish is a failure."""
    lan = Lan(row.peers, Path(tempfile.mkdtemp(prefix=f"{row.id}-", dir=logdir)))
    try:
        outcome = run_row(lan, row, _app())
        if outcome.failures():
            print(f"    logs: {lan.logdir}\n{outcome.detail}", flush=True)
        return outcome
    except (AssertionError, RuntimeError, TimeoutError, OSError) as exc:
        out = Outcome(row.id)
        out.problems.append(f"the run did not finish: {exc!r}"[:500])
        return out
    finally:
        lan.close()


def _cell(outcome: Outcome) -> str:
    """One run in the table: what it undid, and a mark if it failed otherwise."""
    undone = "?" if outcome.undone is None else str(outcome.undone)
    return undone + ("" if not outcome.failures() or outcome.undone else "!")


def table(results: dict[str, list[Outcome]]) -> str:
    head = ("row", "runs", "failed", "undone per run", "reported per run", "epoch", "s/run")
    lines = [head]
    for row_id, outcomes in results.items():
        failed = sum(1 for o in outcomes if o.failures())
        lines.append(
            (
                row_id,
                str(len(outcomes)),
                str(failed),
                ", ".join(_cell(o) for o in outcomes),
                ", ".join(str(o.reported) for o in outcomes),
                ", ".join(str(o.epoch) for o in outcomes),
                f"{statistics.mean(o.seconds for o in outcomes):.1f}",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    text = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)


def run_rows(rows: list[Row], runs: int, logdir: Path) -> dict[str, list[Outcome]]:
    results: dict[str, list[Outcome]] = {}
    for row in rows:
        for i in range(runs):
            outcome = run_once(row, logdir)
            results.setdefault(row.id, []).append(outcome)
            print(f"[{row.id} {i + 1}/{runs}] {outcome.summary()}", flush=True)
            for failure in outcome.failures():
                print(f"    {failure[:300]}", flush=True)
    return results


def _recovery(logdir: Path, act: Callable[[Run], tuple[float, dict[str, Any]]]) -> float:
    """A session of 3 with one writer going; *act* does the fault and returns when
    it ended and how to ask for the ack; seconds from then to that ack."""
    row = Row("recovery", "3 peers, 1 writer", lambda run: None, peers=3, writers=1)
    lan = Lan(row.peers, Path(tempfile.mkdtemp(prefix="recovery-", dir=logdir)))
    try:
        run = start(lan, row, _app())
        stuck = start_counting(run)
        assert not stuck, stuck
        ended, query = act(run)
        writer = run.writers[0]
        acked = wait_for(lambda: writer.cmd("first_ack", after=ended, **query)["at"], 20, "an ack")
        writer.cmd("stop_count", timeout=30)
        return float(acked) - ended
    finally:
        lan.close()


def blip(run: Run) -> tuple[float, dict[str, Any]]:
    ns = run.ns_of[run.host.pid]
    run.lan.cut(ns)
    time.sleep(BLIP_S)
    ended = time.monotonic()  # before the restore: counts the `ip` call against us
    run.lan.restore(ns)
    return ended, {"fresh": True}


def loss_blip(run: Run) -> tuple[float, dict[str, Any]]:
    """As ``blip``, but the port loses packets with its carrier up (``Lan.drop``):
    the host's kernel keeps its ARP entries, which a carrier loss flushes."""
    ns = run.ns_of[run.host.pid]
    run.lan.drop(ns)
    time.sleep(BLIP_S)
    ended = time.monotonic()
    run.lan.undrop(ns)
    return ended, {"fresh": True}


def kill_host(run: Run) -> tuple[float, dict[str, Any]]:
    old = run.host.id
    killed = time.monotonic()
    os.kill(run.host.pid, signal.SIGKILL)
    return killed, {"old_host": old}


def recovery(rounds: int, logdir: Path) -> str:
    lines = []
    for title, act in (
        (f"host link blip {BLIP_S} s → fresh ack", blip),
        (f"host link loss {BLIP_S} s, carrier up → fresh ack", loss_blip),
        ("kill -9 host → first ack", kill_host),
    ):
        times = [_recovery(logdir, act) for _ in range(rounds)]
        listed = ", ".join(f"{t * 1000:.0f}" for t in times)
        lines.append(f"{title}: median {statistics.median(times) * 1000:.0f} ms ({listed} ms)")
        print(lines[-1], flush=True)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per row (default 5)")
    parser.add_argument("--rows", help="comma-separated row ids (default: all)")
    parser.add_argument("--long", action="store_true", help="add the rows too slow for CI")
    parser.add_argument("--no-rows", action="store_true", help="only the recovery times")
    parser.add_argument("--recovery-rounds", type=int, default=3, help="0 to skip (default 3)")
    parser.add_argument("--logs", help="keep every run's worker logs under this directory")
    args = parser.parse_args(argv)
    reason = unavailable_reason()
    if reason is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    rows = ROWS + KNOB_ROWS + (LONG_ROWS if args.long else [])
    if args.rows:
        wanted = args.rows.split(",")
        every = ROWS + KNOB_ROWS + LONG_ROWS
        unknown = set(wanted) - {r.id for r in every}
        if unknown:
            parser.error(f"unknown rows: {sorted(unknown)}")
        rows = [r for r in every if r.id in wanted]
    # Every identity a worker makes lives in this run's directory, never the user's.
    with tempfile.TemporaryDirectory(prefix="p2pstate-faults-") as tmp:
        os.environ["P2PSTATE_HOME"] = tmp
        logdir = Path(args.logs) if args.logs else Path(tmp)
        logdir.mkdir(parents=True, exist_ok=True)
        out = []
        if not args.no_rows:
            out.append(table(run_rows(rows, args.runs, logdir)))
        if args.recovery_rounds > 0:
            out.append(recovery(args.recovery_rounds, logdir))
    print("\n" + "\n\n".join(out))
    print(f"\n(counter key {COUNTER!r}; '!' marks a run that failed without undoing anything)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
