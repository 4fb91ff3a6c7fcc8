"""The zmq transport with real sockets on loopback."""

from __future__ import annotations

import socket
import time
from dataclasses import replace

import pytest
import zmq
from samples import first_hello

from p2pstate.core.node import Send
from p2pstate.messages import Heartbeat, Hello, Redirect, to_frame
from p2pstate.transport import BATCH_MESSAGES, PROBE_LIFE, Transport, valid_endpoint


def _hello(sender: str) -> Hello:
    return first_hello(sender, name="n")


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


def _link(host: Transport, peer: Transport) -> None:
    """Give *host* a link to *peer*, as it has after welcoming a member."""
    host.send_io(Send("pppp", peer.endpoints, Heartbeat(sender="hhhh", epoch=1, seq=1)))
    host.flush_io()
    assert [type(m) for m in _receive(peer)] == [Heartbeat]


def test_unreachable_first_endpoint_is_rotated_past() -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    a = Transport(ctx, "aaaa", ["127.0.0.1"], max_frame_size=1 << 20)
    b = Transport(ctx, "bbbb", ["127.0.0.1"], max_frame_size=1 << 20)
    try:
        dead = f"tcp://127.0.0.1:{_closed_port()}"
        # b advertises a dead address first (a VPN or container bridge, say).
        endpoints = (dead, b.endpoints[0])
        a.send_io(Send("bbbb", endpoints, _hello("aaaa")))
        a.flush_io()
        first = _receive(b, 0.3)
        if not first:  # the first hello went to the dead address; the retry rotates
            a.send_io(Send("bbbb", endpoints, _hello("aaaa")))
            a.flush_io()
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


def test_messages_for_one_peer_in_one_pass_travel_as_one_frame_in_order() -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    a = Transport(ctx, "aaaa", ["127.0.0.1"], max_frame_size=1 << 20)
    b = Transport(ctx, "bbbb", ["127.0.0.1"], max_frame_size=1 << 20)
    raw = ctx.socket(zmq.ROUTER)  # sees frames as they are on the wire
    raw.setsockopt(zmq.LINGER, 0)
    port = raw.bind_to_random_port("tcp://127.0.0.1")
    try:
        beats = [Heartbeat(sender="aaaa", epoch=1, seq=i) for i in range(5 * BATCH_MESSAGES // 2)]
        for beat in beats:
            a.send_io(Send("bbbb", b.endpoints, beat))
        a.send_io(Send("raw", (f"tcp://127.0.0.1:{port}",), beats[0]))
        a.send_io(Send("raw", (f"tcp://127.0.0.1:{port}",), beats[1]))
        got: list[object] = []

        def receive_until(count: int) -> None:
            deadline = time.monotonic() + 5
            while len(got) < count and time.monotonic() < deadline:
                got.extend(_receive(b, 0.1))

        # A full batch leaves at once; the rest waits for the flush.
        receive_until(2 * BATCH_MESSAGES + 1)
        assert got == beats[: 2 * BATCH_MESSAGES]
        assert not raw.poll(100)
        a.flush_io()
        receive_until(len(beats))
        assert got == beats
        assert b.stats["frames"] == 3
        assert raw.poll(2000)
        frames = raw.recv_multipart()
        assert frames[1] == to_frame(beats[0]) + to_frame(beats[1])
        assert not raw.poll(100)
    finally:
        raw.close(linger=0)
        a.close_io()
        b.close_io()
        ctx.term()


def test_a_batch_never_exceeds_the_frame_limit() -> None:
    """Regression: batches of up to 256 KiB went to peers whose MAXMSGSIZE
    (max_frame_size) was smaller; libzmq dropped them, and the connection."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    a = Transport(ctx, "aaaa", ["127.0.0.1"], max_frame_size=4096)
    b = Transport(ctx, "bbbb", ["127.0.0.1"], max_frame_size=4096)
    try:
        hellos = [
            replace(_hello("aaaa"), profile={"bio": "x" * 1500}, resume_seq=i) for i in range(5)
        ]  # each about 1.6 KB: five are twice the limit together
        for hello in hellos:
            a.send_io(Send("bbbb", b.endpoints, hello))
        a.flush_io()
        got: list[object] = []
        deadline = time.monotonic() + 5
        while len(got) < len(hellos) and time.monotonic() < deadline:
            got.extend(_receive(b, 0.1))
        assert got == hellos
        assert b.stats["frames"] >= 3
    finally:
        a.close_io()
        b.close_io()
        ctx.term()


@pytest.mark.parametrize(
    "endpoint",
    ["tcp://127.0.0.1:²", "tcp://127.0.0.1:٣", "tcp://127.0.0.1:" + "9" * 30, "tcp://127.0.0.1:0"],
)
def test_odd_ports_are_not_valid_endpoints(endpoint: str) -> None:
    assert valid_endpoint(endpoint) is False


def _dropped(t: Transport, poller: zmq.Poller, timeout: float = 2.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = dict(poller.poll(50))
        dropped = t.dropped_io(ready)
        if dropped:
            return dropped
    return []


def test_a_dropped_connection_is_reported_and_monitors_close_with_their_links() -> None:
    """The other end goes away (its sockets close, as when its process dies):
    the link's monitor wakes the poller and ``dropped_io`` names the peer.
    A link's monitor lives and dies with it (no socket left behind); a
    stranger's link has none."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    a = Transport(ctx, "aaaa", ["127.0.0.1"], max_frame_size=1 << 20)
    b = Transport(ctx, "bbbb", ["127.0.0.1"], max_frame_size=1 << 20)
    poller = zmq.Poller()
    a.watch_io(poller)
    a.sweep_io(0.0, lambda: {"bbbb"})  # b is a member: its link is watched
    try:
        a.send_io(Send("bbbb", b.endpoints, _hello("aaaa")))
        a.flush_io()
        assert _receive(b)  # connected
        assert _dropped(a, poller, 0.2) == []  # nothing dropped while b lives
        b.close_io()
        assert _dropped(a, poller) == ["bbbb"]
        assert a.stats["links_dropped"] >= 1
        assert len(poller.sockets) == 1  # the link's monitor
        a.forget_io("bbbb")
        assert poller.sockets == [] and a.dropped_io({}) == []
        a.send_io(Send("cccc", b.endpoints, _hello("aaaa")))  # not a member
        assert poller.sockets == []
    finally:
        a.close_io()
        ctx.term()  # would hang on a monitor socket left open


def test_a_probe_goes_over_its_own_connection_and_is_answered_on_it() -> None:
    """A fresh Send opens a connection of its own; the host's answer (here a
    Redirect) goes back over it, not over the host's link to the prober, and
    the probe's socket closes with the answer; other messages use the links."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    host = Transport(ctx, "hhhh", ["127.0.0.1"], max_frame_size=1 << 20)
    peer = Transport(ctx, "pppp", ["127.0.0.1"], max_frame_size=1 << 20)
    try:
        _link(host, peer)
        peer.send_io(Send("hhhh", host.endpoints, _hello("pppp"), fresh=True))
        assert peer.stats["probes_sent"] == 1 and peer.stats["links"] == 0
        assert _receive(host) == [_hello("pppp")]
        answer = Redirect(sender="hhhh", epoch=1, host_id="hhhh", endpoints=(), reason="not host")
        host.send_io(Send("pppp", peer.endpoints, answer))
        host.send_io(Send("pppp", peer.endpoints, answer))  # a second goes on the link
        host.flush_io()
        # Two connections: which of the two answers arrives first is not ours to say.
        got = _receive(peer)
        if len(got) < 2:
            got += _receive(peer)
        assert got == [answer, answer], got
        assert host.stats["probe_answers_sent"] == 1 and peer.stats["probe_answers_received"] == 1
        assert not peer._probes  # closed with its answer
    finally:
        host.close_io()
        peer.close_io()
        ctx.term()


def test_an_answer_made_after_the_probes_step_goes_over_the_link() -> None:
    """The host did not answer a probe in the step that handled it; the
    prober has since closed the probe. A later answer must take the link:
    the ROUTER drops what it sends to a closed connection without a word."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    host = Transport(ctx, "hhhh", ["127.0.0.1"], max_frame_size=1 << 20)
    peer = Transport(ctx, "pppp", ["127.0.0.1"], max_frame_size=1 << 20)
    try:
        _link(host, peer)
        peer.send_io(Send("hhhh", host.endpoints, _hello("pppp"), fresh=True))
        assert _receive(host) == [_hello("pppp")]
        host.flush_io()  # the step that handled the probe answered nothing
        peer.sweep_io(time.monotonic() + PROBE_LIFE, lambda: {"hhhh"})
        assert not peer._probes
        answer = Redirect(sender="hhhh", epoch=1, host_id="hhhh", endpoints=(), reason="not host")
        host.send_io(Send("pppp", peer.endpoints, answer))
        host.flush_io()
        assert _receive(peer) == [answer]
        assert host.stats["probe_answers_sent"] == 0
    finally:
        host.close_io()
        peer.close_io()
        ctx.term()


def test_an_unanswered_probe_closes_after_its_life_and_close_io_closes_the_rest() -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    peer = Transport(ctx, "pppp", ["127.0.0.1"], max_frame_size=1 << 20)
    try:
        dead = (f"tcp://127.0.0.1:{_closed_port()}",)
        peer.sweep_io(100.0, tuple)
        peer.send_io(Send("hhhh", dead, _hello("pppp"), fresh=True))
        peer.send_io(Send("hhhh", dead, _hello("pppp"), fresh=True))  # replaces the first
        peer.send_io(Send("gggg", dead, _hello("pppp"), fresh=True))
        assert peer.stats["probes_sent"] == 3 and sorted(peer._probes) == ["gggg", "hhhh"]
        peer.sweep_io(100.0 + PROBE_LIFE, tuple)
        assert not peer._probes
        peer.send_io(Send("hhhh", dead, _hello("pppp"), fresh=True))
    finally:
        peer.close_io()  # closes that last probe too: ctx.term() would hang on it
        ctx.term()
