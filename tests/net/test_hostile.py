"""Guarantee 5: hostile frames at a live host are dropped and counted; the host
keeps serving honest peers and does not grow without bound."""

from __future__ import annotations

import random
import resource
import secrets
import time

import msgpack
import pytest
import zmq
from samples import first_hello

import p2pstate
from p2pstate.messages import Heartbeat, Hello, Write, to_frame


def _junk(rng: random.Random, victim: str, epoch: int) -> bytes:
    """One malformed, truncated, oversized, wrong-typed or forged frame."""
    kind = rng.randrange(9)
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 64))
    if kind == 1:
        good = to_frame(Heartbeat(sender="f00d", epoch=epoch, seq=1))
        return good[: rng.randrange(len(good))]
    if kind == 2:  # right shape, wrong types
        return msgpack.packb([rng.randrange(0, 14), rng.choice([1, None, "x", b"y"]), "e", [], {}])
    if kind == 3:  # unknown type code
        return msgpack.packb([rng.randrange(14, 1000), "abcd", epoch])
    if kind == 4:  # a hello with garbage endpoints and a huge profile
        hello = Hello(
            sender=secrets.token_hex(8),
            epoch=epoch,
            name="x" * rng.randrange(0, 300),
            endpoints=(
                rng.choice(
                    ["garbage", "tcp://", "tcp://999.1.1.1:1", "ipc:///x", "tcp://127.0.0.1:²"]
                ),
            ),
            profile={"k": "v" * rng.randrange(0, 100)},
            session_id=None,
            resume_seq=rng.randrange(0, 2**40),
            resume_epoch=rng.randrange(0, 5),
            resume_origin="zz",
            prev_host=victim if rng.random() < 0.5 else None,
            suspects=(victim,),
        )
        return to_frame(hello)
    if kind == 5:  # a write forged in the host's own name, and from a stranger
        sender = victim if rng.random() < 0.5 else secrets.token_hex(8)
        op = rng.choice([("set", "k", 1), ("join", "x"), ("term", 9, "a", None, "r"), ("del", "")])
        return msgpack.packb([4, sender, epoch, rng.randrange(0, 2**63), 0, [list(op)], []])
    if kind == 6:  # deeply nested value
        value: object = 1
        for _ in range(rng.randrange(50, 120)):
            value = [value]
        return msgpack.packb([4, "abcd", epoch, 1, 0, [["set", "k", value]], []])
    if kind == 7:  # stale and future epochs
        return to_frame(Heartbeat(sender="f00d", epoch=rng.choice([0, 10**6]), seq=2**40))
    return to_frame(
        Write(
            sender="beef", epoch=epoch, req=1, acked_upto=0, ops=(("set", "k" * 300, 1),), conds=()
        )
    )


@pytest.mark.alone  # the host must heartbeat on time through the flood
def test_host_survives_100k_hostile_frames() -> None:
    app = f"hostile-{secrets.token_hex(4)}"
    host = p2pstate.join(
        app, interfaces=["127.0.0.1"], discovery_window=0.3, max_frame_size=1 << 20
    )
    peer = p2pstate.join(app, interfaces=["127.0.0.1"], discovery_window=0.3)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    attackers = []
    try:
        assert host.is_host and not peer.is_host
        peer["before"] = 1
        rng = random.Random(7)
        for _ in range(4):
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 0)
            sock.connect(host.me.endpoint)
            attackers.append(sock)
        frames = [_junk(rng, host.me.id, host.epoch) for _ in range(2000)]
        rss_before = 0
        for round_no in range(50):  # 100,000 frames
            for i, frame in enumerate(frames):
                attackers[i % 4].send(frame)
            peer[f"during{round_no}"] = round_no  # honest traffic keeps flowing
            if round_no == 5:
                rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        time.sleep(0.5)
        assert peer["during49"] == 49 and host["during49"] == 49
        peer["after"] = "still serving"
        assert host["after"] == "still serving"
        stats = host.stats
        assert stats.get("bad_frames", 0) + stats.get("dropped", 0) > 10_000, stats
        assert stats.get("internal_errors", 0) == 0, "a hostile frame made the core raise"
        assert host.is_host and not host.closed
        # Hostile hellos came and went as members; once the session is quiet
        # the peer's view of the members is the host's (it lags while they churn).
        deadline = time.monotonic() + 10
        while sorted(p.id for p in peer.peers) != sorted(
            {host.me.id, peer.me.id} | {p.id for p in host.peers}
        ):
            assert time.monotonic() < deadline, "the peer's members never matched the host's"
            time.sleep(0.05)
        grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
        assert grown_kib < 200_000, f"memory grew by {grown_kib} KiB"
    finally:
        for sock in attackers:
            sock.close()
        ctx.term()
        peer.close()
        host.close()


def test_a_hello_with_a_superscript_port_does_not_end_the_host() -> None:
    """Regression: "²".isdigit() is true and int("²") raises. One Hello with
    the endpoint tcp://127.0.0.1:² ended the host's I/O thread."""
    app = f"hostile-{secrets.token_hex(4)}"
    host = p2pstate.join(app, interfaces=["127.0.0.1"], discovery_window=0.3)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    raw = ctx.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    try:
        raw.connect(host.me.endpoint)
        for port in ("²", "٣", "9" * 30):
            hello = first_hello(
                secrets.token_hex(8),
                epoch=host.epoch,
                name="odd",
                endpoints=(f"tcp://127.0.0.1:{port}",),
            )
            raw.send(to_frame(hello))
        time.sleep(0.3)  # no event tells when the host has handled them
        host["still"] = "serving"
        assert host["still"] == "serving" and host.is_host
        assert host.stats.get("internal_errors", 0) == 0
    finally:
        raw.close()
        ctx.term()
        host.close()
