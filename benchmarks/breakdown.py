"""Where the time of one acknowledged write goes, hop by hop, and where the
CPU goes in a pipelined run: the measurements behind the performance notes in
BENCHMARKS.md (``run.py`` calls :func:`measure` and writes its section).

A session of three peers in three processes (host, successor, writer); the
writer makes blocking writes a few milliseconds apart while every process
records timestamps at its thread and process boundaries (``tracer.py``).
Each write's records are those inside its own span, so heartbeats and the
host's backup ``Result`` do not mix in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from statistics import median
from typing import Any

from harness import Worker, fmt_time

#: The segments of one write from the third peer, each (label, from, to):
#: a point is (process, tag prefix), with W, H, S the writer, host, successor.
SEGMENTS: tuple[tuple[str, tuple[str, str], tuple[str, str]], ...] = (
    ("writer: user thread → I/O thread", ("W", "start"), ("W", "submit")),
    ("writer: I/O thread → Write into zmq", ("W", "submit"), ("W", "send:Write@H")),
    (
        "hop 1: writer → host (zmq, TCP, wake-up, decode)",
        ("W", "send:Write@H"),
        ("H", "recv:Write@W"),
    ),
    ("host: core handles the Write", ("H", "recv:Write@W"), ("H", "handled:Write@W")),
    ("host: handled → ChangeMsg into zmq", ("H", "handled:Write@W"), ("H", "send:ChangeMsg@S")),
    ("hop 2: host → successor", ("H", "send:ChangeMsg@S"), ("S", "recv:ChangeMsg@H")),
    ("successor: core applies the change", ("S", "recv:ChangeMsg@H"), ("S", "handled:ChangeMsg@H")),
    ("successor: handled → Result into zmq", ("S", "handled:ChangeMsg@H"), ("S", "send:Result@W")),
    ("hop 3: successor → writer", ("S", "send:Result@W"), ("W", "recv:Result@S")),
    ("writer: Result → user thread woken", ("W", "recv:Result@S"), ("W", "end")),
)


def _points(
    span: tuple[int, int], records: dict[str, list[tuple[int, str]]], ids: dict[str, str]
) -> dict[tuple[str, str], int]:
    """The first time each tag was recorded by each process inside *span*."""
    start, end = span
    found: dict[tuple[str, str], int] = {("W", "start"): start, ("W", "end"): end}
    for who, recs in records.items():
        for ns, tag in recs:
            if start <= ns <= end:
                named = tag
                for role, node_id in ids.items():
                    named = named.replace(f"@{node_id}", f"@{role}")
                found.setdefault((who, named), ns)
    return found


def hop_table(
    spans: Sequence[tuple[int, int]], records: dict[str, list[tuple[int, str]]], ids: dict[str, str]
) -> tuple[list[tuple[str, float]], int]:
    """The median of each segment over the writes that have all their points."""
    per_segment: list[list[int]] = [[] for _ in SEGMENTS]
    complete = 0
    for span in spans:
        points = _points(span, records, ids)
        if not all(a in points and b in points for _, a, b in SEGMENTS):
            continue
        complete += 1
        for i, (_, a, b) in enumerate(SEGMENTS):
            per_segment[i].append(points[b] - points[a])
    rows = [
        (label, median(values) / 1e9 if values else float("nan"))
        for (label, _, _), values in zip(SEGMENTS, per_segment, strict=True)
    ]
    return rows, complete


#: The threads of a peer's process, by the start of their names (see
#: ``worker_p2pstate.thread_cpu_ns``); the rest of the process is "other".
THREADS: tuple[tuple[str, str], ...] = (
    ("I/O thread", "p2pstate-io"),
    ("zmq's I/O thread", "ZMQbg/"),
    ("on_change thread", "p2pstate-callbacks"),
    ("user thread", "MainThread"),
)


def cpu_per_write(peers: dict[str, Worker], run: Callable[[], int]) -> dict[str, float]:
    """Each process's CPU seconds per write over *run* (which returns the writes)."""
    before = {who: w.cmd("cpu")["cpu_ns"] for who, w in peers.items()}
    writes = run()
    return {who: (w.cmd("cpu")["cpu_ns"] - before[who]) / 1e9 / writes for who, w in peers.items()}


def threads_per_write(
    peers: dict[str, Worker], run: Callable[[], int]
) -> dict[str, dict[str, float]]:
    """Each process's CPU seconds per write over *run*, in all ("all") and
    per kind of thread (from /proc, in 10 ms ticks: run a second's writes or
    more), and its I/O loop's passes per write ("passes", 0 if not counted)."""
    before = {who: w.cmd("threads") for who, w in peers.items()}
    writes = run()
    out: dict[str, dict[str, float]] = {}
    for who, w in peers.items():
        after, was = w.cmd("threads"), before[who]
        spent = {
            name: (ns - was["cpu_ns"].get(name, 0)) / 1e9 / writes
            for name, ns in after["cpu_ns"].items()
        }
        row = {"all": (after["process_ns"] - was["process_ns"]) / 1e9 / writes}
        for label, prefix in THREADS:
            row[label] = sum(t for name, t in spent.items() if name.startswith(prefix))
        row["other"] = row["all"] - sum(row[label] for label, _ in THREADS)
        passes = after["stats"].get("io_passes", 0) - was["stats"].get("io_passes", 0)
        row["passes"] = passes / writes
        out[who] = row
    return out


def measure(peers: dict[str, Worker], *, writes: int, burst: int, chain_p50: float) -> list[str]:
    """The markdown lines of the breakdown; *peers* maps W, H, S to workers of
    one session (writer, host, successor)."""
    writer, host = peers["W"], peers["H"]
    ids = {who: w.cmd("info")["id"] for who, w in peers.items()}
    writer.cmd("latency", key="trace", n=100)  # warm up
    for w in peers.values():
        w.cmd("trace_start")
    spans = writer.cmd("traced_writes", key="trace", n=writes, gap=0.003, timeout=120)["spans"]
    records = {who: [tuple(r) for r in w.cmd("trace_stop")["records"]] for who, w in peers.items()}
    hops, complete = hop_table([tuple(s) for s in spans], records, ids)  # type: ignore[misc]
    total = median(end - start for start, end in spans) / 1e9

    def blocking() -> int:
        writer.cmd("latency", key="cpu", n=writes, timeout=120)
        return writes

    def blocking_long() -> int:  # enough for /proc's 10 ms ticks
        writer.cmd("latency", key="cpu", n=3 * writes, timeout=180)
        return 3 * writes

    def pipelined() -> int:
        writer.cmd("burst", key="cpuburst", n=burst, window=burst, timeout=180)
        return burst

    cpu_blocking = cpu_per_write(peers, blocking)
    cpu_threads = threads_per_write(peers, blocking_long)
    host.cmd("sample_start")
    cpu_pipelined = cpu_per_write(peers, pipelined)
    sampled = host.cmd("sample_stop")
    return _markdown(
        hops=hops,
        complete=complete,
        writes=len(spans),
        total=total,
        chain_p50=chain_p50,
        cpu_blocking=cpu_blocking,
        cpu_pipelined=cpu_pipelined,
        cpu_threads=cpu_threads,
        sampled=sampled,
    )


def _markdown(
    *,
    hops: list[tuple[str, float]],
    complete: int,
    writes: int,
    total: float,
    chain_p50: float,
    cpu_blocking: dict[str, float],
    cpu_pipelined: dict[str, float],
    cpu_threads: dict[str, dict[str, float]],
    sampled: dict[str, Any],
) -> list[str]:
    names = {"W": "writer", "H": "host", "S": "successor"}
    out = [
        "## Where the time goes",
        "",
        f"One blocking write from the third peer, split at each thread and process boundary "
        f"(median over {complete} of {writes} writes that showed every point; median whole "
        f"write {fmt_time(total)}, against the raw 3-process chain's p50 {fmt_time(chain_p50)}, "
        f"about {fmt_time(chain_p50 / 3)} a hop). Made by `benchmarks/breakdown.py`.",
        "",
        "| segment | median |",
        "| --- | --- |",
        *[f"| {label} | {fmt_time(t)} |" for label, t in hops],
        "",
        "CPU per write in each process (all its threads, Python and zmq's I/O thread):",
        "",
        "| process | blocking writes, one at a time | pipelined writes |",
        "| --- | --- | --- |",
        *[
            f"| {names[who]} | {fmt_time(cpu_blocking[who])} | {fmt_time(cpu_pipelined[who])} |"
            for who in ("W", "H", "S")
        ],
        "",
        "The blocking writes' CPU by thread (a longer run of them; /proc counts in 10 ms "
        "ticks), and the passes of each I/O loop per write (a pass: one wake-up of the "
        "I/O thread, with its step):",
        "",
        "| process | all threads | "
        + " | ".join(label for label, _ in THREADS)
        + " | other | I/O loop passes |",
        "| --- " * (len(THREADS) + 4) + "|",
        *[
            f"| {names[who]} | "
            + " | ".join(
                fmt_time(cpu_threads[who][col])
                for col in ("all", *(label for label, _ in THREADS), "other")
            )
            + f" | {cpu_threads[who]['passes']:.2f} |"
            for who in ("W", "H", "S")
        ],
        "",
        f"The host's I/O thread during the pipelined run, sampled every millisecond "
        f"({sampled['samples']} samples): the functions on top of its stack (own time) and the "
        "p2pstate functions nearest the top (with what they call in C).",
        "",
        "| own time | share | nearest p2pstate function | share |",
        "| --- | --- | --- | --- |",
    ]
    n = max(1, sampled["samples"])
    top, near = sampled["top"], sampled["near"]
    for i in range(max(len(top), len(near))):
        a = f"`{top[i][0]}` | {top[i][1] / n:.0%}" if i < len(top) else " | "
        b = f"`{near[i][0]}` | {near[i][1] / n:.0%}" if i < len(near) else " | "
        out.append(f"| {a} | {b} |")
    out.append("")
    return out
