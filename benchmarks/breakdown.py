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


def cpu_per_write(peers: dict[str, Worker], run: Callable[[], int]) -> dict[str, float]:
    """Each process's CPU seconds per write over *run* (which returns the writes)."""
    before = {who: w.cmd("cpu")["cpu_ns"] for who, w in peers.items()}
    writes = run()
    return {who: (w.cmd("cpu")["cpu_ns"] - before[who]) / 1e9 / writes for who, w in peers.items()}


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

    def pipelined() -> int:
        writer.cmd("burst", key="cpuburst", n=burst, window=burst, timeout=180)
        return burst

    cpu_blocking = cpu_per_write(peers, blocking)
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
