"""One relay of the raw three-process chain, the physical limit of an
acknowledged write (writer -> host -> successor -> writer), in its own process.

It binds a ROUTER on loopback and prints ``{"endpoint": ...}``; ``next`` tells
it where to forward. Each message it receives is decoded with msgpack,
encoded again and sent on through one DEALER: the least a protocol hop must
do. Exits on ``close`` or the end of stdin.
"""

from __future__ import annotations

import threading
from typing import Any

import msgpack
import zmq
from harness import bound_router, serve


def relay(router: zmq.Socket[bytes], forward: zmq.Socket[bytes]) -> None:
    while True:  # a daemon thread: it ends with the process
        _ident, frame = router.recv_multipart()
        forward.send(msgpack.packb(msgpack.unpackb(frame)))


class Control:
    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], router: zmq.Socket[bytes]) -> None:
        self.ctx, self.router = ctx, router
        self.started = False

    def op_next(self, endpoint: str) -> dict[str, Any]:
        if self.started:
            raise RuntimeError("already relaying")
        forward = self.ctx.socket(zmq.DEALER)
        forward.setsockopt(zmq.LINGER, 0)
        forward.connect(endpoint)
        threading.Thread(target=relay, args=(self.router, forward), daemon=True).start()
        self.started = True
        return {"next": endpoint}

    def op_close(self) -> dict[str, Any]:
        return {"closed": True}  # exiting the process releases the sockets


def main() -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    router, endpoint = bound_router(ctx)
    serve(Control(ctx, router), {"endpoint": endpoint})


if __name__ == "__main__":
    main()
