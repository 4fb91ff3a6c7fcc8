"""A throwaway LAN made of network namespaces, and p2pstate peers running in it.

One "switch" namespace holds two bridges (``br0``, ``br1``, multicast snooping
off); every peer namespace has one veth (``eth0``) whose other end (``p0``,
``p1``, ...) sits in the switch namespace, on ``br0``. Addresses come from
``SUBNET``, which exists only inside these namespaces. Every device is created
inside a namespace made here (``ip -n``), so nothing is ever created in, or
routed through, the root namespace; deleting the namespaces removes it all.

* ``cut(i)`` sets the switch-side end of peer *i*'s veth down: its carrier
  drops, no FIN or RST reaches anyone, packets just vanish.
* ``split(ids)`` moves those peers' switch ports to ``br1``: each half still
  has a working LAN (multicast included), the halves cannot reach each other.
* ``heal()`` and ``restore(i)`` put things back.

Needs root and iproute2; :func:`unavailable_reason` says why not, for a skip.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

WORKER = Path(__file__).with_name("lanworker.py")
ROOT = Path(__file__).resolve().parents[2]
#: Private test subnet: it exists only inside the namespaces a Lan makes.
SUBNET = "10.213.7"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def _bridge(*args: str) -> None:
    argv = ["bridge", *args]
    result = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=10)
    if result.returncode != 0:
        raise RuntimeError(f"bridge {' '.join(args)} failed: {result.stderr.strip()}")


@functools.cache
def unavailable_reason() -> str | None:
    """Why namespace tests cannot run here, or None when they can."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespace tests need root (ip netns add)"
    if shutil.which("ip") is None:
        return "iproute2 ('ip') is not installed"
    probe = f"p2ps-probe-{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", probe)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return f"'ip netns add' does not work here: {exc}"
    try:
        _ip("-n", probe, "link", "add", "br0", "type", "bridge")
        _ip("-n", probe, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot make a bridge and veth pair in a namespace: {exc}"
    finally:
        _ip("netns", "del", probe, check=False)
    return None


class Worker:
    """One lanworker.py process in a namespace; ``cmd`` sends a command, returns the reply."""

    def __init__(
        self,
        netns: str,
        address: str,
        *,
        app: str,
        session: str,
        options: dict[str, Any],
        log: Path,
    ) -> None:
        env = dict(os.environ, P2PSTATE_INTERFACES=address, PYTHONPATH=str(ROOT))
        self.log = log
        self._log_file = log.open("w")
        command = [sys.executable, str(WORKER), app, session, json.dumps(options)]
        # `ip netns exec` execs the command in place: the pid is the worker's own.
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, *command],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            text=True,
            env=env,
        )
        self.pid = self.proc.pid
        self.netns = netns
        self.ready: dict[str, Any] | None = None

    @property
    def id(self) -> str:
        return str(self.wait_ready()["id"])

    def wait_ready(self, timeout: float = 20.0) -> dict[str, Any]:
        if self.ready is None:
            self.ready = self._read(timeout)
            assert self.ready.get("pid") == self.pid, "the worker is not the process we started"
        return self.ready

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        readable, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not readable:
            raise TimeoutError(f"worker {self.pid} said nothing in {timeout} s{self.stderr_tail()}")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.pid} exited{self.stderr_tail()}")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"worker {self.pid}: {reply['error']}{self.stderr_tail()}")
        return reply

    def cmd(self, op: str, timeout: float = 30.0, **args: Any) -> dict[str, Any]:
        self.wait_ready()
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        return self._read(timeout)

    def stderr_tail(self) -> str:
        self._log_file.flush()
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return (
            f"\n--- stderr of worker {self.pid} ({self.netns}) ---\n{text[-3000:]}" if text else ""
        )

    def stop(self) -> None:
        """Close politely if it still answers, then kill by pid; always reaped."""
        if self.proc.poll() is None and self.ready is not None:
            with contextlib.suppress(OSError, TimeoutError, RuntimeError, ValueError):
                self.cmd("close", timeout=3)
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._log_file.close()


class Lan:
    """*n* peer namespaces on a bridge in a switch namespace; see the module doc."""

    def __init__(self, n: int, logdir: Path) -> None:
        tag = secrets.token_hex(3)
        self.switch = f"p2ps-{tag}-sw"
        self.netns = [f"p2ps-{tag}-{i}" for i in range(n)]
        self.addresses = [f"{SUBNET}.{i + 1}" for i in range(n)]
        self.logdir = logdir
        self.workers: list[Worker] = []
        self._made: list[str] = []
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        sw = self.switch
        for ns in (sw, *self.netns):
            _ip("netns", "add", ns)
            self._made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        for bridge in ("br0", "br1"):
            _ip("-n", sw, "link", "add", bridge, "type", "bridge", "mcast_snooping", "0")
            _ip("-n", sw, "link", "set", bridge, "up")
        for i, (ns, address) in enumerate(zip(self.netns, self.addresses, strict=True)):
            port = f"p{i}"
            _ip("-n", sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("-n", sw, "link", "set", port, "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            # No default route in here: send mDNS out of eth0 explicitly.
            _ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0")

    # ------------------------------------------------------------ faults

    def cut(self, i: int) -> None:
        """Pull peer *i*'s cable: its switch port goes down, nothing is said."""
        _ip("-n", self.switch, "link", "set", f"p{i}", "down")

    def restore(self, i: int) -> None:
        _ip("-n", self.switch, "link", "set", f"p{i}", "up")

    def drop(self, i: int) -> None:
        """Lose everything on peer *i*'s switch port while its carrier stays
        up (interference, a busy switch): unlike ``cut``, its kernel keeps
        its neighbour (ARP) entries, which a carrier loss flushes."""
        _bridge("-n", self.switch, "link", "set", "dev", f"p{i}", "state", "0")

    def undrop(self, i: int) -> None:
        _bridge("-n", self.switch, "link", "set", "dev", f"p{i}", "state", "3")

    def split(self, ids: list[int]) -> None:
        """Move peers *ids* to a bridge of their own: two LANs that can't reach each other."""
        for i in ids:
            _ip("-n", self.switch, "link", "set", f"p{i}", "master", "br1")

    def heal(self) -> None:
        for i in range(len(self.netns)):
            _ip("-n", self.switch, "link", "set", f"p{i}", "master", "br0")

    # ------------------------------------------------------------ peers

    def spawn(self, i: int, app: str, session: str = "lan", **options: Any) -> Worker:
        """Start a peer in namespace *i*, its sockets and mDNS on that namespace's address."""
        log = self.logdir / f"worker-{len(self.workers)}-ns{i}.log"
        worker = Worker(
            self.netns[i], self.addresses[i], app=app, session=session, options=options, log=log
        )
        self.workers.append(worker)
        return worker

    def close(self) -> None:
        """Stop every worker (by pid), then delete every namespace made here."""
        errors: list[str] = []
        for worker in self.workers:
            try:
                worker.stop()
            except Exception as exc:  # noqa: BLE001  (teardown must go on)
                errors.append(f"worker {worker.pid}: {exc!r}")
        for ns in reversed(self._made):
            result = _ip("netns", "del", ns, check=False)
            if result.returncode != 0:
                errors.append(f"ip netns del {ns}: {result.stderr.strip()}")
        self._made.clear()
        if errors:
            raise RuntimeError("; ".join(errors))


def one_host(peers: list[Worker]) -> bool:
    """Exactly one of *peers* hosts, and every one follows it at its epoch."""
    infos = [p.cmd("info") for p in peers]
    hosts = [i for i in infos if i["is_host"]]
    return len(hosts) == 1 and {(i["host"], i["epoch"]) for i in infos} == {
        (hosts[0]["id"], hosts[0]["epoch"])
    }


def equal_states(peers: list[Worker]) -> dict[str, Any] | None:
    """The state all *peers* hold, or None while they differ."""
    states = [p.cmd("dump")["state"] for p in peers]
    return states[0] if all(s == states[0] for s in states[1:]) else None


def wait_for(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll *pred* until it returns something true; fail after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.05)
