"""The zmq transport with real sockets on loopback."""

from __future__ import annotations

import socket
import time

import zmq

from p2pstate.core.node import Send
from p2pstate.messages import Heartbeat, Hello, to_frame
from p2pstate.transport import Transport


def _hello(sender: str) -> Hello:
    return Hello(
        sender=sender,
        epoch=0,
        name="n",
        endpoints=(),
        profile={},
        session_id=None,
        resume_seq=0,
        resume_epoch=0,
        resume_origin="",
        prev_host=None,
        suspects=(),
    )


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _receive(t: Transport, timeout: float = 2.0) -> list[object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = t.receive_io()
        if got:
            return list(got)
        time.sleep(0.005)
    return []


def test_unreachable_first_endpoint_is_rotated_past() -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    a = Transport(ctx, "aaaa", ["127.0.0.1"], max_frame_size=1 << 20)
    b = Transport(ctx, "bbbb", ["127.0.0.1"], max_frame_size=1 << 20)
    try:
        dead = f"tcp://127.0.0.1:{_closed_port()}"
        # b advertises a dead address first (a VPN or container bridge, say).
        endpoints = (dead, b.endpoints[0])
        a.send_io(Send("bbbb", endpoints, _hello("aaaa")))
        first = _receive(b, 0.3)
        if not first:  # the first hello went to the dead address; the retry rotates
            a.send_io(Send("bbbb", endpoints, _hello("aaaa")))
            first = _receive(b)
        assert first and first[0] == _hello("aaaa")
        assert a.stats["endpoint_rotations"] <= 1
    finally:
        a.close_io()
        b.close_io()
        ctx.term()


def test_bad_frames_are_dropped_and_counted() -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    t = Transport(ctx, "tttt", ["127.0.0.1"], max_frame_size=1024)
    raw = ctx.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    try:
        raw.connect(t.endpoints[0])
        raw.send(b"\xc1garbage")
        raw.send(b"")
        raw.send_multipart([b"two", b"frames"])
        raw.send(b"x" * 5000)  # over MAXMSGSIZE: zmq drops the connection
        raw2 = ctx.socket(zmq.DEALER)
        raw2.setsockopt(zmq.LINGER, 0)
        raw2.connect(t.endpoints[0])
        good = Heartbeat(sender="ssss", epoch=1, seq=3)
        raw2.send(to_frame(good))
        got = _receive(t)
        assert got == [good]
        assert t.stats["bad_frames"] >= 3
        raw2.close()
    finally:
        raw.close()
        t.close_io()
        ctx.term()
