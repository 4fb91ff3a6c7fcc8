"""Where user code meets the I/O thread, with real sessions on loopback.

Callbacks run on a thread of their own (a write, flush() or close() inside
one completes, a slow one stops no heartbeat); reads see one moment even
while another peer churns keys; flush() raises once the session is closed;
non-blocking writes of one writer keep their order across keys.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import pytest
from netkit import Join, eventually

import p2pstate
from p2pstate import KeyChanged, SessionClosedError
from p2pstate.events import Event


def test_a_blocking_write_inside_a_callback_completes_and_keeps_the_host(join: Join) -> None:
    a = join()
    b = join()
    errors: list[BaseException] = []

    def echo(event: Event) -> None:
        if isinstance(event, KeyChanged) and event.key == "ping":
            try:
                a["echo"] = event.value  # blocking: waits for its acknowledgement
            except Exception as exc:  # noqa: BLE001 (reported below)
                errors.append(exc)

    a.on_change(echo)
    b["ping"] = 1
    # Well under write_timeout (10 s): the write does not wait for a timeout.
    eventually(lambda: b.get("echo") == 1, timeout=4.0)
    b["ping"] = 2
    eventually(lambda: b.get("echo") == 2, timeout=4.0)
    assert errors == []
    assert a.is_host and b.host is not None and b.host.id == a.me.id
    assert a.epoch == b.epoch == 1  # no failover


def test_flush_and_close_inside_a_callback(join: Join) -> None:
    a = join()
    b = join()
    done = threading.Event()

    def leave(event: Event) -> None:
        if isinstance(event, KeyChanged) and event.key == "bye":
            b.set("last", 1, wait=False)
            b.flush()
            b.close()
            done.set()

    b.on_change(leave)
    a["bye"] = True
    assert done.wait(5.0)
    assert b.closed
    assert a.get("last") == 1  # flushed before it left
    # Everything b held is released by its own close(): no zmq context left.
    eventually(lambda: b._rt._ctx.closed, timeout=3.0)
    eventually(lambda: [p.name for p in a.peers] == [a.me.name], timeout=3.0)


def test_a_slow_callback_stops_no_heartbeat(join: Join) -> None:
    a = join()
    b = join()
    slow = threading.Event()

    def dawdle(event: Event) -> None:
        if isinstance(event, KeyChanged) and event.key == "slow":
            slow.set()
            time.sleep(2.0)  # four host_timeouts

    a.on_change(dawdle)
    b["slow"] = 1
    assert slow.wait(3.0)
    b["during"] = 1  # answered by the host while its callback sleeps
    time.sleep(2.2)
    assert a.is_host and a.epoch == b.epoch == 1
    assert b.stats.get("host_lost", 0) == 0


def test_a_callback_that_raises_is_counted_and_the_next_one_runs(join: Join) -> None:
    a = join()
    seen: list[Any] = []

    def broken(event: Event) -> None:
        raise ValueError("a bug in the game")

    a.on_change(broken)
    a.on_change(lambda event: seen.append(getattr(event, "key", None)))
    a["x"] = 1
    a["y"] = 2
    eventually(lambda: seen[-2:] == ["x", "y"])
    assert a.stats["callback_errors"] >= 2
    a["z"] = 3  # the session goes on


def test_whole_dict_reads_see_one_moment_under_churn(join: Join) -> None:
    reader = join()
    writer = join()
    keys = [f"k{i}" for i in range(100)]
    stop = threading.Event()

    def churn() -> None:
        generation = 0
        while not stop.is_set():
            generation += 1
            writer.update({k: generation for k in keys})  # one change
            with writer.transaction() as t:  # deletes them all in one change
                for k in keys:
                    del t[k]

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        eventually(lambda: len(reader) > 0)
        shapes = set()
        for _ in range(3000):
            for whole in (dict(reader), dict(reader.items()), reader.copy()):
                # Empty, or every key of one generation: never a mix.
                assert whole == {} or (len(whole) == len(keys) and len(set(whole.values())) == 1)
                shapes.add(bool(whole))
            values = list(reader.values())
            assert values == [] or len(set(values)) == 1
            assert len(list(reader)) in (0, len(keys))
    finally:
        stop.set()
        thread.join(10.0)
    assert shapes == {True, False}  # it did see the churn


def test_flush_raises_once_the_session_is_closed(join: Join) -> None:
    a = join()
    a.set("x", 1, wait=False)
    a.close()
    with pytest.raises(SessionClosedError):
        a.flush()


class _FailingStore(p2pstate.MemoryStorage):
    """A store that fails on the key "boom": its I/O thread ends."""

    def apply(self, batch: Any) -> None:
        if "boom" in batch.put:
            raise OSError("No space left on device")
        super().apply(batch)


def test_flush_raises_once_the_io_thread_ended(join: Join) -> None:
    s = join(store=_FailingStore())
    s["ok"] = 1
    s.set("boom", 1, wait=False)  # never stored, so never acknowledged
    with pytest.raises(SessionClosedError):
        s.flush(timeout=5.0)
    assert s.closed


class _SlowToClose(p2pstate.MemoryStorage):
    """A store whose close() outlasts close()'s wait for the I/O thread."""

    def __init__(self) -> None:
        super().__init__()
        self.closing = threading.Event()
        self.release = threading.Event()

    def close(self) -> None:
        self.closing.set()
        self.release.wait(10.0)
        super().close()


def test_close_never_releases_sockets_under_a_live_io_thread(join: Join) -> None:
    store = _SlowToClose()
    s = join(store=store)
    s["x"] = 1
    rt = s._rt
    s.close(timeout=0.2)  # waits 1.2 s for the I/O thread, which is closing its store
    assert store.closing.is_set() and rt._thread.is_alive()
    # Still the I/O thread's: its sockets and the zmq context stay open under it.
    assert not rt._ctx.closed and not rt.transport.router.closed
    store.release.set()
    rt._thread.join(5.0)
    # Its last act: release what close() left to it.
    eventually(lambda: rt._ctx.closed and rt.transport.router.closed)


class _WritingStore(p2pstate.MemoryStorage):
    """A store that writes to the state it stores: user code on the I/O thread."""

    def __init__(self) -> None:
        super().__init__()
        self.state: Any = None
        self.errors: list[BaseException] = []

    def apply(self, batch: Any) -> None:
        super().apply(batch)
        if self.state is not None and not self.errors:
            try:
                self.state["from_store"] = 1
            except Exception as exc:  # noqa: BLE001 (what the test checks)
                self.errors.append(exc)


def test_a_blocking_call_on_the_io_thread_raises_at_once(join: Join) -> None:
    store = _WritingStore()
    s = join(store=store)
    other = join()
    store.state = s
    other["x"] = 1  # acknowledged only once s's store holds it
    assert len(store.errors) == 1 and isinstance(store.errors[0], RuntimeError)
    assert "I/O thread" in str(store.errors[0])
    assert s.is_host and other.epoch == 1  # nothing waited, nothing failed over


def test_non_blocking_writes_keep_one_writers_order_across_keys(join: Join) -> None:
    watcher = join()
    writer = join()
    watcher.poll()
    last = 0
    for _ in range(20):
        # A burst of positions (the first goes out, the rest wait, the newest
        # wins), then the score: it must not overtake the positions waiting.
        for _ in range(10):
            last += 1
            writer.set("pos", last, wait=False)
        writer.set("score", last, wait=False)
        writer.flush()
    eventually(lambda: watcher.get("score") == last)
    pos = 0
    scores = 0
    for event in watcher.poll():
        if isinstance(event, KeyChanged) and event.key == "pos":
            pos = event.value
        elif isinstance(event, KeyChanged) and event.key == "score":
            scores += 1
            # The writer wrote pos i before score i: whoever sees score i
            # sees pos i.
            assert pos >= event.value, f"score {event.value} seen with pos {pos}"
    assert scores == 20 and pos == last


def test_counters_from_user_threads_are_exact(join: Join) -> None:
    a = join()
    b = join()
    calls = {"n": 0}
    lock = threading.Lock()

    def plus_one(n: int) -> int:
        with lock:
            calls["n"] += 1
        return n + 1

    def worker(s: Any, times: int) -> None:
        for _ in range(times):
            s.apply_op("n", plus_one)

    # Switch threads as often as possible: a read-modify-write of a counter
    # shared by threads loses counts then.
    a["n"] = 0
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=worker, args=(s, 60)) for s in (a, b, b, b, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60.0)
    finally:
        sys.setswitchinterval(old)
    b.flush()
    assert a["n"] == 300
    # Every call of fn past the first of each apply_op is one retry.
    retries = a.stats.get("apply_op_retries", 0) + b.stats.get("apply_op_retries", 0)
    assert retries == calls["n"] - 300 > 0
