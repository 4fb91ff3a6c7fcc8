"""p2pstate's benchmarks, each beside the baseline it is judged against.

    python benchmarks/run.py            # the full run, about 4 minutes; writes BENCHMARKS.md
    python benchmarks/run.py --quick    # a smoke run of well under a minute
    python benchmarks/run.py --no-write # print the table only

Every process runs on this machine and talks over loopback (127.0.0.1) only.
Every figure is taken in the same run as its baseline: a raw pyzmq DEALER to
ROUTER round trip with messages of the size p2pstate sends. Each measurement
runs several rounds, and the median round is reported (for latencies: the
round with the median p50, with its own p99). p2pstate runs with its default
options, in separate processes (``worker_p2pstate.py``), driven over pipes.

PySyncObj is compared if installed: ``pip install -e ".[bench]"``.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import importlib.metadata
import json
import os
import platform
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import breakdown
import msgpack
import zmq
from harness import (
    ROOT,
    Group,
    Latency,
    Worker,
    fmt_bytes,
    fmt_rate,
    fmt_time,
    free_ports,
    gather,
    median,
    median_round,
)

from p2pstate import Options
from p2pstate.messages import Change, ChangeMsg, Write, to_frame

DEFAULTS = Options()
#: The number of keys and the value size of the join and memory measurements.
BIG_KEYS, BIG_VALUE = 10_000, 100
#: The scale measurement: this many peers, each writing this often (per second).
SCALE_PEERS, SCALE_HZ = 16, 30

# The rows of the table.
RAW_RTT = "raw zmq round trip"
RAW_RATE = "raw zmq pipelined echo"
RAW_SNAPSHOT = f"raw zmq transfer of {BIG_KEYS:,} keys"
RAW_CHAIN = "raw 3-process relay chain"
RAW_CHAIN_RATE = "raw 3-process relay chain, pipelined"
SYNCOBJ_SET = "PySyncObj ReplDict.set(sync=True)"
SYNCOBJ_INC = "PySyncObj ReplCounter.inc, async"
WRITE_ACK = "1. write → acknowledged"
WRITE_VISIBLE = "2. write → visible at another peer"
WRITE_ACK_SECRET = "1s. write → acknowledged, with a secret"
WRITE_ACK_STORE = "1d. write → acknowledged, host with an SQLite store"
WRITE_ACK_SUCCESSOR = "1b. the successor's own write → acknowledged"
THROUGHPUT_ONE = "3a. pipelined acknowledged writes, one writer"
THROUGHPUT = "3b. pipelined acknowledged writes, 4 writers"
APPLY_OP = "4. apply_op on one key, 4 peers"
FAILOVER = "5a. failover: kill -9 host → first ack"
FAILOVER_SILENT = "5c. failover: host frozen (SIGSTOP) → first ack"
HANDOFF = "5b. handoff: host close() → first ack"
JOIN_BIG = f"6a. join a session of {BIG_KEYS:,} keys"
JOIN_BIG_SYNC = f"6b. join a session of {BIG_KEYS:,} keys, after discovery"
JOIN_LONE = "6c. join alone (becomes host)"
SCALE = f"7. write → visible, {SCALE_PEERS} peers x {SCALE_HZ} writes/s"
MEM_EMPTY = "8a. peak RSS, empty session"
MEM_BIG = f"8b. peak RSS, {BIG_KEYS:,} keys of {BIG_VALUE} bytes"
HOST_CPU = "9. host CPU per change, by session size"
#: Session sizes of the host CPU measurement, and idle peers per process.
CPU_SIZES, PEERS_PER_PROCESS = (2, 4, 8, 16, 32), 8


@dataclass(frozen=True)
class Config:
    rounds: int  # rounds of the cheap measurements (latencies, rates)
    slow_rounds: int  # rounds of those that start fresh sessions (failover, join, scale)
    raw_samples: int  # raw round trips per round
    raw_messages: int  # messages per round of the pipelined echo
    window: int  # messages in flight in the pipelined echo
    samples: int  # p2pstate writes per latency round
    syncobj_samples: int  # PySyncObj sync sets per round (each takes ~0.1-0.2 s)
    syncobj_incs: int  # PySyncObj async increments per round
    burst: int  # non-blocking writes per writer per round
    burst_window: int  # non-blocking writes between flush() calls
    increments: int  # apply_op increments per peer per round
    scale_seconds: float  # per round


FULL = Config(
    rounds=5,
    slow_rounds=3,
    raw_samples=5000,
    raw_messages=50_000,
    window=100,
    samples=1000,
    syncobj_samples=20,
    syncobj_incs=20_000,
    burst=2000,
    burst_window=2000,
    increments=200,
    scale_seconds=4,
)
QUICK = Config(
    rounds=1,
    slow_rounds=1,
    raw_samples=300,
    raw_messages=3000,
    window=100,
    samples=100,
    syncobj_samples=3,
    syncobj_incs=2000,
    burst=200,
    burst_window=200,
    increments=20,
    scale_seconds=1,
)


@dataclass
class Row:
    title: str
    result: str
    baseline: str = ""
    ratio: float | None = None
    target: str = ""
    met: bool | None = None
    how: str = ""  # what exactly was measured
    detail: str = ""  # figures behind the result: rounds, counts

    @property
    def verdict(self) -> str:
        return {True: "yes", False: "NO", None: "-"}[self.met]


@dataclass
class Context:
    """The run's settings, and the baselines the later rows are judged against."""

    cfg: Config
    app: str = field(default_factory=lambda: f"bench-{secrets.token_hex(4)}")
    rtt: Latency | None = None
    echo_rate: float = 0.0
    chain: Latency | None = None  # the limit of an acknowledged write (rows 1, 3)
    chain_rate: float = 0.0
    snapshot_transfer: float = 0.0
    syncobj_rate: float | None = None
    write_ack: Latency | None = None  # row 1, which rows 1s and 1d are judged against
    failed: list[str] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)  # markdown after the table

    def attempt(self, titles: Sequence[str], produce: Callable[[], list[Row]]) -> list[Row]:
        """The rows *produce* returns, or FAILED rows for *titles* if it raises:
        one failure costs only its own rows, and the run goes on."""
        try:
            return produce()
        except Exception as exc:  # noqa: BLE001 - reported in the table and on stderr
            traceback.print_exc()
            self.failed.extend(titles)
            why = f"{type(exc).__name__}: {exc}"
            return [
                Row(t, f"FAILED ({type(exc).__name__}; see stderr)", detail=why) for t in titles
            ]

    def session(self, label: str) -> str:
        """A session name never used before in this run."""
        return f"{label}-{secrets.token_hex(3)}"

    def vs_rtt(
        self,
        title: str,
        rounds: Sequence[Latency],
        how: str,
        *,
        max_ratio: float | None = None,
        by_p99: bool = False,
        extra: str = "",
    ) -> Row:
        """A latency row judged against the raw round trip: the median round
        (by p50, or by p99), and its p50 as a multiple of the raw p50."""
        assert self.rtt is not None
        got = median_round(rounds, by_p99=by_p99)
        ratio = got.p50 / self.rtt.p50
        per_round = ", ".join(f"{fmt_time(r.p50)}/{fmt_time(r.p99)}" for r in rounds)
        return Row(
            title,
            f"p50 {fmt_time(got.p50)}, p99 {fmt_time(got.p99)}",
            f"raw round trip p50 {fmt_time(self.rtt.p50)}",
            ratio,
            "" if max_ratio is None else f"p50 ≤ {max_ratio:g}x raw",
            None if max_ratio is None else ratio <= max_ratio,
            how=how,
            detail=f"{len(rounds)} rounds of {got.n}; p50/p99 per round: {per_round}{extra}",
        )


# ==================================================================== baseline


def message_sizes() -> tuple[int, int]:
    """Bytes on the wire of what one ``s["stamp"] = time.monotonic_ns()`` sends:
    the Write to the host, and the ChangeMsg the host sends every peer."""
    node, writer = secrets.token_hex(8), secrets.token_hex(8)
    ops = (("set", "stamp", time.monotonic_ns()),)
    write = Write(sender=writer, epoch=1, req=12345, acked_upto=12344, ops=ops, conds=())
    change = Change(seq=123456, epoch=1, origin=node, writer=writer, req=12345, ops=ops)
    change_msg = ChangeMsg(sender=node, epoch=1, change=change, ack=True)
    return len(to_frame(write)), len(to_frame(change_msg))


def echo_message(size: int) -> list[Any]:
    """An ``echo`` message that msgpack encodes in exactly *size* bytes."""
    for pad in range(size, -1, -1):
        msg = ["echo", ["x" * pad, 123456, 1]]
        if len(msgpack.packb(msg)) == size:
            return msg
    raise ValueError(f"can't make a {size}-byte message")


def big_state() -> dict[str, str]:
    """What ``fill`` writes: BIG_KEYS keys of BIG_VALUE-byte strings."""
    return {f"fill{i:06d}": "x" * BIG_VALUE for i in range(BIG_KEYS)}


@contextmanager
def dealer(endpoint: str) -> Iterator[zmq.Socket[bytes]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        yield sock
    finally:
        sock.close()
        ctx.term()


def round_trips(out: zmq.Socket[bytes], receive: Callable[[], bytes], msg: Any, n: int) -> Latency:
    """*n* messages one at a time: send on *out*, wait for *receive* to give
    the answer back (the echo's, or the chain's last relay's)."""
    samples = []
    for _ in range(n):
        start = time.monotonic_ns()
        out.send(msgpack.packb(msg))
        msgpack.unpackb(receive())
        samples.append(time.monotonic_ns() - start)
    return Latency.of_ns(samples)


def pipelined_rate(
    out: zmq.Socket[bytes], receive: Callable[[], bytes], msg: Any, n: int, window: int
) -> float:
    """*n* messages with *window* of them in flight: answers a second."""
    start = time.monotonic()
    sent = received = 0
    while received < n:
        while sent < n and sent - received < window:
            out.send(msgpack.packb(msg))
            sent += 1
        msgpack.unpackb(receive())
        received += 1
    return n / (time.monotonic() - start)


def raw_transfer(sock: zmq.Socket[bytes], data: Any) -> float:
    """Encode *data*, send it, have the far end decode it and say so."""
    start = time.monotonic()
    sock.send(msgpack.packb(["ack", data]))
    msgpack.unpackb(sock.recv())
    return time.monotonic() - start


def measure_baseline(ctx: Context) -> list[Row]:
    cfg = ctx.cfg
    write_size, change_size = message_sizes()
    msg = echo_message(change_size)
    data = big_state()
    with Group() as group:
        echo = group.start("worker_zmq.py")
        with dealer(echo.hello()["endpoint"]) as sock:
            round_trips(sock, sock.recv, msg, 200)  # warm up
            rtts = [round_trips(sock, sock.recv, msg, cfg.raw_samples) for _ in range(cfg.rounds)]
            rates = [
                pipelined_rate(sock, sock.recv, msg, cfg.raw_messages, cfg.window)
                for _ in range(cfg.rounds)
            ]
            transfers = [raw_transfer(sock, data) for _ in range(cfg.rounds)]
    ctx.rtt, ctx.echo_rate = median_round(rtts), median(rates)
    ctx.snapshot_transfer = median(transfers)
    sizes = f"{change_size}-byte msgpack messages (a write is a {write_size}-byte Write to the "
    sizes += f"host and a {change_size}-byte ChangeMsg to each peer)"
    return [
        Row(
            RAW_RTT,
            f"p50 {fmt_time(ctx.rtt.p50)}, p99 {fmt_time(ctx.rtt.p99)}",
            "(baseline)",
            1.0,
            how=f"DEALER → ROUTER echo in another process, one at a time, {sizes}; "
            "each end decodes and re-encodes with msgpack",
            detail=f"{len(rtts)} rounds of {ctx.rtt.n}",
        ),
        Row(
            RAW_RATE,
            fmt_rate(ctx.echo_rate, "msg"),
            "(baseline)",
            1.0,
            how=f"the same echo, {cfg.window} messages in flight, {cfg.raw_messages:,} a round",
            detail=_rounds_detail(rates, "msg"),
        ),
        Row(
            RAW_SNAPSHOT,
            fmt_time(ctx.snapshot_transfer),
            "(baseline)",
            1.0,
            how=f"msgpack-encode a dict of {BIG_KEYS:,} x {BIG_VALUE}-byte strings, send it, "
            "decode it in the echo process, get a short answer",
            detail=", ".join(fmt_time(t) for t in transfers),
        ),
    ]


def _rounds_detail(rates: Sequence[float], unit: str) -> str:
    return f"{len(rates)} rounds: " + ", ".join(fmt_rate(r, unit) for r in rates)


@contextmanager
def chain_ends(first: str) -> Iterator[tuple[zmq.Socket[bytes], zmq.Socket[bytes], str]]:
    """This process as the writer of the chain: a DEALER to the *first* relay
    and a ROUTER the last relay sends back to (its endpoint is the third item)."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    out, back = ctx.socket(zmq.DEALER), ctx.socket(zmq.ROUTER)
    for sock in (out, back):
        sock.setsockopt(zmq.LINGER, 0)
    back.bind("tcp://127.0.0.1:*")
    out.connect(first)
    endpoint = back.getsockopt(zmq.LAST_ENDPOINT)
    assert isinstance(endpoint, bytes)
    try:
        yield out, back, endpoint.decode()
    finally:
        out.close()
        back.close()
        ctx.term()


def measure_chain(ctx: Context) -> list[Row]:
    """The limit of an acknowledged write on this machine: writer -> host ->
    successor -> writer, three Python processes on pyzmq, each hop decoding
    the msgpack frame, encoding it again and sending it on."""
    cfg = ctx.cfg
    msg = echo_message(message_sizes()[1])
    with Group() as group:
        host, successor = group.start("worker_chain.py"), group.start("worker_chain.py")
        with chain_ends(host.hello()["endpoint"]) as (out, back, writer_endpoint):
            host.cmd("next", endpoint=successor.hello()["endpoint"])
            successor.cmd("next", endpoint=writer_endpoint)

            def answer() -> bytes:  # what the last relay sends back: [identity, frame]
                return back.recv_multipart()[1]

            round_trips(out, answer, msg, 200)  # warm up
            rounds = [round_trips(out, answer, msg, cfg.raw_samples) for _ in range(cfg.rounds)]
            rates = [
                pipelined_rate(out, answer, msg, cfg.raw_messages, cfg.window)
                for _ in range(cfg.rounds)
            ]
    ctx.chain, ctx.chain_rate = median_round(rounds), median(rates)
    assert ctx.rtt is not None
    return [
        Row(
            RAW_CHAIN,
            f"p50 {fmt_time(ctx.chain.p50)}, p99 {fmt_time(ctx.chain.p99)}",
            f"raw round trip p50 {fmt_time(ctx.rtt.p50)}",
            ctx.chain.p50 / ctx.rtt.p50,
            how="this process → relay → relay → this process, one message at a time, the "
            "messages of the round trip row; each relay is a Python process that decodes the "
            "msgpack frame, encodes it again and sends it on (writer → host → successor → "
            "writer, the path of an acknowledged write)",
            detail=f"{len(rounds)} rounds of {ctx.chain.n}; p50/p99 per round: "
            + ", ".join(f"{fmt_time(r.p50)}/{fmt_time(r.p99)}" for r in rounds),
        ),
        Row(
            RAW_CHAIN_RATE,
            fmt_rate(ctx.chain_rate, "msg"),
            f"raw echo {fmt_rate(ctx.echo_rate, 'msg')}",
            ctx.chain_rate / ctx.echo_rate,
            how=f"the same chain, {cfg.window} messages in flight, {cfg.raw_messages:,} a round",
            detail=_rounds_detail(rates, "msg"),
        ),
    ]


# ==================================================================== PySyncObj


def measure_pysyncobj(ctx: Context) -> list[Row]:
    try:
        version = importlib.metadata.version("pysyncobj")
    except importlib.metadata.PackageNotFoundError:
        missing = "not installed: pip install -e '.[bench]'"
        return [Row(SYNCOBJ_SET, missing), Row(SYNCOBJ_INC, missing)]
    cfg = ctx.cfg
    with Group() as group:
        ports = free_ports(3)
        nodes = [
            group.start("worker_syncobj.py", str(port), *(str(p) for p in ports if p != port))
            for port in ports
        ]
        states = gather(nodes, "wait_leader", within=30)
        leader = next(n for n, s in zip(nodes, states, strict=True) if s["leader"] == s["me"])
        follower = next(n for n in nodes if n is not leader)
        follower.cmd("latency", key="k", n=2)  # warm up
        latencies = [
            Latency.of_ns(follower.cmd("latency", key="k", n=cfg.syncobj_samples)["ns"])
            for _ in range(cfg.slow_rounds)
        ]
        rates = []
        for _ in range(cfg.rounds):
            done = leader.cmd("inc_rate", n=cfg.syncobj_incs, within=120, timeout=150)
            rates.append(done["ok"] / ((done["end"] - done["start"]) / 1e9))
    ctx.syncobj_rate = median(rates)
    return [
        ctx.vs_rtt(
            SYNCOBJ_SET,
            latencies,
            f"PySyncObj {version}, default settings, 3 nodes in 3 processes; "
            "blocking ReplDict.set from a follower (as p2pstate's writer is not the host). "
            "With its default appendEntriesUseBatch the leader sends new entries every "
            "appendEntriesPeriod (0.1 s), so this follows that period, not the network",
        ),
        Row(
            SYNCOBJ_INC,
            fmt_rate(ctx.syncobj_rate, "inc"),
            f"raw echo {fmt_rate(ctx.echo_rate, 'msg')}",
            ctx.syncobj_rate / ctx.echo_rate,
            how=f"{cfg.syncobj_incs:,} ReplCounter.inc(callback=...) on the leader (its best "
            "case: a follower forwards each one), until every callback has reported success",
            detail=_rounds_detail(rates, "inc"),
        ),
    ]


# ==================================================================== p2pstate


def start_peer(
    group: Group, ctx: Context, session: str, options: dict[str, Any] | None = None
) -> Worker:
    """A p2pstate peer with default options (or these) in its own process."""
    return group.start("worker_p2pstate.py", ctx.app, session, json.dumps(options or {}))


def start_session(
    group: Group, ctx: Context, session: str, count: int, *, together: bool = False
) -> list[Worker]:
    """*count* peers; the first hosts (it waits out discovery_window alone).
    The others join one by one, so the list is in succession order (host,
    successor, ...), or all at once if *together*."""
    host = start_peer(group, ctx, session)
    host.hello()
    others = []
    for _ in range(count - 1):
        others.append(start_peer(group, ctx, session))
        if not together:
            others[-1].hello()
    for peer in others:
        peer.hello()
    assert host.hello()["is_host"], "the first peer did not become host"
    return [host, *others]


def measure_p2pstate_session(ctx: Context) -> list[Row]:
    """Measurements 1 to 4 share one session: three peers, then a fourth."""
    session = ctx.session("writes")
    with Group() as group:
        host, successor, third = start_session(group, ctx, session, 3)
        rows = ctx.attempt([WRITE_ACK], lambda: [write_ack_latency(ctx, third)])
        rows += ctx.attempt([WRITE_ACK_SUCCESSOR], lambda: [successor_ack_latency(ctx, successor)])
        rows += ctx.attempt([WRITE_VISIBLE], lambda: [write_visible_latency(ctx, third, successor)])
        fourth = start_peer(group, ctx, session)
        fourth.hello()
        peers = [host, successor, third, fourth]
        rows += ctx.attempt(
            [THROUGHPUT_ONE], lambda: [write_throughput(ctx, [third], THROUGHPUT_ONE)]
        )
        rows += ctx.attempt([THROUGHPUT], lambda: [write_throughput(ctx, peers, THROUGHPUT)])
        rows += ctx.attempt([APPLY_OP], lambda: [apply_op_rate(ctx, peers)])
    return rows


def ack_rounds(ctx: Context, writer: Worker) -> list[Latency]:
    """Blocking writes from *writer*, one after another: a latency per round."""
    writer.cmd("latency", key="ack", n=100)  # warm up
    return [
        Latency.of_ns(writer.cmd("latency", key="ack", n=ctx.cfg.samples, timeout=120)["ns"])
        for _ in range(ctx.cfg.rounds)
    ]


def write_ack_latency(ctx: Context, writer: Worker) -> Row:
    rounds = ack_rounds(ctx, writer)
    assert ctx.chain is not None
    got = median_round(rounds)
    ratio = got.p50 / ctx.chain.p50
    ctx.write_ack = got
    return Row(
        WRITE_ACK,
        f"p50 {fmt_time(got.p50)}, p99 {fmt_time(got.p99)}",
        f"raw chain p50 {fmt_time(ctx.chain.p50)}",
        ratio,
        "p50 ≤ 1.5x raw chain",
        ratio <= 1.5,
        how="s[k] = v from the third peer (neither host nor successor), one after another: "
        "writer → host → successor → writer, 3 hops (the successor answers the writer)",
        detail=f"{len(rounds)} rounds of {got.n}; p50/p99 per round: "
        + ", ".join(f"{fmt_time(r.p50)}/{fmt_time(r.p99)}" for r in rounds),
    )


def successor_ack_latency(ctx: Context, successor: Worker) -> Row:
    return ctx.vs_rtt(
        WRITE_ACK_SUCCESSOR,
        ack_rounds(ctx, successor),
        "s[k] = v from the host's successor, one after another: successor → host → "
        "successor, 2 hops (in a game of two, every write of the player who is not host)",
        max_ratio=1.5,
    )


def write_ack_costs(ctx: Context) -> list[Row]:
    """Row 1 again in sessions with a secret (CurveZMQ on every hop) and with
    a durable store on the host (SQLite, synchronous=FULL: a sync per batch)."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="p2pstate-bench-") as tmp:
        variants = (
            (WRITE_ACK_SECRET, [{"secret": "bench secret"}] * 3, "every peer joins with secret="),
            (
                WRITE_ACK_STORE,
                [{"store": os.path.join(tmp, "host.db")}, {}, {}],
                "the host joins with store= (it syncs each batch before answering)",
            ),
        )
        for title, options, how in variants:
            rows += ctx.attempt([title], functools.partial(_ack_cost, ctx, title, options, how))
    return rows


def _ack_cost(ctx: Context, title: str, options: list[dict[str, Any]], how: str) -> list[Row]:
    session = ctx.session("cost")
    with Group() as group:
        peers = []
        for peer_options in options:  # host, successor, third, in that order
            peers.append(start_peer(group, ctx, session, peer_options))
            peers[-1].hello()
        assert peers[0].hello()["is_host"], "the first peer did not become host"
        rounds = ack_rounds(ctx, peers[2])  # the third peer, as in row 1
    got = median_round(rounds)
    assert ctx.write_ack is not None
    per_round = ", ".join(f"{fmt_time(r.p50)}/{fmt_time(r.p99)}" for r in rounds)
    return [
        Row(
            title,
            f"p50 {fmt_time(got.p50)}, p99 {fmt_time(got.p99)}",
            f"row 1 p50 {fmt_time(ctx.write_ack.p50)}",
            got.p50 / ctx.write_ack.p50,
            how=f"as row 1, but {how}",
            detail=f"{len(rounds)} rounds of {got.n}; p50/p99 per round: {per_round}",
        )
    ]


def write_visible_latency(ctx: Context, writer: Worker, watcher: Worker) -> Row:
    cfg = ctx.cfg
    rounds = []
    for _ in range(cfg.rounds):
        watcher.cmd("watch", prefix="stamp")
        writer.cmd("stamps", key="stamp", n=cfg.samples, timeout=120)
        rounds.append(Latency.of_ns(watcher.cmd("delays", count=cfg.samples, within=10)["ns"]))
    return ctx.vs_rtt(
        WRITE_VISIBLE,
        rounds,
        "s[k] = time.monotonic_ns() in the third peer, blocking, one after another; the "
        "second peer's on_change takes the difference (writer → host → watcher: 2 hops)",
        max_ratio=1.5,
    )


def burst_rates(ctx: Context, writers: list[Worker]) -> list[float]:
    """Each round: every writer makes cfg.burst non-blocking writes of distinct
    keys at once, then flush(); the writes over the time from the first write
    to the last flush."""
    cfg = ctx.cfg
    rates = []
    for _ in range(cfg.rounds):
        bursts = gather(
            writers,
            "burst",
            timeout=180,
            n=cfg.burst,
            window=cfg.burst_window,
            each=[{"key": f"w{i}"} for i in range(len(writers))],
        )
        elapsed = max(b["end"] for b in bursts) - min(b["start"] for b in bursts)
        rates.append(sum(b["n"] for b in bursts) / (elapsed / 1e9))
    return rates


def write_throughput(ctx: Context, writers: list[Worker], title: str) -> Row:
    """Pipelined acknowledged writes against the raw chain's pipelined rate:
    one writer ≥ 0.5x the chain and ≥ PySyncObj's async increments; several
    writers together ≥ 1x the chain."""
    cfg = ctx.cfg
    rates = burst_rates(ctx, writers)
    rate = median(rates)
    alone = len(writers) == 1
    share = 0.5 if alone else 1.0
    targets = [f"≥ {share:g}x raw chain ({rate / ctx.chain_rate:.2f}x)"]
    met = rate >= share * ctx.chain_rate
    if alone:
        if ctx.syncobj_rate is None:
            targets.append("≥ PySyncObj async (not measured)")
        else:
            targets.append(f"≥ PySyncObj async ({rate / ctx.syncobj_rate:.2f}x)")
            met = met and rate >= ctx.syncobj_rate
    who = "the third peer makes" if alone else f"{len(writers)} peers (the host too) each make"
    return Row(
        title,
        fmt_rate(rate, "write"),
        f"raw chain {fmt_rate(ctx.chain_rate, 'msg')}",
        rate / ctx.chain_rate,
        " and ".join(targets),
        met,
        how=f"{who} {cfg.burst:,} s.set(k, v, wait=False) of distinct keys (so none coalesce: "
        "each is ordered, replicated and acknowledged), then flush(), all at once; writes "
        "over the time from the first write to the last flush",
        detail=_rounds_detail(rates, "write"),
    )


def apply_op_rate(ctx: Context, peers: list[Worker]) -> Row:
    cfg = ctx.cfg
    rates, exact, retries = [], True, 0
    for _ in range(cfg.rounds):
        peers[0].cmd("set", key="counter", value=0)
        gather(peers, "wait", key="counter", value=0, within=10)
        runs = gather(peers, "incr", timeout=300, key="counter", n=cfg.increments)
        elapsed = max(r["end"] for r in runs) - min(r["start"] for r in runs)
        total = cfg.increments * len(peers)
        rates.append(total / (elapsed / 1e9))
        exact = exact and peers[0].cmd("get", key="counter")["value"] == total
        retries += sum(r["retries"] for r in runs)
    rate = median(rates)
    return Row(
        APPLY_OP,
        fmt_rate(rate, "incr"),
        f"raw echo {fmt_rate(ctx.echo_rate, 'msg')}",
        rate / ctx.echo_rate,
        "final count exact",
        exact,
        how=f"{len(peers)} peers each apply_op(k, n + 1) {cfg.increments} times on one key, "
        "all at once (compare-and-swap, retried on conflict)",
        detail=_rounds_detail(rates, "incr")
        + f"; {retries} conflicts retried; final count {'exact' if exact else 'WRONG'}",
    )


def time_to_new_host(ctx: Context, end_host: Callable[[Worker], int]) -> float:
    """Seconds from *end_host* (which returns when it acted, in monotonic ns)
    to the first write acknowledged by the new host, in a fresh session of 3
    whose third peer writes back to back throughout."""
    with Group() as group:
        host, _successor, writer = start_session(group, ctx, ctx.session(end_host.__name__), 3)
        old = host.hello()["id"]
        writer.send("write_until_new_host", key="failover", old_host=old, within=20)
        time.sleep(0.3)  # the writer is well into its loop
        ended = end_host(host)
        acked = int(writer.reply(30)["acked"])
    return (acked - ended) / 1e9


def kill_host(host: Worker) -> int:
    at = time.monotonic_ns()
    host.kill()
    return at


def close_host(host: Worker) -> int:
    return int(host.cmd("close", timeout=30)["start"])


def new_host_row(
    ctx: Context,
    title: str,
    end_host: Callable[[Worker], int],
    *,
    baseline: tuple[str, float],
    limit: float,
    how: str,
) -> Row:
    times = [time_to_new_host(ctx, end_host) for _ in range(ctx.cfg.slow_rounds)]
    got = median(times)
    return Row(
        title,
        fmt_time(got),
        f"{baseline[0]} {fmt_time(baseline[1])}",
        got / baseline[1],
        f"≤ {fmt_time(limit)}",
        got <= limit,
        how=how,
        detail=", ".join(fmt_time(t) for t in times),
    )


def failover_kill(ctx: Context) -> list[Row]:
    how = (
        "3 peers; os.kill(host pid, SIGKILL) while the third peer writes back to back; until "
        "its first write acknowledged by the new host"
    )
    host_timeout = ("host_timeout", DEFAULTS.host_timeout)
    return [new_host_row(ctx, FAILOVER, kill_host, baseline=host_timeout, limit=0.1, how=how)]


def stop_host(host: Worker) -> int:
    """SIGSTOP: a frozen machine or a pulled cable, silent; Group's SIGKILL ends it."""
    at = time.monotonic_ns()
    os.kill(host.pid, signal.SIGSTOP)
    return at


def failover_silent(ctx: Context) -> list[Row]:
    how = (
        "3 peers; os.kill(host pid, SIGSTOP) while the third peer writes back to back; until "
        "its first write acknowledged by the new host. A frozen host sends nothing and resets "
        "nothing, so only its silence tells: host_timeout is the floor"
    )
    host_timeout = ("host_timeout", DEFAULTS.host_timeout)
    return [
        new_host_row(ctx, FAILOVER_SILENT, stop_host, baseline=host_timeout, limit=1.0, how=how)
    ]


def graceful_handoff(ctx: Context) -> list[Row]:
    how = (
        "3 peers; the host's s.close() while the third peer writes back to back; from the "
        "call to close() to the third peer's first write acknowledged by the new host"
    )
    assert ctx.rtt is not None
    rtt = ("raw round trip p50", ctx.rtt.p50)
    return [new_host_row(ctx, HANDOFF, close_host, baseline=rtt, limit=0.050, how=how)]


def join_and_memory(ctx: Context) -> list[Row]:
    """Measurements 6 and 8 share their sessions: a lone peer hosts, fills
    BIG_KEYS keys, and a second peer joins."""
    lone, joined = [], []
    for _ in range(ctx.cfg.slow_rounds):
        with Group() as group:
            session = ctx.session("join")
            host = start_peer(group, ctx, session)
            lone.append(host.hello())
            host.cmd("fill", count=BIG_KEYS, size=BIG_VALUE, batch=500, timeout=120)
            joiner = start_peer(group, ctx, session)
            joined.append(joiner.hello())
            assert joined[-1]["keys"] >= BIG_KEYS, "the new peer did not get every key"
    return join_rows(ctx, lone, joined) + memory_rows(lone, joined)


def _median_of(hellos: list[dict[str, Any]], what: Callable[[dict[str, Any]], float]) -> float:
    return median([what(h) for h in hellos])


def join_rows(ctx: Context, lone: list[dict[str, Any]], joined: list[dict[str, Any]]) -> list[Row]:
    window = DEFAULTS.discovery_window
    total = _median_of(joined, lambda h: h["join_s"])
    after = _median_of(joined, lambda h: h["join_s"] - h["discovery_s"])
    alone = _median_of(lone, lambda h: h["join_s"])
    alone_after = _median_of(lone, lambda h: h["join_s"] - h["discovery_s"])
    big = f"{BIG_KEYS:,} keys of {BIG_VALUE} bytes"
    return [
        Row(
            JOIN_BIG,
            fmt_time(total),
            f"discovery_window {fmt_time(window)}",
            total / window,
            how=f"join() in a new process, into a session holding {big}: mDNS finds the "
            "host (browsing stops at the first answer), then hello, welcome and snapshot",
            detail=", ".join(fmt_time(h["join_s"]) for h in joined),
        ),
        Row(
            JOIN_BIG_SYNC,
            fmt_time(after),
            f"raw snapshot transfer {fmt_time(ctx.snapshot_transfer)}",
            after / ctx.snapshot_transfer,
            how="the same join() less the time spent browsing mDNS",
            detail=", ".join(fmt_time(h["join_s"] - h["discovery_s"]) for h in joined),
        ),
        Row(
            JOIN_LONE,
            fmt_time(alone),
            f"discovery_window {fmt_time(window)}",
            alone / window,
            how="join() of the first peer of a session: it listens for a host for the whole "
            f"discovery_window, then hosts; {fmt_time(alone_after)} of it is after discovery",
            detail=", ".join(fmt_time(h["join_s"]) for h in lone),
        ),
    ]


def memory_rows(lone: list[dict[str, Any]], joined: list[dict[str, Any]]) -> list[Row]:
    def bytes_of(hellos: list[dict[str, Any]], name: str) -> float:
        return median([h[name] for h in hellos])

    imports = bytes_of(lone, "peak_rss_before")
    empty, big = bytes_of(lone, "peak_rss"), bytes_of(joined, "peak_rss")
    now = (
        f"resident now: {fmt_bytes(bytes_of(lone, 'rss_before'))} before join(), "
        f"{fmt_bytes(bytes_of(lone, 'rss'))} after"
    )
    return [
        Row(
            MEM_EMPTY,
            fmt_bytes(empty),
            f"before join() {fmt_bytes(imports)}",
            empty / imports,
            how="ru_maxrss of the lone peer (the host) right after join(); the baseline is its "
            "own ru_maxrss before join(), with p2pstate and zeroconf imported (join() imports "
            "zmq)",
            detail=now,
        ),
        Row(
            MEM_BIG,
            fmt_bytes(big),
            f"empty session {fmt_bytes(empty)}",
            big / empty,
            how=f"ru_maxrss of the peer that joined a session of {BIG_KEYS:,} keys of "
            f"{BIG_VALUE} bytes ({fmt_bytes(BIG_KEYS * BIG_VALUE)} of values), right after "
            "join()",
            detail=f"{fmt_bytes(big - empty)} more than an empty session; resident now: "
            f"{fmt_bytes(bytes_of(joined, 'rss'))}",
        ),
    ]


def scale(ctx: Context) -> list[Row]:
    cfg = ctx.cfg
    rounds, delivered, expected = [], 0, 0
    with Group() as group:
        peers = start_session(group, ctx, ctx.session("scale"), SCALE_PEERS, together=True)
        keys = [f"pos-{i}" for i in range(len(peers))]
        for _ in range(cfg.slow_rounds):
            gather(peers, "watch", prefix="pos-", each=[{"ignore": key} for key in keys])
            ticks = gather(
                peers,
                "tick",
                timeout=cfg.scale_seconds + 60,
                hz=SCALE_HZ,
                seconds=cfg.scale_seconds,
                each=[{"key": key} for key in keys],
            )
            written = [t["n"] for t in ticks]
            seen = gather(
                peers,
                "delays",
                each=[{"count": sum(written) - n, "within": 5} for n in written],
            )
            delays = [ns for s in seen for ns in s["ns"]]
            delivered += len(delays)
            expected += sum(written) * (len(peers) - 1)
            rounds.append(Latency.of_ns(delays))
    return [
        ctx.vs_rtt(
            SCALE,
            rounds,
            f"{SCALE_PEERS} peers in {SCALE_PEERS} processes, each "
            f"s.set(own key, time.monotonic_ns(), wait=False) {SCALE_HZ} times a second "
            f"for {cfg.scale_seconds:g} s; every other peer's on_change takes the difference. "
            "The round reported is the one with the median p99",
            by_p99=True,
            extra=f"; {delivered:,} of {expected:,} deliveries seen",
        )
    ]


def host_cpu(ctx: Context) -> list[Row]:
    """Host CPU time per applied change as the session grows: a host, a
    writer, and idle peers as threads of a few processes."""
    cfg = ctx.cfg
    per_change: dict[int, float] = {}
    with Group() as group:
        session = ctx.session("cpu")
        host, writer = start_session(group, ctx, session, 2)
        idle: list[tuple[Worker, int]] = []  # (process, peers it holds)
        for size in CPU_SIZES:
            _add_idle(group, ctx, session, idle, size - 2 - sum(n for _, n in idle))
            _wait_peers(host, size)
            rounds = []
            for _ in range(cfg.rounds):
                before = host.cmd("cpu")["cpu_ns"]
                writer.cmd(
                    "burst", key=f"cpu{size}_", n=cfg.burst, window=cfg.burst_window, timeout=180
                )
                rounds.append((host.cmd("cpu")["cpu_ns"] - before) / 1e9 / cfg.burst)
            per_change[size] = median(rounds)
    slope = _slope(per_change)
    figures = ", ".join(f"{n} peers {per_change[n] * 1e6:.1f} µs" for n in CPU_SIZES)
    return [
        Row(
            HOST_CPU,
            f"{slope * 1e6:.2f} µs per extra peer per change",
            f"{CPU_SIZES[0]} peers {per_change[CPU_SIZES[0]] * 1e6:.1f} µs per change",
            slope / per_change[CPU_SIZES[0]],
            "≤ 5 µs per extra peer",
            slope <= 5e-6,
            how=f"the host's process CPU time (all its threads) over {cfg.burst:,} pipelined "
            "writes of distinct keys by one peer, divided by the writes, at "
            + ", ".join(str(n) for n in CPU_SIZES)
            + f" peers (a host, the writer, and idle peers as threads of processes of up to "
            f"{PEERS_PER_PROCESS} peers each); the result is the least-squares slope",
            detail=figures,
        )
    ]


def _add_idle(
    group: Group, ctx: Context, session: str, idle: list[tuple[Worker, int]], count: int
) -> None:
    """*count* more idle peers: threads of the last process while it has
    room (PEERS_PER_PROCESS), else a new process."""
    while count > 0:
        if not idle or idle[-1][1] >= PEERS_PER_PROCESS:
            worker = start_peer(group, ctx, session)
            worker.hello()
            idle.append((worker, 1))
            count -= 1
            continue
        worker, held = idle[-1]
        more = min(count, PEERS_PER_PROCESS - held)
        worker.cmd("add_peers", n=more, timeout=120)
        idle[-1] = (worker, held + more)
        count -= more


def _wait_peers(host: Worker, count: int, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while host.cmd("info")["peers"] < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the session did not reach {count} peers")
        time.sleep(0.05)


def _slope(points: dict[int, float]) -> float:
    """The least-squares slope of y over x."""
    xs, ys = list(points), list(points.values())
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )


def where_time_goes(ctx: Context) -> list[Row]:
    """No row: the per-hop breakdown and CPU profile, a section of BENCHMARKS.md."""
    assert ctx.chain is not None
    with Group() as group:
        host, successor, writer = start_session(group, ctx, ctx.session("breakdown"), 3)
        ctx.sections += breakdown.measure(
            {"W": writer, "H": host, "S": successor},
            writes=max(50, ctx.cfg.samples // 3),
            burst=ctx.cfg.burst,
            chain_p50=ctx.chain.p50,
        )
    return []


# ==================================================================== the run


@dataclass(frozen=True)
class Measurement:
    run: Callable[[Context], list[Row]]
    titles: tuple[str, ...]  # the rows it reports, in order


MEASUREMENTS = (
    Measurement(measure_baseline, (RAW_RTT, RAW_RATE, RAW_SNAPSHOT)),
    Measurement(measure_chain, (RAW_CHAIN, RAW_CHAIN_RATE)),
    Measurement(measure_pysyncobj, (SYNCOBJ_SET, SYNCOBJ_INC)),
    Measurement(
        measure_p2pstate_session,
        (WRITE_ACK, WRITE_ACK_SUCCESSOR, WRITE_VISIBLE, THROUGHPUT_ONE, THROUGHPUT, APPLY_OP),
    ),
    Measurement(write_ack_costs, (WRITE_ACK_SECRET, WRITE_ACK_STORE)),
    Measurement(failover_kill, (FAILOVER,)),
    Measurement(failover_silent, (FAILOVER_SILENT,)),
    Measurement(graceful_handoff, (HANDOFF,)),
    Measurement(join_and_memory, (JOIN_BIG, JOIN_BIG_SYNC, JOIN_LONE, MEM_EMPTY, MEM_BIG)),
    Measurement(scale, (SCALE,)),
    Measurement(host_cpu, (HOST_CPU,)),
    Measurement(where_time_goes, ()),
)
#: Every row, in the order of the table.
TITLES = (
    RAW_RTT,
    RAW_RATE,
    RAW_SNAPSHOT,
    RAW_CHAIN,
    RAW_CHAIN_RATE,
    SYNCOBJ_SET,
    SYNCOBJ_INC,
    WRITE_ACK,
    WRITE_ACK_SUCCESSOR,
    WRITE_ACK_SECRET,
    WRITE_ACK_STORE,
    WRITE_VISIBLE,
    THROUGHPUT_ONE,
    THROUGHPUT,
    APPLY_OP,
    FAILOVER,
    FAILOVER_SILENT,
    HANDOFF,
    JOIN_BIG,
    JOIN_BIG_SYNC,
    JOIN_LONE,
    SCALE,
    MEM_EMPTY,
    MEM_BIG,
    HOST_CPU,
)
assert sorted(TITLES) == sorted(t for m in MEASUREMENTS for t in m.titles)


def run_all(ctx: Context, only: Collection[str] = ()) -> list[Row]:
    """Every measurement in turn (or those named in *only*); the rows in TITLES order."""
    rows: dict[str, Row] = {}
    for measurement in MEASUREMENTS:
        if only and measurement.run.__name__ not in only:
            continue
        print(f"... {measurement.run.__name__}", file=sys.stderr, flush=True)
        started = time.monotonic()
        for row in ctx.attempt(measurement.titles, functools.partial(measurement.run, ctx)):
            rows[row.title] = row
        print(f"    {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    return [rows[title] for title in TITLES if title in rows]


# ==================================================================== output

COLUMNS = ("measurement", "result", "baseline", "x baseline", "target", "met")


def cells(row: Row) -> tuple[str, ...]:
    ratio = "" if row.ratio is None else f"{row.ratio:,.2f}x"
    return (row.title, row.result, row.baseline, ratio, row.target, row.verdict)


def text_table(rows: list[Row]) -> str:
    table = [COLUMNS, *(cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def markdown_table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def environment() -> dict[str, str]:
    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    rev = subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    return {
        "commit": rev.stdout.strip() or "unknown",
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cores": str(os.cpu_count()),
        "pyzmq": f"{zmq.__version__} (libzmq {zmq.zmq_version()})",
        "msgpack": version("msgpack"),
        "pysyncobj": version("pysyncobj"),
    }


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def markdown(rows: list[Row], ctx: Context, env: dict[str, str], meta: dict[str, str]) -> str:
    cfg = ctx.cfg
    missed = [r for r in rows if r.met is False]
    out = [
        "# Benchmarks",
        "",
        "Made by `python benchmarks/run.py` (see its docstring); run it again to refresh "
        "this file. Every process runs on this one machine and talks over loopback "
        "(127.0.0.1). Every figure was taken in the same run as its baseline, a raw pyzmq "
        "round trip with messages of the size p2pstate sends. Each measurement ran "
        f"{cfg.rounds} rounds ({cfg.slow_rounds} for those that start fresh sessions: "
        "PySyncObj's sync set, failover, handoff, join, memory, scale); the median round is "
        "reported, for latencies the round with the median p50, with its own p99. "
        "p2pstate runs with its default options "
        f"(heartbeat_interval {DEFAULTS.heartbeat_interval} s, host_timeout "
        f"{DEFAULTS.host_timeout} s, discovery_window {DEFAULTS.discovery_window} s).",
        "",
        f"Run: {meta['mode']}, {meta['date']}, {meta['duration']}; load average "
        f"{meta['load_before']} before, {meta['load_after']} after.",
        "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in env.items()) + ".",
        "",
        markdown_table(rows),
        "",
        "## Targets missed",
        "",
        *([f"- {r.title}: {r.result}; target {r.target}." for r in missed] or ["None."]),
        "",
        "## What each row measures",
        "",
        *[f"- **{r.title}**: {r.how}." + (f" ({r.detail})" if r.detail else "") for r in rows],
        "",
        *ctx.sections,
    ]
    findings = ROOT / "benchmarks" / "findings.md"
    if findings.exists():  # hand-written, kept across runs
        out += ["", findings.read_text().split("-->", 1)[-1].strip(), ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run (~1 minute)")
    parser.add_argument("--no-write", action="store_true", help="don't write BENCHMARKS.md")
    names = ", ".join(m.run.__name__ for m in MEASUREMENTS)
    parser.add_argument(
        "--only",
        default="",
        help=f"comma-separated measurements to run, of: {names} (the later ones need "
        "measure_baseline and measure_chain for their ratios); implies --no-write",
    )
    args = parser.parse_args(argv)
    only = {name for name in args.only.split(",") if name}
    if unknown := only - {m.run.__name__ for m in MEASUREMENTS}:
        parser.error(f"no measurement named {', '.join(sorted(unknown))}")
    # A SIGTERM unwinds like Ctrl-C, so every worker is stopped by the harness.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.environ["P2PSTATE_INTERFACES"] = "127.0.0.1"
    # Every peer's identity in a throwaway directory: a benchmark run never
    # writes to the user's config directory (see p2pstate.identity).
    home = tempfile.TemporaryDirectory(prefix="p2pstate-bench-home-")
    os.environ["P2PSTATE_HOME"] = home.name
    ctx = Context(QUICK if args.quick else FULL)
    meta = {
        "mode": "quick smoke run (not for comparison)" if args.quick else "full run",
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "load_before": load(),
    }
    started = time.monotonic()
    rows = run_all(ctx, only)
    meta["duration"] = f"{time.monotonic() - started:.0f} s"
    meta["load_after"] = load()
    print(text_table(rows))
    print("\n".join(ctx.sections))
    print(
        f"\n{meta['mode']}: {meta['duration']}; load average {meta['load_before']} → "
        f"{meta['load_after']}"
    )
    if not args.no_write and not only:  # a partial run never replaces the full table
        path = ROOT / "BENCHMARKS.md"
        path.write_text(markdown(rows, ctx, environment(), meta))
        print(f"wrote {path}")
    home.cleanup()
    return 1 if ctx.failed else 0


if __name__ == "__main__":
    sys.exit(main())
