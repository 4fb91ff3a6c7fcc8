"""What gets through right after a carrier cut of the host's link (needs root).

    sudo python benchmarks/carrier_multicast.py            # 4 cuts of 0.3 s
    sudo python benchmarks/carrier_multicast.py --cut 0.3 --cuts 6

The README's *Limitations*: a 0.3 s carrier cut silences the host's TCP for
about a second, since its kernel flushed its ARP entries and asks again only
on its one-second retry timer. Multicast needs no ARP. Three namespaces on a
private bridge (``tests/lan/netlab.py``); the "host" (namespace 0) sends,
every 10 ms, one UDP datagram to a multicast group and one to namespace 1's
address (unicast: needs ARP); namespace 1 notes when each arrives. Namespace
2 runs an mDNS query every 1.1 s or so (its cache emptied before each, so
every answer comes over the wire) for a service the host registers. The host's switch
port goes down for ``--cut`` seconds, then up, ``--cuts`` times.

Printed, per cut: how long after the port came back the first multicast and
the first unicast datagram arrived, and the mDNS queries that started after
it (start offset, answer time). Nothing leaves the namespaces; every process
is stopped by its pid.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "lan"))

from netlab import Lan  # noqa: E402  (the tests' namespace lab)

GROUP, MC_PORT, UC_PORT = "239.255.73.73", 47311, 47312
SERVICE = "_p2pstate-probe._tcp.local."

SENDER = f"""
import socket, struct, sys, time
me, to, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
mc = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
mc.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(me))
mc.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
uc = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end, seq = time.monotonic() + seconds, 0
while time.monotonic() < end:
    seq += 1
    payload = struct.pack("!Id", seq, time.monotonic())
    for sock, dest in ((mc, ("{GROUP}", {MC_PORT})), (uc, (to, {UC_PORT}))):
        try:
            sock.sendto(payload, dest)
        except OSError:
            pass  # no carrier, no neighbour yet: the datagram is lost
    time.sleep(0.01)
"""

RECEIVER = f"""
import json, select, socket, struct, sys, time
me, seconds = sys.argv[1], float(sys.argv[2])
mc = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
mc.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
mc.bind(("{GROUP}", {MC_PORT}))
mreq = socket.inet_aton("{GROUP}") + socket.inet_aton(me)
mc.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
uc = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
uc.bind((me, {UC_PORT}))
got = {{"mc": [], "uc": []}}
end = time.monotonic() + seconds
while time.monotonic() < end:
    for sock in select.select([mc, uc], [], [], 0.05)[0]:
        data = sock.recv(64)
        now = time.monotonic()
        got["mc" if sock is mc else "uc"].append([struct.unpack("!Id", data)[1], now])
print(json.dumps(got), flush=True)
"""

MDNS_HOST = f"""
import socket, sys, time
from zeroconf import ServiceInfo, Zeroconf
me, seconds = sys.argv[1], float(sys.argv[2])
zc = Zeroconf(interfaces=[me])
info = ServiceInfo("{SERVICE}", "host.{SERVICE}", addresses=[socket.inet_aton(me)], port=5599)
zc.register_service(info)
time.sleep(seconds)
zc.close()
"""

MDNS_QUERIER = f"""
import json, sys, time
from zeroconf import ServiceInfo, Zeroconf
me, seconds = sys.argv[1], float(sys.argv[2])
zc = Zeroconf(interfaces=[me])

def forget():
    # an empty cache: every answer comes over the wire
    zc.cache.async_remove_records([r for d in list(zc.cache.cache.values()) for r in d])

out, end = [], time.monotonic() + seconds
while time.monotonic() < end:
    zc.loop.call_soon_threadsafe(forget)
    time.sleep(0.02)
    info = ServiceInfo("{SERVICE}", "host.{SERVICE}")
    start = time.monotonic()
    ok = info.request(zc, 3000)
    out.append([start, time.monotonic(), bool(ok)])
    time.sleep(1.1)  # a responder answers a record at most once a second (RFC 6762)
zc.close()
print(json.dumps(out), flush=True)
"""


def _first_after(arrivals: list[list[float]], at: float) -> float | None:
    """Seconds from *at* to the first datagram that arrived after it."""
    later = [recv for _, recv in arrivals if recv > at]
    return min(later) - at if later else None


def _queries_after(queries: list[list[Any]], at: float, until: float) -> list[str]:
    """The mDNS queries started in [at, until): start offset and answer time, in ms."""
    return [
        f"+{(s - at) * 1000:.0f}: {(e - s) * 1000:.0f}{'' if ok else ' (no answer)'}"
        for s, e, ok in queries
        if at <= s < until
    ]


def measure(cut: float, cuts: int) -> None:
    gap = 2.5 + 0.4  # the host's ARP retry is over by then; queries fall at varied points
    lasting = 2.0 + cuts * (cut + gap) + 1.0
    lan = Lan(3, Path(tempfile.mkdtemp(prefix="carrier-mc-")))
    procs: list[subprocess.Popen[str]] = []

    def run(i: int, code: str, *args: str) -> subprocess.Popen[str]:
        argv = ["ip", "netns", "exec", lan.netns[i], sys.executable, "-c", code, *args]
        procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, text=True))
        return procs[-1]

    try:
        a = lan.addresses
        receiver = run(1, RECEIVER, a[1], str(lasting + 0.5))
        run(0, MDNS_HOST, a[0], str(lasting + 1.0))
        querier = run(2, MDNS_QUERIER, a[2], str(lasting))
        time.sleep(0.5)
        run(0, SENDER, a[0], a[1], str(lasting))
        time.sleep(1.5)
        restores = []
        for i in range(cuts):
            lan.cut(0)
            time.sleep(cut)
            lan.restore(0)
            restores.append(time.monotonic())
            time.sleep(gap + 0.037 * i)  # cuts start at varied points of the send cycle
        got = json.loads(receiver.communicate(timeout=lasting + 10)[0])
        queries = json.loads(querier.communicate(timeout=lasting + 10)[0])
        _report(restores, got, queries, cut)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(5)
        lan.close()


def _report(
    restores: list[float], got: dict[str, list[list[float]]], queries: list[Any], cut: float
) -> None:
    before = [e - s for s, e, ok in queries if ok and e < restores[0] - cut]
    wire = sorted(e - s for s, e, ok in queries if ok and e - s > 0.005)
    if before:
        print(f"mDNS query -> answer before the first cut: {[round(b * 1000) for b in before]} ms")
    if wire:
        print(
            f"every mDNS answer over the wire: median {statistics.median(wire) * 1000:.0f} ms, "
            f"{wire[0] * 1000:.0f}-{wire[-1] * 1000:.0f} ms over {len(wire)} queries "
            f"({sum(1 for _, _, ok in queries if not ok)} unanswered in 3 s)"
        )
    for n, at in enumerate(restores, 1):
        mc, uc = _first_after(got["mc"], at), _first_after(got["uc"], at)
        shown = [f"{x * 1000:.0f} ms" if x is not None else "never" for x in (mc, uc)]
        print(f"cut {n} ({cut} s): first multicast {shown[0]}, first unicast {shown[1]} after")
        print(f"  mDNS queries started in the next 1.5 s: {_queries_after(queries, at, at + 1.5)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cut", type=float, default=0.3, help="seconds the port is down")
    parser.add_argument("--cuts", type=int, default=4)
    args = parser.parse_args()
    measure(args.cut, args.cuts)


if __name__ == "__main__":
    main()
