"""Issue 16, item 3: a host's links to other peers are capped, reused and
closed. Each message to a new peer id opens a socket (with a secret, a
monitor socket too); nothing may let a stranger or a banned player make the
host open them without bound, until it runs out of sockets and the next
honest joiner hosts a rival session."""

from __future__ import annotations

import os
import secrets
import time

import pytest
import zmq
from netkit import Join, eventually
from samples import first_hello

from p2pstate.discovery import HostRecord
from p2pstate.identity import fingerprint
from p2pstate.messages import WIRE_VERSION, Refused, from_batch, to_frame
from p2pstate.options import Options
from p2pstate.session_key import derive_session_key

SECRET = "links are not free"
HELLOS = 2000
CAP = 64  # the host's max_links here: small, so that the bound shows well below zmq's 1023


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class BannedPlayer:
    """A player who knows the secret, with a CURVE keypair of its own; its
    Hellos come from a fresh instance id each time, as restarts would."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], app: str, host_endpoint: str):
        key = derive_session_key(SECRET, app, "default")
        public, secret = zmq.curve_keypair()
        self.identity = fingerprint(public)
        self.inbox = ctx.socket(zmq.ROUTER)  # where the host's Refused messages come
        self.inbox.setsockopt(zmq.LINGER, 0)
        self.inbox.setsockopt(zmq.CURVE_SERVER, 1)
        self.inbox.setsockopt(zmq.CURVE_SECRETKEY, key.secret_key)
        self.endpoint = f"tcp://127.0.0.1:{self.inbox.bind_to_random_port('tcp://127.0.0.1')}"
        self.out = ctx.socket(zmq.DEALER)
        self.out.setsockopt(zmq.LINGER, 0)
        self.out.setsockopt(zmq.SNDHWM, 0)
        self.out.setsockopt(zmq.CURVE_SERVERKEY, key.public_key)
        self.out.setsockopt(zmq.CURVE_PUBLICKEY, public)
        self.out.setsockopt(zmq.CURVE_SECRETKEY, secret)
        self.out.connect(host_endpoint)
        self.refusals = 0

    def hello_from_a_new_instance(self, epoch: int) -> None:
        sender = f"{self.identity}.{secrets.token_hex(4)}"
        self.out.send(to_frame(first_hello(sender, epoch=epoch, endpoints=(self.endpoint,))))

    def collect(self) -> int:
        while self.inbox.poll(0):
            body = self.inbox.recv_multipart()[-1]
            self.refusals += sum(isinstance(m, Refused) for m in from_batch(body, max_size=1 << 24))
        return self.refusals

    def close(self) -> None:
        self.inbox.close()
        self.out.close()


@pytest.mark.alone  # asserts a wall-clock bound
def test_hellos_from_fresh_instances_of_a_banned_identity_open_bounded_links(
    join: Join, app_name: str
) -> None:
    host = join(secret=SECRET, max_links=CAP)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    player = BannedPlayer(ctx, app_name, host.me.endpoint)
    try:
        host.ban(player.identity)
        baseline = _open_fds()
        most = baseline
        for i in range(HELLOS):
            player.hello_from_a_new_instance(host.epoch)
            if i % 50 == 49:
                # Paced so the host keeps up: the bound must hold while it serves them.
                eventually(lambda n=i + 1: host.stats.get("refused_banned", 0) >= n - 50, 20)
                most = max(most, _open_fds())
        eventually(lambda: host.stats.get("links_closed", 0) >= HELLOS - CAP, 30)
        most = max(most, _open_fds())
        # A link holds about five descriptors in this process (the DEALER's
        # mailbox and TCP socket, the monitor's pair while its handshake is
        # watched, the player's accepted connection), and a closed socket
        # keeps them until zmq's reaper thread gets to it: 2,000 links would
        # be 10,000 of them (before this fix, zmq ran out of sockets at 1,023).
        # Links reconnect within 10 ms (a crashed host is suspected at once),
        # so a closing link's retries add a few more in flight: measured peak
        # 811 above the baseline at CAP 64, in about one run of seven.
        assert most - baseline < 14 * CAP, (baseline, most, host.stats)
        eventually(lambda: _open_fds() - baseline < 6 * CAP, 10)
        assert host.stats["links"] <= CAP
        assert player.collect() > 0  # refusals were sent, not only sockets closed
        honest = join(secret=SECRET)
        assert not honest.is_host and honest.host is not None
        assert honest.host.id == host.me.id
        honest["after"] = "joined"
        eventually(lambda: host.get("after") == "joined")
    finally:
        player.close()
        ctx.destroy(linger=0)


def test_idle_links_to_strangers_are_closed(join: Join, app_name: str) -> None:
    """A refused stranger's link does not stay open until the cap pushes it
    out: it is closed soon after the refusal went."""
    host = join(secret=SECRET)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    player = BannedPlayer(ctx, app_name, host.me.endpoint)
    try:
        host.ban(player.identity)
        player.hello_from_a_new_instance(host.epoch)
        eventually(lambda: player.collect() == 1, 10)
        eventually(lambda: host.stats.get("links_closed", 0) >= 1, 10)
        assert host.stats.get("links", -1) == 0, host.stats
    finally:
        player.close()
        ctx.destroy(linger=0)


def test_links_to_members_stay_open(join: Join, app_name: str) -> None:
    """The sweep closes strangers' links, never a member's: writes keep flowing."""
    host = join(secret=SECRET, max_links=CAP)
    peer = join(secret=SECRET)
    for i in range(20):
        peer[f"k{i}"] = i
        time.sleep(0.05)
    assert host.stats.get("links_closed", 0) == 0, host.stats
    assert host.stats.get("links", 0) == 1
    assert host["k19"] == 19


def test_fake_secured_adverts_open_bounded_links(join: Join, app_name: str) -> None:
    """A stranger without the secret advertises 600 secured hosts of the
    session at a port where nothing answers. The host greets each (two halves
    of a split session meet that way), and each greeting opens a link that
    keeps trying to connect; they stay within the cap. The adverts are handed
    to the session's discovery callback, where zeroconf delivers them."""
    host = join(secret=SECRET, max_links=CAP)
    runtime = host._rt  # the mDNS callback, without 600 real adverts
    baseline = _open_fds()
    properties = {"players": "99", "secured": "1", "rev": "1", "wire": str(WIRE_VERSION)}
    for i in range(600):
        record = HostRecord(
            app=app_name,
            session="default",
            node_id=f"{secrets.token_hex(8)}.{secrets.token_hex(4)}",
            host_name="fake",
            endpoints=("tcp://127.0.0.1:1",),
            epoch=1000 + i,
            session_id=secrets.token_hex(8),
            properties=properties,
        )
        runtime.startup.on_record("added", record, f"fake{i}")
    eventually(lambda: host.stats.get("links_closed", 0) >= 600 - CAP, 20)
    assert _open_fds() - baseline < 6 * CAP, (baseline, _open_fds(), host.stats)
    assert host.stats.get("internal_errors", 0) == 0, host.stats
    honest = join(secret=SECRET)
    assert not honest.is_host and honest.host is not None and honest.host.id == host.me.id


def test_members_links_outlast_a_flood_and_a_departed_members_link_closes(
    join: Join, app_name: str
) -> None:
    """At the cap the strangers' links go, never a member's; a member that
    leaves has its link closed soon after, not when the cap comes round."""
    host = join(secret=SECRET, max_links=4)
    first, second = join(secret=SECRET), join(secret=SECRET)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    player = BannedPlayer(ctx, app_name, host.me.endpoint)
    try:
        host.ban(player.identity)
        for _ in range(300):
            player.hello_from_a_new_instance(host.epoch)
        # 300 new links, room for 2 beside the members' 2: the rest pushed out.
        eventually(lambda: host.stats.get("links_evicted", 0) >= 290, 20)
        links = host._rt.transport._links  # which links are open, by peer id
        assert {first.me.id, second.me.id} <= set(links), host.stats
        first["still"] = "writing"
        eventually(lambda: host.get("still") == "writing" and second.get("still") == "writing")
        closed = host.stats.get("links_closed", 0)
        second.close()
        eventually(lambda: second.me.id not in links, 10)
        assert host.stats["links_closed"] > closed
        assert first.me.id in links
    finally:
        player.close()
        ctx.destroy(linger=0)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"max_links": 0}, ValueError),
        ({"max_links": -5}, ValueError),
        ({"max_links": "256"}, TypeError),
        ({"max_links": True}, TypeError),
        ({"link_idle": 0}, ValueError),
    ],
)
def test_link_options_are_checked(options: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error, match=r"max_links|link_idle"):
        Options(**options)  # type: ignore[arg-type]
