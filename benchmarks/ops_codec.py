"""Per-change CPU cost of the codec and the replica for "set" changes, with
no network: encode N ChangeMsgs, decode them, apply them to a Replica; and
encode/decode N Writes. Prints the best of a few rounds in µs per change.

    PYTHONPATH=. python benchmarks/ops_codec.py [N]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from p2pstate.core.replica import Replica
from p2pstate.messages import Change, ChangeMsg, Write, from_frame, to_frame

MAX = 1 << 20
VALUES = {"int": 7, "dict": {"x": 1, "pos": [1.5, 2.5], "name": "bob"}}


def best(rounds: int, run: Callable[[], Any]) -> float:
    """The fastest of *rounds* runs, in CPU seconds of this process (the
    machine is shared: wall time would count the others)."""
    times = []
    for _ in range(rounds):
        start = time.process_time()
        run()
        times.append(time.process_time() - start)
    return min(times)


def measure(value: Any, n: int, rounds: int) -> dict[str, float]:
    """Seconds for *n* set changes of *value*, per stage."""
    msgs = [
        ChangeMsg(
            sender="h.1",
            epoch=1,
            change=Change(
                seq=i + 1,
                epoch=1,
                origin="h.1",
                writer="p.1",
                req=i + 1,
                ops=(("set", f"key{i % 1000}", value),),
            ),
            ack=False,
        )
        for i in range(n)
    ]
    frames = [to_frame(m) for m in msgs]
    decoded = [from_frame(f, max_size=MAX) for f in frames]
    changes = [m.change for m in decoded if isinstance(m, ChangeMsg)]
    writes = [
        Write(
            sender="p.1",
            epoch=1,
            req=i + 1,
            acked_upto=i,
            ops=(("set", f"key{i % 1000}", value),),
            conds=(),
        )
        for i in range(n)
    ]
    wframes = [to_frame(w) for w in writes]

    def apply_all() -> None:
        replica = Replica()
        for c in changes:
            replica.apply(c)

    return {
        "encode ChangeMsg": best(rounds, lambda: [to_frame(m) for m in msgs]),
        "decode ChangeMsg": best(rounds, lambda: [from_frame(f, max_size=MAX) for f in frames]),
        "apply Change": best(rounds, apply_all),
        "encode Write": best(rounds, lambda: [to_frame(w) for w in writes]),
        "decode Write": best(rounds, lambda: [from_frame(f, max_size=MAX) for f in wframes]),
    }


def main(n: int, rounds: int = 5) -> None:
    for label, value in VALUES.items():
        rows = measure(value, n, rounds)
        total = rows["encode ChangeMsg"] + rows["decode ChangeMsg"] + rows["apply Change"]
        cells = "  ".join(f"{k} {v / n * 1e6:.2f}" for k, v in rows.items())
        print(f"{label:5} µs/change: {cells}  | change total {total / n * 1e6:.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
