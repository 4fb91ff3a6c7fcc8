"""Hostile players against a secured session, on real sockets on loopback
(issue 16.1, issue 13.3): a member with the secret who is banned, a member who
is not the admin, and a stranger without the secret each send every message
type with forged fields; a secret holder hosting a session of its own lies
about its player count. The session keeps its host, its admin and its bans.

The attacker is raw zmq with the CURVE keys the secret gives (as a modified
copy of the game would have), so its sender id is its own, proven identity."""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
import zmq
from netkit import Join, eventually
from samples import first_hello

from p2pstate.core.node import Node
from p2pstate.identity import fingerprint
from p2pstate.messages import (
    MAX_COUNTER,
    Ack,
    Gone,
    Handoff,
    Heartbeat,
    Hello,
    Leave,
    Message,
    Redirect,
    Refused,
    Result,
    Welcome,
    from_batch,
    to_frame,
)
from p2pstate.session_key import derive_session_key
from p2pstate.state import SharedState

SECRET = "correct horse battery staple"
TOP = MAX_COUNTER - 2  # the highest epoch whose + 1 still encodes


class Mallory:
    """One identity (a CURVE keypair) with a ROUTER for replies and a DEALER
    per node it writes to. ``knows_secret`` False: the key a wrong secret gives."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], app: str, knows_secret: bool) -> None:
        self.key = derive_session_key(SECRET if knows_secret else "guess", app, "default")
        self.public, self.secret = zmq.curve_keypair()
        self.identity = fingerprint(self.public)
        self.id = f"{self.identity}.{secrets.token_hex(4)}"
        self.ctx = ctx
        self.inbox = ctx.socket(zmq.ROUTER)
        self.inbox.setsockopt(zmq.LINGER, 0)
        self.inbox.setsockopt(zmq.CURVE_SERVER, 1)
        self.inbox.setsockopt(zmq.CURVE_SECRETKEY, self.key.secret_key)
        self.endpoint = f"tcp://127.0.0.1:{self.inbox.bind_to_random_port('tcp://127.0.0.1')}"
        self.out: dict[str, zmq.Socket[bytes]] = {}
        self.received: list[Message] = []

    def send(self, endpoint: str, msg: Message) -> None:
        sock = self.out.get(endpoint)
        if sock is None:
            sock = self.out[endpoint] = self.ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.CURVE_SERVERKEY, self.key.public_key)
            sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public)
            sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret)
            sock.connect(endpoint)
        sock.send(to_frame(msg))

    def collect(self) -> list[Message]:
        new: list[Message] = []
        while self.inbox.poll(0):
            new.extend(from_batch(self.inbox.recv_multipart()[-1], max_size=1 << 24))
        self.received.extend(new)
        return new

    def welcome(self, hello: Hello, epoch: int) -> Welcome:
        """The Welcome of a session of Mallory's own: she is its admin, nobody is banned."""
        rival = Node(node_id=self.id, name="mallory", endpoints=(self.endpoint,))
        rival.start_host("forged", 0.0)
        return Welcome(
            sender=self.id,
            epoch=epoch,
            session_id="forged",
            host_id=self.id,
            snapshot=rival.replica.snapshot(),
            changes=(),
            resume_seq=hello.resume_seq,
            resume_epoch=hello.resume_epoch,
            resume_origin=hello.resume_origin,
        )

    def close(self) -> None:
        for sock in (self.inbox, *self.out.values()):
            sock.close()


@pytest.fixture
def ctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield context
    context.destroy(linger=0)


def _session(join: Join) -> tuple[SharedState, SharedState, SharedState]:
    host = join(secret=SECRET)
    bob = join(secret=SECRET)
    carol = join(secret=SECRET)
    host.ban("0123456789abcdef")  # the admin has used its role: the session is claimed
    eventually(lambda: "0123456789abcdef" in carol.banned)
    return host, bob, carol


def _forged(m: Mallory, victim: SharedState, epoch: int) -> list[Message]:
    """Every message type, with the fields a hostile peer would choose."""
    me, host = m.id, victim.me.id
    redirects: list[Message] = [
        Redirect(
            sender=me,
            epoch=e,
            host_id=me,
            endpoints=(m.endpoint,),
            reason=reason,
            players=players,
        )
        for reason in ("host", "takeover", "failover", "handoff", "merge")
        for e, players in ((epoch + 1, 10**6), (TOP, 1))
    ]
    hello = first_hello(me, epoch=TOP, name="m", endpoints=(m.endpoint,))
    hellos: list[Message] = [
        replace(hello, prev_host=host, suspects=(host,), session_id=sid) for sid in (None, "forged")
    ]
    others: list[Message] = [
        Handoff(sender=me, epoch=epoch),
        Gone(sender=me, epoch=epoch),
        m.welcome(hello, TOP),
        Result(sender=me, epoch=epoch, req=1, status="ok", detail=None, seq=1),
        Ack(sender=me, epoch=epoch, seq=TOP),
        Heartbeat(sender=me, epoch=epoch, seq=TOP),
        Refused(sender=me, epoch=epoch, reason="banned"),
    ]
    return redirects + hellos + others


def _member(m: Mallory, host: SharedState) -> None:
    """Mallory joins as any player with the secret would."""
    m.send(host.me.endpoint, first_hello(m.id, name="m", endpoints=(m.endpoint,)))
    eventually(lambda: any(isinstance(x, Welcome) for x in m.collect() + m.received), 5)


def _follows(peer: SharedState, host: SharedState) -> bool:
    return peer.host is not None and peer.host.id == host.me.id


@pytest.mark.parametrize("who", ["banned", "member", "stranger"])
def test_forged_messages_of_every_type_keep_the_host_the_admin_and_the_bans(
    join: Join, app_name: str, ctx: zmq.Context[zmq.Socket[bytes]], who: str
) -> None:
    host, bob, carol = _session(join)
    admin, epoch = host.admin, host.epoch
    m = Mallory(ctx, app_name, knows_secret=who != "stranger")
    try:
        if who == "banned":
            _member(m, host)
            host.ban(m.identity)
            eventually(lambda: m.identity in carol.banned)
        elif who == "member":
            _member(m, host)
        for last in (False, False, True):
            # Her own Leave last: a member who left is no member any more.
            leave = [Leave(sender=m.id, epoch=epoch)] if last else []
            for msg in _forged(m, host, epoch) + leave:
                for victim in (host, bob, carol):
                    if who == "member":  # a member that keeps its link alive
                        beat = Heartbeat(sender=m.id, epoch=host.epoch, seq=0)
                        m.send(host.me.endpoint, beat)
                    m.send(victim.me.endpoint, msg)
            time.sleep(0.3)
        time.sleep(1.0)  # as long as a failover would take
        assert host.is_host and not bob.is_host and not carol.is_host
        assert host.epoch == epoch, "no wire number moved the host's epoch"
        for node in (host, bob, carol):
            assert node.admin == admin
            assert "0123456789abcdef" in node.banned
            assert node.host is not None and node.host.id == host.me.id
        bob["after"] = who
        assert host["after"] == who and carol.get("after") in (None, who)
        assert host.stats.get("internal_errors", 0) == 0
    finally:
        m.close()


def test_a_leave_in_another_members_name_removes_nobody(
    join: Join, app_name: str, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    """With a secret only a member itself may leave: a member with the
    secret who sends a Leave in bob's name (his id, the current epoch) to
    the host is caught by the proven identity, and bob stays a member."""
    host, bob, carol = _session(join)
    m = Mallory(ctx, app_name, knows_secret=True)
    try:
        _member(m, host)
        eventually(lambda: any(p.id == m.id for p in carol.peers))
        for _ in range(3):
            m.send(host.me.endpoint, Leave(sender=bob.me.id, epoch=host.epoch))
        eventually(lambda: host.stats.get("forged_senders", 0) >= 3)
        bob["still"] = 1
        eventually(lambda: carol.get("still") == 1)
        assert any(p.id == bob.me.id for p in host.peers)
        assert host.is_host and bob.host is not None and bob.host.id == host.me.id
    finally:
        m.close()


def test_a_rival_host_lying_about_its_players_gets_neither_the_admin_role_nor_the_bans(
    join: Join, app_name: str, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    """A secret holder who is not banned hosts a session of its own (she is
    its admin, it bans no one) and claims a million players. The host may
    step down to look (player counts are claims) but never takes her state:
    the admin stays admin, the bans stay, on every copy, and it hosts again."""
    host, bob, carol = _session(join)
    host["score"] = 7
    admin = host.admin
    m = Mallory(ctx, app_name, knows_secret=True)
    try:
        # A standing that wins by the merge rule alone (another session
        # with a far longer history, a majority, a million players).
        claim = Redirect(
            sender=m.id,
            epoch=host.epoch + 1,
            host_id=m.id,
            endpoints=(m.endpoint,),
            reason="host",
            players=10**6,
            majority=True,
            seq=10**9,
            terms=((1, 1, m.id),),
        )
        m.send(host.me.endpoint, claim)
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:  # answer every Hello as a host would
            for msg in m.collect():
                if isinstance(msg, Hello):
                    m.send(msg.endpoints[0], m.welcome(msg, host.epoch + 1))
            time.sleep(0.01)
        m.send(host.me.endpoint, claim)  # again: refused once, she is not weighed again
        eventually(lambda: host.is_host, 5)
        for node in (host, bob, carol):
            assert node.admin == admin
            assert node.banned == {"0123456789abcdef"}
            assert node["score"] == 7
        eventually(lambda: all(_follows(n, host) for n in (bob, carol)))
        assert host.stats.get("refused_state_another_admin") == 1
        bob["after"] = 1
        assert host["after"] == 1
    finally:
        m.close()


@pytest.mark.alone  # the host must heartbeat on time through the flood
def test_a_secured_host_survives_100k_hostile_frames_from_a_banned_member(
    join: Join, app_name: str, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    """test_hostile's 100k frames, from a banned player with the secret, mixed
    with her own forged messages of every type: the host drops them all and
    keeps serving, hosting, and its admin and bans."""
    from test_hostile import _junk

    host, bob, carol = _session(join)
    m = Mallory(ctx, app_name, knows_secret=True)
    try:
        _member(m, host)
        host.ban(m.identity)
        eventually(lambda: m.identity in carol.banned)
        rng = random.Random(11)
        own = [to_frame(msg) for msg in _forged(m, host, host.epoch)]
        frames = [
            rng.choice(own) if i % 10 == 0 else _junk(rng, host.me.id, host.epoch)
            for i in range(2000)
        ]
        sock = m.out.get(host.me.endpoint) or _dealer(m, host.me.endpoint)
        started = time.monotonic()
        for round_no in range(50):  # 100,000 frames
            for frame in frames:
                sock.send(frame)
            bob[f"during{round_no}"] = round_no  # honest traffic keeps flowing
        elapsed = time.monotonic() - started
        eventually(lambda: host.get("during49") == 49, 10)

        def counted() -> int:
            stats = host.stats
            keys = ("forged_senders", "bad_frames", "dropped")
            return sum(stats.get(key, 0) for key in keys)

        eventually(lambda: counted() > 50_000, 20)  # her link drains after bob's writes
        assert host.stats.get("internal_errors", 0) == 0
        assert host.is_host and not bob.is_host and not carol.is_host
        for node in (host, bob, carol):
            assert node.admin == host.admin and m.identity in node.banned
        print(f"100k hostile frames on a secured host: sent in {elapsed:.1f} s")
    finally:
        m.close()


def _dealer(m: Mallory, endpoint: str) -> zmq.Socket[bytes]:
    m.send(endpoint, Heartbeat(sender=m.id, epoch=0, seq=0))
    sock = m.out[endpoint]
    sock.setsockopt(zmq.SNDHWM, 0)
    return sock
