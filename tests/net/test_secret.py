"""Sessions with a secret (issue 7): what a stranger on the LAN can and cannot do.

Each claim of the README's threat model is checked here against real sockets
on loopback, most with a control that shows the attack works when its
precondition holds (the attacker knows the secret, or there is no secret), so
a test cannot pass merely because the attack was broken.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zmq
from netkit import ROOT, Join, PeerProcess, eventually, run_cli
from samples import first_hello

import p2pstate
from p2pstate.discovery import Discovery
from p2pstate.identity import fingerprint
from p2pstate.messages import WIRE_VERSION, Heartbeat, Hello, Message, Write, from_batch, to_frame
from p2pstate.session_key import derive_session_key

Spawn = Callable[..., PeerProcess]
SECRET = "correct horse battery staple"


def _host_of(peers: list[PeerProcess]) -> PeerProcess | None:
    for p in peers:
        if p.cmd("info")["is_host"]:
            return p
    return None


def test_three_peers_with_a_secret_replicate_and_fail_over(spawn: Spawn, app_name: str) -> None:
    peers = []
    for i in range(3):
        peers.append(spawn(name=f"p{i}", secret=SECRET))
        peers[-1].wait_ready()
    first = peers[0]
    assert first.cmd("info")["is_host"]
    ids = sorted(p.ready["id"] for p in peers)  # type: ignore[index]
    eventually(lambda: sorted(peers[2].cmd("info")["peers"]) == ids, 10)
    peers[1].cmd("set", key="before", value="kept")
    for p in peers:
        assert p.cmd("wait", key="before", value="kept")["value"] == "kept"
    [listed] = p2pstate.browse(app_name, 1.0)
    assert listed.secured and listed.host_id == first.ready["id"]  # type: ignore[index]

    first.kill()  # kill -9: the successor takes over with the same derived keypair
    rest = peers[1:]
    eventually(lambda: _host_of(rest) is not None, 15)
    new_host = _host_of(rest)
    assert new_host is not None
    for p in rest:
        assert p.cmd("get", key="before")["value"] == "kept"
    rest[1].cmd("set", key="after", value="failover")
    for p in rest:
        assert p.cmd("wait", key="after", value="failover")["value"] == "failover"
    eventually(
        lambda: (
            [(s.host_id, s.secured) for s in p2pstate.browse(app_name, 0.5, session="default")]
            == [(new_host.ready["id"], True)]
        ),  # type: ignore[index]
        15,
    )
    for p in rest:
        assert p.cmd("stats")["stats"].get("forged_senders", 0) == 0


def test_join_without_the_secret_or_with_a_wrong_one_fails(join: Join, app_name: str) -> None:
    host = join(secret=SECRET)
    host["k"] = "v"
    with pytest.raises(p2pstate.AuthenticationError, match="secured: join it with"):
        p2pstate.join(app_name, interfaces=["127.0.0.1"], discovery_window=0.3)
    with pytest.raises(p2pstate.AuthenticationError, match="did not accept our secret"):
        p2pstate.join(app_name, interfaces=["127.0.0.1"], discovery_window=0.3, secret="guess")
    # Neither made a rival session of the same name, nor got in.
    [listed] = p2pstate.browse(app_name, 1.0)
    assert listed.host_id == host.me.id and listed.secured and listed.players == 1
    assert [p.id for p in host.peers] == [host.me.id]
    # The right secret still gets in.
    friend = join(secret=SECRET)
    assert not friend.is_host and friend["k"] == "v"


def test_a_secret_does_not_join_an_open_session(join: Join, app_name: str) -> None:
    host = join()
    with pytest.raises(p2pstate.AuthenticationError, match="has no secret"):
        p2pstate.join(app_name, interfaces=["127.0.0.1"], discovery_window=0.3, secret=SECRET)
    [listed] = p2pstate.browse(app_name, 1.0)
    assert listed.host_id == host.me.id and not listed.secured


def test_quick_join_picks_sessions_of_its_kind(join: Join, app_name: str) -> None:
    """quick_join with a secret passes open sessions by, and one without a
    secret passes secured sessions by, instead of failing on them."""
    opened: list[p2pstate.SharedState] = []
    quick = {"browse_timeout": 0.5, "interfaces": ["127.0.0.1"], "discovery_window": 0.3}
    try:
        open_host = join()
        eventually(lambda: len(p2pstate.browse(app_name, 0.3)) == 1)
        opened.append(p2pstate.quick_join(app_name, secret=SECRET, **quick))
        secured = opened[-1]
        assert secured.is_host and secured.session != open_host.session
        eventually(lambda: len(p2pstate.browse(app_name, 0.3)) == 2)
        opened.append(p2pstate.quick_join(app_name, **quick))
        assert opened[-1].session == open_host.session and not opened[-1].is_host
        opened.append(p2pstate.quick_join(app_name, secret=SECRET, **quick))
        assert opened[-1].session == secured.session and not opened[-1].is_host
    finally:
        for s in reversed(opened):
            s.close()


# --------------------------------------------------------------------------- raw attackers


class Attacker:
    """A stranger with raw zmq sockets: a ROUTER where replies may come, and a
    DEALER to the host. ``key`` is the session server key it believes in
    (None: plaintext)."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], key: Any, host_endpoint: str):
        self.public, secret = zmq.curve_keypair()
        self.id = f"{fingerprint(self.public)}.{secrets.token_hex(4)}"
        self.inbox = ctx.socket(zmq.ROUTER)
        self.inbox.setsockopt(zmq.LINGER, 0)
        self.out = ctx.socket(zmq.DEALER)
        self.out.setsockopt(zmq.LINGER, 0)
        if key is not None:
            self.inbox.setsockopt(zmq.CURVE_SERVER, 1)
            self.inbox.setsockopt(zmq.CURVE_SECRETKEY, key.secret_key)
            self.out.setsockopt(zmq.CURVE_SERVERKEY, key.public_key)
            self.out.setsockopt(zmq.CURVE_PUBLICKEY, self.public)
            self.out.setsockopt(zmq.CURVE_SECRETKEY, secret)
        port = self.inbox.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.out.connect(host_endpoint)
        self.received: list[Message] = []

    def send(self, msg: Message) -> None:
        self.out.send(to_frame(msg))

    def hello(self) -> Hello:
        return first_hello(self.id, name="stranger", endpoints=(self.endpoint,))

    def collect(self) -> None:
        while self.inbox.poll(0):
            frames = self.inbox.recv_multipart()
            self.received.extend(from_batch(frames[-1], max_size=1 << 24))

    def close(self) -> None:
        self.inbox.close()
        self.out.close()


@pytest.fixture
def zmq_context() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def test_a_stranger_cannot_read(
    join: Join, app_name: str, zmq_context: zmq.Context[zmq.Socket[bytes]]
) -> None:
    """Strangers send a well-formed Hello: in plaintext, and with the key a
    wrong secret gives. Neither hears anything; a control attacker with the
    right secret gets the Welcome, and the value, through the same code."""
    host = join(secret=SECRET)
    marker = secrets.token_hex(12)
    host["treasure"] = marker
    right = derive_session_key(SECRET, app_name, "default")
    wrong = derive_session_key("guess", app_name, "default")
    attackers = {
        name: Attacker(zmq_context, key, host.me.endpoint)
        for name, key in (("plaintext", None), ("wrong", wrong), ("control", right))
    }
    try:
        for attacker in attackers.values():
            attacker.send(attacker.hello())

        def control_welcomed() -> bool:
            for attacker in attackers.values():
                attacker.collect()
            return any(m.TYPE == 2 for m in attackers["control"].received)

        eventually(control_welcomed, 10)
        assert marker in repr(attackers["control"].received)
        members = {p.id for p in host.peers}  # the control is let in (and later timed out)
        assert attackers["control"].id in members
        assert not {attackers["plaintext"].id, attackers["wrong"].id} & members
        time.sleep(1.0)  # as long again for the strangers, who hear nothing
        for name in ("plaintext", "wrong"):
            attackers[name].collect()
            assert attackers[name].received == [], name
    finally:
        for attacker in attackers.values():
            attacker.close()


@pytest.mark.parametrize("secured", [True, False], ids=["secret", "no-secret"])
def test_forged_sender_ids(
    join: Join, app_name: str, zmq_context: zmq.Context[zmq.Socket[bytes]], secured: bool
) -> None:
    """A member that knows the secret writes in another member's name. With a
    secret the host drops it and counts it; without one (the control) the
    same write is applied: there, ids are claimed, not proven."""
    options = {"secret": SECRET} if secured else {}
    host = join(**options)
    victim = join(**options)
    victim["mine"] = "victim's"
    key = derive_session_key(SECRET, app_name, "default") if secured else None
    mallory = Attacker(zmq_context, key, host.me.endpoint)
    try:
        forged = Write(
            sender=victim.me.id,
            epoch=host.epoch,
            req=10**6,
            acked_upto=10**6 - 1,  # "all before it were answered": no gap to wait for
            ops=(("set", "mine", "mallory's"),),
            conds=(),
        )
        mallory.send(forged)
        mallory.send(Heartbeat(sender=host.me.id, epoch=host.epoch, seq=0))
        if not secured:
            eventually(lambda: host["mine"] == "mallory's")
            assert host.stats.get("forged_senders", 0) == 0
            return
        eventually(lambda: host.stats.get("forged_senders", 0) == 2)
        victim["later"] = 1  # the honest write after it is applied; the forged one never
        assert host["later"] == 1 and host["mine"] == "victim's" and victim["mine"] == "victim's"
        # Mallory's own id passes the check (she knows the secret: she may be a member).
        mallory.send(Heartbeat(sender=mallory.id, epoch=host.epoch, seq=0))
        mallory.send(forged)
        eventually(lambda: host.stats.get("forged_senders", 0) == 3)
    finally:
        mallory.close()


# --------------------------------------------------------------------------- rogue hosts


class RogueHost:
    """Advertises itself over mDNS as the best host of the session (most
    players, highest epoch) and records whatever reaches its ROUTER. It knows
    the secret only in the control case."""

    def __init__(
        self, ctx: zmq.Context[zmq.Socket[bytes]], app: str, *, knows_secret: bool
    ) -> None:
        key = derive_session_key(SECRET if knows_secret else "guess", app, "default")
        self.router = ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.CURVE_SERVER, 1)
        self.router.setsockopt(zmq.CURVE_SECRETKEY, key.secret_key)
        port = self.router.bind_to_random_port("tcp://127.0.0.1")
        self.id = f"{'0' * 16}.{secrets.token_hex(4)}"
        self.received: list[Message] = []
        self.discovery = Discovery(["127.0.0.1"])
        self.discovery.advertise(
            app=app,
            session="default",
            node_id=self.id,
            host_name="rogue",
            port=port,
            addresses=["127.0.0.1"],
            epoch=1000,
            session_id=secrets.token_hex(8),
            properties={"players": "99", "secured": "1", "rev": "1", "wire": str(WIRE_VERSION)},
        )

    def collect(self) -> list[Message]:
        while self.router.poll(0):
            self.received.extend(from_batch(self.router.recv_multipart()[-1], max_size=1 << 24))
        return self.received

    def close(self) -> None:
        self.discovery.close()
        self.router.close()


@pytest.mark.parametrize("knows_secret", [False, True], ids=["rogue", "control"])
def test_a_rogue_host_does_not_capture_a_joiner(
    app_name: str, zmq_context: zmq.Context[zmq.Socket[bytes]], knows_secret: bool
) -> None:
    rogue = RogueHost(zmq_context, app_name, knows_secret=knows_secret)
    try:
        if knows_secret:
            # Control: a host that knows the secret does get the joiner's Hello.
            s = p2pstate.join(app_name, interfaces=["127.0.0.1"], secret=SECRET)
            try:
                eventually(lambda: any(m.sender == s.me.id for m in rogue.collect()))
            finally:
                s.close()
            return
        with pytest.raises(p2pstate.AuthenticationError, match="did not accept our secret"):
            p2pstate.join(app_name, interfaces=["127.0.0.1"], secret=SECRET)
        time.sleep(0.5)
        assert rogue.collect() == []
    finally:
        rogue.close()


@pytest.mark.parametrize("knows_secret", [False, True], ids=["rogue", "control"])
def test_a_rogue_host_does_not_capture_a_session(
    join: Join, app_name: str, zmq_context: zmq.Context[zmq.Socket[bytes]], knows_secret: bool
) -> None:
    """A session is running when a rogue advertises itself as a better host
    of it. The honest host announces itself to the rogue to settle who hosts
    (as after a split): without the secret, that never gets through, and the
    session carries on, its values never sent to the rogue."""
    host = join(secret=SECRET)
    peer = join(secret=SECRET)
    rogue = RogueHost(zmq_context, app_name, knows_secret=knows_secret)
    try:
        if knows_secret:
            eventually(lambda: any(m.sender == host.me.id for m in rogue.collect()), 10)
            return
        eventually(lambda: host.stats.get("unauthenticated_nodes", 0) > 0, 10)
        marker = secrets.token_hex(12)
        peer["after the rogue"] = marker
        assert host["after the rogue"] == marker
        assert host.is_host and peer.host is not None and peer.host.id == host.me.id
        # It ranks the rogue first (more players), finds it does not know the
        # secret, and joins the host.
        late = join(secret=SECRET)
        assert late.host is not None and late.host.id == host.me.id
        assert late["after the rogue"] == marker
        time.sleep(0.5)
        assert rogue.collect() == []
    finally:
        rogue.close()


# --------------------------------------------------------------------------- the command


def _cli(*args: str, secret_env: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("P2PSTATE_SECRET", None)
    if secret_env is not None:
        env["P2PSTATE_SECRET"] = secret_env
    return run_cli(*args, env=env)


def test_the_command_with_a_secret(spawn: Spawn, app_name: str) -> None:
    spawn(name="host", secret=SECRET).wait_ready()
    done = _cli("set", app_name, "k", "42", "--secret", SECRET)
    assert done.returncode == 0, done.stderr
    done = _cli("get", app_name, "k", secret_env=SECRET)
    assert (done.returncode, done.stdout.strip()) == (0, "42"), done.stderr
    done = _cli("get", app_name, "k")
    assert done.returncode == 1 and "AuthenticationError" in done.stderr, done.stderr
    assert "secret" in done.stderr and "Traceback" not in done.stderr
    done = _cli("keys", app_name, "--secret", "guess")
    assert done.returncode == 1 and "did not accept our secret" in done.stderr, done.stderr
    done = _cli("lobby", app_name, "--once")
    assert done.returncode == 0 and "secured" in done.stdout, done.stdout
    assert SECRET not in done.stdout + done.stderr
