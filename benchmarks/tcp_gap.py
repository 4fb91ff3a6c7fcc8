"""How long a link cut silences TCP (needs root): the measure behind the
default ``isolation_timeout`` (8 x ``host_timeout``).

    sudo python benchmarks/tcp_gap.py                  # 4 cuts of 1.5 s
    sudo python benchmarks/tcp_gap.py --cut 0.3 --cuts 6

Two network namespaces on a private bridge (``tests/lan/netlab.py``): a zmq
DEALER sends a small frame every 0.1 s to a ROUTER; the sender's bridge port
is set down for ``--cut`` seconds, then up. TCP's retransmissions back off
while the cable is out, so the receiver hears nothing for longer than the
cut: it prints every gap over 0.15 s. Nothing leaves the namespaces, and both
processes are stopped by pid.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "lan"))

from netlab import Lan  # noqa: E402  (the tests' namespace lab)

RECEIVER = """
import sys, time, zmq
router = zmq.Context().socket(zmq.ROUTER)
router.bind(f"tcp://{sys.argv[1]}:5599")
last, gaps, end = None, [], time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    if router.poll(50):
        router.recv_multipart()
        now = time.monotonic()
        if last is not None and now - last > 0.15:
            gaps.append(round(now - last, 3))
        last = now
print(gaps, flush=True)
"""

SENDER = """
import sys, time, zmq
dealer = zmq.Context().socket(zmq.DEALER)
dealer.connect(f"tcp://{sys.argv[1]}:5599")
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    dealer.send(b"x" * 50)
    time.sleep(0.1)
"""


def measure(cut: float, cuts: int) -> list[float]:
    """The receiver's gaps over 0.15 s across *cuts* cuts of *cut* seconds."""
    settle = 4 * cut + 1.0  # room for the backed-off retransmission after each cut
    lasting = 1.5 + cuts * (cut + settle) + 1.0
    lan = Lan(2, Path(tempfile.mkdtemp(prefix="tcp-gap-")))
    procs: list[subprocess.Popen[str]] = []
    try:
        to = lan.addresses[1]

        def run(ns: str, code: str, seconds: float) -> subprocess.Popen[str]:
            argv = ["ip", "netns", "exec", ns, sys.executable, "-c", code, to, str(seconds)]
            procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, text=True))
            return procs[-1]

        receiver = run(lan.netns[1], RECEIVER, lasting + 0.5)
        time.sleep(0.5)
        run(lan.netns[0], SENDER, lasting)
        time.sleep(1.0)
        for i in range(cuts):
            lan.cut(0)
            time.sleep(cut)
            lan.restore(0)
            time.sleep(settle + 0.037 * i)  # cuts start at varied points of the send cycle
        out, _ = receiver.communicate(timeout=lasting + 10)
        return [float(g) for g in out.strip().strip("[]").split(",") if g.strip()]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(5)
        lan.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cut", type=float, default=1.5, help="seconds the port is down")
    parser.add_argument("--cuts", type=int, default=4)
    args = parser.parse_args()
    gaps = measure(args.cut, args.cuts)
    print(f"cut {args.cut} s x {args.cuts}: receiver's gaps over 0.15 s: {gaps}")


if __name__ == "__main__":
    main()
