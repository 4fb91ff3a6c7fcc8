"""A p2pstate peer for the benchmarks, in its own process.

    python benchmarks/worker_p2pstate.py APP SESSION '{"option": value}'

Joins on loopback, then prints one JSON line: who it is, how long ``join``
took (and how much of that was mDNS discovery), and its peak RSS before and
after joining. Each JSON command line on stdin gets one JSON reply line.
Times are ``time.monotonic_ns()``, which every process on Linux shares.
"""

from __future__ import annotations

import cProfile
import json
import os
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import tracer
from harness import serve

import p2pstate
from p2pstate.discovery import Discovery


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def rss_bytes() -> int:
    """The resident set now (Linux), beside the peak."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def timed_discovery() -> Callable[[], float]:
    """Count the seconds ``join`` spends browsing mDNS (the rest is the
    protocol: hello, welcome, snapshot)."""
    spent = [0.0]
    browse = Discovery.browse

    def timed(self: Discovery, *args: Any, **kwargs: Any) -> Any:
        start = time.monotonic()
        try:
            return browse(self, *args, **kwargs)
        finally:
            spent[0] += time.monotonic() - start

    Discovery.browse = timed  # type: ignore[method-assign]
    return lambda: spent[0]


class Watch:
    """Record, on the I/O thread, how long ago each int stamp written under
    *prefix* by another peer was taken."""

    def __init__(self) -> None:
        self.prefix: str | None = None
        self.ignore = ""
        self.delays: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, event: p2pstate.Event) -> None:
        now = time.monotonic_ns()
        if not isinstance(event, p2pstate.KeyChanged) or self.prefix is None:
            return
        if event.key.startswith(self.prefix) and event.key != self.ignore:
            with self.lock:
                self.delays.append(now - event.value)

    def start(self, prefix: str, ignore: str) -> None:
        with self.lock:
            self.prefix, self.ignore, self.delays = prefix, ignore, []

    def take(self, count: int, within: float) -> list[int]:
        deadline = time.monotonic() + within
        while len(self.delays) < count and time.monotonic() < deadline:
            time.sleep(0.005)
        with self.lock:
            self.prefix, delays, self.delays = None, self.delays, []
        return delays


class Peer:
    def __init__(self, s: p2pstate.SharedState) -> None:
        self.s = s
        self.watch = Watch()
        self.extra: list[p2pstate.SharedState] = []
        self.sampler: tracer.Sampler | None = None
        self.profile: cProfile.Profile | None = None
        self.counts: tuple[dict[str, int], dict[str, int], dict[str, Any]] = ({}, {}, {})
        s.on_change(self.watch)

    def op_info(self) -> dict[str, Any]:
        host = self.s.host
        return {
            "pid": os.getpid(),
            "id": self.s.me.id,
            "is_host": self.s.is_host,
            "host": host.id if host else None,
            "epoch": self.s.epoch,
            "peers": len(self.s.peers),
            "keys": len(self.s),
        }

    # -------------------------------------------------------- measurements

    def op_latency(self, key: str, n: int) -> dict[str, Any]:
        """Blocking writes one after another: how long each took to be acknowledged."""
        samples = []
        for i in range(n):
            start = time.monotonic_ns()
            self.s[key] = i
            samples.append(time.monotonic_ns() - start)
        return {"ns": samples}

    def op_stamps(self, key: str, n: int) -> dict[str, Any]:
        """Blocking writes of the time they were made, for a watcher elsewhere."""
        for _ in range(n):
            self.s[key] = time.monotonic_ns()
        return {"n": n}

    def op_watch(self, prefix: str, ignore: str = "") -> dict[str, Any]:
        self.watch.start(prefix, ignore)
        return {"watching": prefix}

    def op_delays(self, count: int, within: float) -> dict[str, Any]:
        return {"ns": self.watch.take(count, within)}

    def op_burst(self, key: str, n: int, window: int) -> dict[str, Any]:
        """*n* non-blocking writes of *distinct* keys (so none coalesce: every
        one is ordered, replicated and acknowledged), with a flush() after
        every *window* of them and at the end: when was the last one
        acknowledged?"""
        start = time.monotonic_ns()
        for i in range(n):
            self.s.set(f"{key}{i}", i, wait=False)
            if (i + 1) % window == 0:
                self.s.flush(timeout=120)
        self.s.flush(timeout=120)
        return {"start": start, "end": time.monotonic_ns(), "n": n}

    def op_incr(self, key: str, n: int) -> dict[str, Any]:
        retries = self.s.stats.get("apply_op_retries", 0)
        start = time.monotonic_ns()
        for _ in range(n):
            self.s.apply_op(key, lambda v: v + 1)
        return {
            "start": start,
            "end": time.monotonic_ns(),
            "retries": self.s.stats.get("apply_op_retries", 0) - retries,
        }

    def op_set(self, key: str, value: Any) -> dict[str, Any]:
        self.s[key] = value
        return {"ok": True}

    def op_wait(self, key: str, value: Any, within: float) -> dict[str, Any]:
        """Until this replica holds *value* at *key*."""
        deadline = time.monotonic() + within
        while self.s.get(key) != value:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{key!r} is {self.s.get(key)!r}, not {value!r}")
            time.sleep(0.002)
        return {"value": value}

    def op_get(self, key: str) -> dict[str, Any]:
        return {"value": self.s.get(key)}

    def op_fill(self, count: int, size: int, batch: int) -> dict[str, Any]:
        """*count* keys holding *size*-byte strings, written *batch* keys per change."""
        value = "x" * size
        for first in range(0, count, batch):
            self.s.update({f"fill{i:06d}": value for i in range(first, min(count, first + batch))})
        return {"keys": len(self.s)}

    def op_tick(self, key: str, hz: float, seconds: float) -> dict[str, Any]:
        """A game loop: write a stamp *hz* times a second without waiting."""
        period_ns = int(1e9 / hz)
        start = time.monotonic_ns()
        count = 0
        for due in _ticks(start, period_ns, int(seconds * hz)):
            time.sleep(max(0, due - time.monotonic_ns()) / 1e9)
            self.s.set(key, time.monotonic_ns(), wait=False)
            count += 1
        self.s.flush(timeout=30)
        return {"n": count}

    def op_write_until_new_host(self, key: str, old_host: str, within: float) -> dict[str, Any]:
        """Blocking writes back to back until one is acknowledged by a host
        other than *old_host*: when was that?"""
        deadline = time.monotonic() + within
        writes = 0
        while time.monotonic() < deadline:
            self.s[key] = writes
            acked = time.monotonic_ns()
            writes += 1
            host = self.s.host
            if host is not None and host.id != old_host:
                return {"acked": acked, "writes": writes, "host": host.id}
        raise TimeoutError(f"no write acknowledged by a new host within {within} s")

    def op_trace_start(self) -> dict[str, Any]:
        tracer.start()
        return {"tracing": True}

    def op_trace_stop(self) -> dict[str, Any]:
        return {"records": tracer.stop()}

    def op_traced_writes(self, key: str, n: int, gap: float) -> dict[str, Any]:
        """Blocking writes one after another, *gap* seconds apart (so that
        each one's records stand alone): when each started and returned."""
        spans = []
        for i in range(n):
            start = time.monotonic_ns()
            self.s[key] = i
            spans.append((start, time.monotonic_ns()))
            time.sleep(gap)
        return {"spans": spans}

    def op_sample_start(self) -> dict[str, Any]:
        self.sampler = tracer.Sampler("p2pstate-io-")
        return {"sampling": True}

    def op_sample_stop(self) -> dict[str, Any]:
        assert self.sampler is not None
        sampled, self.sampler = self.sampler.stop(), None
        return sampled

    def op_cpu(self) -> dict[str, Any]:
        """CPU time this process has used (every thread: the I/O thread too)."""
        return {"cpu_ns": time.process_time_ns(), "peers": len(self.s.peers)}

    def op_threads(self) -> dict[str, Any]:
        """CPU time of each thread of this process so far, by name: Python's
        threads by their own names, zmq's by the names they give the kernel."""
        return {
            "cpu_ns": thread_cpu_ns(),
            "process_ns": time.process_time_ns(),
            "stats": self.s.stats,
        }

    def op_profile_start(self) -> dict[str, Any]:
        """Profile the I/O thread (cProfile, by that thread's CPU time)."""
        self.profile = cProfile.Profile(time.thread_time)
        self.s._rt.run_on_io(self.profile.enable, 5.0)
        return {"profiling": True}

    def op_profile_stop(self, path: str) -> dict[str, Any]:
        """Stop the profile and write it to *path* (``pstats`` reads it)."""
        assert self.profile is not None
        self.s._rt.run_on_io(self.profile.disable, 5.0)
        self.profile.dump_stats(path)
        self.profile = None
        return {"path": path}

    def op_count_start(self) -> dict[str, Any]:
        """Count the messages the core takes in and sends out, by type, and
        the frames it sends (the pipelined rows' per-write breakdown)."""
        node = self.s._rt.node
        received: dict[str, int] = {}
        sent: dict[str, int] = {}
        receive, take_outbox = node.receive, node.take_outbox

        def counted_receive(msg: Any, now: float) -> None:
            name = type(msg).__name__
            received[name] = received.get(name, 0) + 1
            receive(msg, now)

        def counted_take() -> Any:
            sends = take_outbox()
            for send in sends:
                name = type(send.msg).__name__
                sent[name] = sent.get(name, 0) + 1
            return sends

        def install() -> None:
            node.receive, node.take_outbox = counted_receive, counted_take  # type: ignore[method-assign]
            self.counts = (received, sent, dict(self.s.stats))

        self.s._rt.run_on_io(install, 5.0)
        return {"counting": True}

    def op_count_stop(self) -> dict[str, Any]:
        node = self.s._rt.node

        def uninstall() -> None:
            del node.receive, node.take_outbox  # back to the class's methods

        self.s._rt.run_on_io(uninstall, 5.0)
        received, sent, before = self.counts
        stats = {k: v - before.get(k, 0) for k, v in self.s.stats.items() if isinstance(v, int)}
        return {"received": received, "sent": sent, "stats": stats}

    def op_add_peers(self, n: int) -> dict[str, Any]:
        """Join *n* more idle peers of this session, each a SharedState (with
        its own I/O thread) in this process: many players on few processes."""
        for _ in range(n):
            self.extra.append(
                p2pstate.join(self.s.app, self.s.session, name=f"idle{os.getpid()}", timeout=30.0)
            )
        return {"extra": len(self.extra)}

    def op_close(self) -> dict[str, Any]:
        start = time.monotonic_ns()
        for extra in self.extra:
            extra.close(timeout=1.0)
        self.s.close()
        return {"start": start, "end": time.monotonic_ns()}


def thread_cpu_ns() -> dict[str, int]:
    """Each thread's user + system CPU from /proc (clock ticks), summed by name."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    tick_ns = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    out: dict[str, int] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        name = names.get(int(tid), comm)
        if name.startswith("p2pstate-"):  # "p2pstate-io-<node id>": what, not whose
            name = "-".join(name.split("-")[:2])
        out[name] = out.get(name, 0) + (int(fields[11]) + int(fields[12])) * tick_ns
    return out


def _ticks(start: int, period: int, count: int) -> Iterator[int]:
    offset = (os.getpid() * 7919) % period  # spread the peers' ticks over the period
    return (start + offset + i * period for i in range(count))


def main() -> None:
    app, session = sys.argv[1], sys.argv[2]
    options: dict[str, Any] = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    discovery_time = timed_discovery()
    rss_before = (peak_rss_bytes(), rss_bytes())
    start = time.monotonic()
    s = p2pstate.join(app, session, name=f"bench{os.getpid()}", timeout=30.0, **options)
    joined = time.monotonic() - start
    peer = Peer(s)
    hello = {
        **peer.op_info(),
        "join_s": joined,
        "discovery_s": discovery_time(),
        "peak_rss_before": rss_before[0],
        "rss_before": rss_before[1],
        "peak_rss": peak_rss_bytes(),
        "rss": rss_bytes(),
    }
    if not serve(peer, hello):
        s.close(timeout=1.0)  # the harness went away


if __name__ == "__main__":
    main()
