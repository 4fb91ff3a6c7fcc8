"""What every benchmark shares: worker processes driven over JSON-line pipes,
statistics, and formatting.

A worker is one of the ``worker_*.py`` scripts of this folder. It prints one
JSON line when it is ready, then answers each JSON command line on its stdin
with exactly one JSON line on its stdout. It exits when its stdin closes, so a
worker never outlives the harness by more than a moment; the harness still
stops every worker it started, by its own pid, in ``Group.__exit__``.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import zmq

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
#: Every socket and mDNS packet of the benchmarks stays on this address.
LOOPBACK = "127.0.0.1"


class WorkerError(RuntimeError):
    """A worker answered with an error, said nothing in time, or died."""


class Worker:
    """One worker process of this folder."""

    def __init__(self, script: str, *args: str) -> None:
        env = dict(os.environ, P2PSTATE_INTERFACES=LOOPBACK, PYTHONPATH=str(ROOT))
        self.name = f"{script}[{args[0] if args else ''}]"
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen(
            [sys.executable, str(BENCH / script), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=env,
        )
        self.pid = self.proc.pid
        self._hello: dict[str, Any] | None = None

    def hello(self, timeout: float = 30.0) -> dict[str, Any]:
        """The worker's first line, which it prints once it is ready."""
        if self._hello is None:
            self._hello = self._read(timeout)
        return self._hello

    def send(self, op: str, **args: Any) -> None:
        self.hello()
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise WorkerError(f"{self.name} pid {self.pid} is gone: {self._tail()}") from None

    def reply(self, timeout: float = 60.0) -> dict[str, Any]:
        return self._read(timeout)

    def cmd(self, op: str, timeout: float = 60.0, **args: Any) -> dict[str, Any]:
        self.send(op, **args)
        return self.reply(timeout)

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        readable, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not readable:
            raise WorkerError(f"{self.name} pid {self.pid} said nothing in {timeout} s")
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(5)
            raise WorkerError(f"{self.name} pid {self.pid} exited: {self._tail()}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise WorkerError(f"{self.name} pid {self.pid}: {answer['error']}")
        return answer

    def _tail(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read()[-2000:]

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """kill -9, by this worker's own pid."""
        if self.alive:
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(10)

    def ask_to_close(self) -> None:
        """Send ``close`` and end the worker's stdin: it leaves its session and exits."""
        if self.alive and self._hello is not None:
            with contextlib.suppress(WorkerError, OSError, ValueError):
                self.send("close")
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()

    def stop(self, deadline: float) -> None:
        """Wait for the worker to exit until *deadline* (time.monotonic()),
        then kill it by its pid; release its pipes."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(max(0.0, deadline - time.monotonic()))
        self.kill()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


class Group:
    """The workers of one measurement: all stopped on exit, errors or not."""

    def __init__(self) -> None:
        self.workers: list[Worker] = []

    def start(self, script: str, *args: str) -> Worker:
        worker = Worker(script, *args)
        self.workers.append(worker)
        return worker

    def __enter__(self) -> Group:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # All at once: a session of 16 peers closes in about the time of one.
        for worker in reversed(self.workers):
            worker.ask_to_close()
        deadline = time.monotonic() + 5.0
        for worker in reversed(self.workers):
            worker.stop(deadline)


def gather(
    workers: Iterable[Worker],
    op: str,
    timeout: float = 60.0,
    each: Sequence[dict[str, Any]] | None = None,
    **args: Any,
) -> list[dict[str, Any]]:
    """Send one command to every worker first, then collect every reply, so
    the workers run it at (nearly) the same time. ``each[i]`` adds arguments
    for the i-th worker."""
    workers = list(workers)
    for i, worker in enumerate(workers):
        worker.send(op, **args, **(each[i] if each else {}))
    return [worker.reply(timeout) for worker in workers]


def free_ports(count: int) -> list[int]:
    """Ports on loopback that nothing listens on right now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((LOOPBACK, 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def bound_router(ctx: zmq.Context[zmq.Socket[bytes]]) -> tuple[zmq.Socket[bytes], str]:
    """A ROUTER bound to a free port on loopback, and its endpoint: the far
    end of a baseline (``worker_zmq.py``, ``worker_chain.py``)."""
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(f"tcp://{LOOPBACK}:*")
    endpoint = router.getsockopt(zmq.LAST_ENDPOINT)
    assert isinstance(endpoint, bytes)
    return router, endpoint.decode()


def serve(target: object, hello: dict[str, Any]) -> bool:
    """A worker's side of the pipe: print *hello*, then answer each command
    line by calling ``target.op_<op>(**args)``, until ``close`` (True) or the
    end of stdin (False: the harness went away)."""
    print(json.dumps(hello), flush=True)
    for line in sys.stdin:
        args = json.loads(line)
        op = args.pop("op")
        try:
            answer = getattr(target, f"op_{op}")(**args)
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the harness
            answer = {"error": f"{op}: {type(exc).__name__}: {exc}"}
        print(json.dumps(answer), flush=True)
        if op == "close":
            return True
    return False


# ---------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Latency:
    """One round's latencies, in seconds."""

    p50: float
    p99: float
    n: int

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Latency:
        if not seconds:
            raise ValueError("no samples")
        ordered = sorted(seconds)
        return cls(p50=_rank(ordered, 0.50), p99=_rank(ordered, 0.99), n=len(ordered))

    @classmethod
    def of_ns(cls, nanoseconds: Sequence[int]) -> Latency:
        return cls.of([ns / 1e9 for ns in nanoseconds])


def _rank(ordered: Sequence[float], q: float) -> float:
    """The nearest-rank percentile of sorted samples."""
    index = max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))
    return ordered[index]


def median_round(rounds: Sequence[Latency], *, by_p99: bool = False) -> Latency:
    """The round whose p50 (or p99) is the median; the other comes with it."""
    ordered = sorted(rounds, key=lambda r: r.p99 if by_p99 else r.p50)
    return ordered[(len(ordered) - 1) // 2]


def median(values: Sequence[float]) -> float:
    """The median, and for an even count the lower middle value: a real round."""
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


# ---------------------------------------------------------------- formatting


def fmt_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"


def fmt_rate(per_second: float, unit: str) -> str:
    return f"{per_second:,.0f} {unit}/s"


def fmt_bytes(count: float) -> str:
    return f"{count / 2**20:.1f} MiB"
