"""The baseline's far end: a raw pyzmq ROUTER on loopback that decodes every
msgpack message and answers it, in its own process.

A message is ``[kind, payload]``. ``echo`` is sent back re-encoded; ``ack``
(a snapshot-sized transfer) is answered with its payload's length, so the
round trip is one large transfer one way and a few bytes back.

Prints ``{"endpoint": ...}`` when ready; exits on ``close`` or the end of stdin.
"""

from __future__ import annotations

import threading
from typing import Any

import msgpack
import zmq
from harness import bound_router, serve


def answer(body: list[Any]) -> Any:
    kind, payload = body
    return body if kind == "echo" else len(payload)


def echo(router: zmq.Socket[bytes]) -> None:
    while True:  # a daemon thread: it ends with the process
        ident, frame = router.recv_multipart()
        router.send_multipart([ident, msgpack.packb(answer(msgpack.unpackb(frame)))])


class Control:
    def op_close(self) -> dict[str, Any]:
        return {"closed": True}  # exiting the process releases the socket


def main() -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    router, endpoint = bound_router(ctx)
    threading.Thread(target=echo, args=(router,), daemon=True).start()
    serve(Control(), {"endpoint": endpoint})


if __name__ == "__main__":
    main()
