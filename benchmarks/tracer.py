"""Where one write's time goes: timestamps at each thread and process boundary
of a p2pstate peer, taken by wrapping a few of its methods in the benchmark's
worker process (the library itself carries no tracing).

Each record is ``(monotonic ns, tag)``; every process on Linux shares the
monotonic clock, so records of three processes line up. Tags:

- ``submit``: the I/O thread took a write from the user's thread (``Node.submit``);
- ``send:<Type>@<to>``: a frame holding a message of that type was handed to zmq for *to*;
- ``recv:<Type>@<from>``: the I/O thread decoded it (``Transport.receive_io`` returned);
- ``handled:<Type>@<from>``: the core finished handling it (``Node.receive`` returned);
- ``woken``: the outcome of a blocking write reached the user's thread.

Also a sampling profiler for one thread (the I/O thread runs in a thread
cProfile cannot attach to once it runs): every millisecond, the function at
the top of that thread's stack (its own time), and the p2pstate function
nearest the top (that function's time with what it calls in C).
"""

from __future__ import annotations

import collections
import sys
import threading
import time
from typing import Any

from p2pstate.core.node import Node
from p2pstate.session import Runtime
from p2pstate.transport import Transport

_records: list[tuple[int, str]] = []
_on = False
_installed = False


def start() -> None:
    global _on
    _install()
    _records.clear()
    _on = True


def stop() -> list[tuple[int, str]]:
    global _on
    _on = False
    out = list(_records)
    _records.clear()
    return out


def _note(tag: str) -> None:
    if _on:
        _records.append((time.monotonic_ns(), tag))


def _install() -> None:
    """Wrap the boundary methods once; they record only while tracing is on."""
    global _installed
    if _installed:
        return
    _installed = True
    submit, receive = Node.submit, Node.receive
    receive_io, send_io, send_queued = (
        Transport.receive_io,
        Transport.send_io,
        Transport._send_queued,
    )
    wait = Runtime.wait
    pending_types: dict[int, list[str]] = collections.defaultdict(list)

    def traced_submit(self: Node, *args: Any, **kwargs: Any) -> int:
        _note("submit")
        return submit(self, *args, **kwargs)

    def traced_receive(self: Node, msg: Any, now: float) -> None:
        receive(self, msg, now)
        _note(f"handled:{type(msg).__name__}@{msg.sender}")

    def traced_receive_io(self: Transport, limit: int = 1000) -> list[Any]:
        msgs = receive_io(self, limit)
        if _on:
            now = time.monotonic_ns()
            _records.extend((now, f"recv:{type(m).__name__}@{m.sender}") for m in msgs)
        return msgs

    def traced_send_io(self: Transport, send: Any) -> None:
        send_io(self, send)
        if _on:
            link = self._links.get(send.to)
            if link is not None:
                pending_types[id(link)].append(f"{type(send.msg).__name__}@{send.to}")

    def traced_send_queued(self: Transport, link: Any) -> None:
        # The moment the frame is handed to zmq: taken before the call, so a
        # thread switch right after it does not count as the I/O thread's.
        now = time.monotonic_ns()
        send_queued(self, link)
        if _on:
            _records.extend((now, f"send:{t}") for t in pending_types.pop(id(link), ()))

    def traced_wait(self: Runtime, *args: Any, **kwargs: Any) -> Any:
        outcome = wait(self, *args, **kwargs)
        _note("woken")
        return outcome

    Node.submit = traced_submit  # type: ignore[method-assign]
    Node.receive = traced_receive  # type: ignore[method-assign]
    Transport.receive_io = traced_receive_io  # type: ignore[method-assign]
    Transport.send_io = traced_send_io  # type: ignore[method-assign]
    Transport._send_queued = traced_send_queued  # type: ignore[method-assign]
    Runtime.wait = traced_wait  # type: ignore[method-assign]


class Sampler:
    """Sample one thread's stack every *interval* seconds until stopped."""

    def __init__(self, thread_name_part: str, interval: float = 0.001) -> None:
        self.target = next(
            (t.ident for t in threading.enumerate() if thread_name_part in t.name), None
        )
        if self.target is None:
            raise LookupError(f"no thread named like {thread_name_part!r}")
        self.interval = interval
        self.top: collections.Counter[str] = collections.Counter()
        self.near: collections.Counter[str] = collections.Counter()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            frame = sys._current_frames().get(self.target)
            if frame is None:
                continue
            self.samples += 1
            code = frame.f_code
            self.top[f"{_short(code.co_filename)}:{code.co_name}"] += 1
            while frame is not None and "/p2pstate/" not in frame.f_code.co_filename:
                frame = frame.f_back
            if frame is not None:
                code = frame.f_code
                self.near[f"{_short(code.co_filename)}:{code.co_name}"] += 1

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join()
        return {
            "samples": self.samples,
            "top": self.top.most_common(20),
            "near": self.near.most_common(20),
        }


def _short(path: str) -> str:
    for marker in ("/p2pstate/", "/zmq/", "/msgpack/", "/python3."):
        if marker in path:
            return marker.strip("/") + "/" + path.split(marker, 1)[1]
    return path.rsplit("/", 1)[-1]
