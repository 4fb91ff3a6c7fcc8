"""Permissions with real peers on loopback: modes, admin, bans and limits
through the public API, and a ban and an authorization that hold across a
kill -9 of the host (the admin)."""

from __future__ import annotations

import secrets
import time
from typing import Any

import pytest
import zmq
from netkit import Join, PeerProcess, eventually, new_installation, saw_event
from samples import first_hello

import p2pstate
from p2pstate.core.ids import identity_of
from p2pstate.messages import Message, Refused, Welcome, from_batch, to_frame


def _hello_from(node_id: str, host_endpoint: str, timeout: float = 5.0) -> Message:
    """Say hello to the host at *host_endpoint* in the name of *node_id*, and
    return its answer (sent to a ROUTER of our own, as to any peer)."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    dealer = ctx.socket(zmq.DEALER)
    try:
        for sock in (router, dealer):
            sock.setsockopt(zmq.LINGER, 0)
        router.bind("tcp://127.0.0.1:*")
        endpoint = router.getsockopt(zmq.LAST_ENDPOINT)
        assert isinstance(endpoint, bytes)
        dealer.connect(host_endpoint)
        hello = first_hello(node_id, name="returning", endpoints=(endpoint.decode(),))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dealer.send(to_frame(hello))
            if router.poll(200):
                _, frame = router.recv_multipart()
                for msg in from_batch(frame, max_size=1 << 24):
                    if isinstance(msg, (Refused, Welcome)):
                        return msg
        raise AssertionError(f"no answer to a hello from {node_id}")
    finally:
        router.close(linger=0)
        dealer.close(linger=0)
        ctx.term()


def _host_of(peers: list[PeerProcess]) -> PeerProcess:
    hosts = [p for p in peers if p.cmd("info")["is_host"]]
    assert len(hosts) == 1
    return hosts[0]


def test_ban_and_authorize_hold_across_a_kill_9_of_the_admin_host(spawn: Any) -> None:
    admin = spawn(writemode=p2pstate.AUTHORIZED_ONLY)
    admin_info = admin.wait_ready()
    assert admin_info["is_host"]
    peers = [spawn() for _ in range(4)]
    by_id = {p.wait_ready()["id"]: p for p in peers}
    eventually(lambda: len(admin.cmd("info")["peers"]) == 5, 10)
    # Roles by join order: the first to join after the admin succeeds it.
    order = admin.cmd("info")["peers"][1:]
    heir, writer, other, villain = (by_id[i] for i in order)
    ids = dict(zip(("heir", "writer", "other", "villain"), order, strict=True))

    assert admin.cmd("acl", action="authorize", id=ids["writer"]) == {"ok": True}
    assert admin.cmd("acl", action="ban", id=ids["villain"]) == {"ok": True}
    assert writer.cmd("set", key="k", value=1) == {"ok": True}
    denied = other.cmd("set", key="k", value=2)["error"]
    assert denied.startswith("PermissionDeniedError") and "authorized_only" in denied
    assert villain.cmd("set", key="k", value=3)["error"].startswith("BannedError")
    assert saw_event(villain, "Expelled")
    eventually(lambda: ids["villain"] not in admin.cmd("info")["peers"], 5)

    admin.kill()  # kill -9 of the host, who is the admin
    eventually(lambda: heir.cmd("info")["is_host"], 10)
    new_host = heir.cmd("info")
    assert new_host["admin"] == identity_of(admin_info["id"]), "the admin stays the creator"
    # The new host enforces the same rules.
    eventually(lambda: writer.cmd("set", key="k", value=4) == {"ok": True}, 10)
    denied = other.cmd("set", key="k", value=5)["error"]
    assert denied.startswith("PermissionDeniedError") and "authorized_only" in denied
    not_admin = heir.cmd("acl", action="unban", id=ids["villain"])["error"]
    assert not_admin.startswith("PermissionDeniedError") and "admin" in not_admin
    # The banned identity cannot come back through the new host; a stranger can.
    refused = _hello_from(ids["villain"], new_host["endpoint"])
    assert isinstance(refused, Refused) and refused.reason == "banned"
    welcome = _hello_from(secrets.token_hex(8), new_host["endpoint"])
    assert isinstance(welcome, Welcome) and welcome.snapshot is not None
    assert identity_of(ids["villain"]) in welcome.snapshot.access.banned
    assert identity_of(ids["writer"]) in welcome.snapshot.access.authorized
    assert writer.cmd("get", key="k") == {"value": 4}


def test_the_permission_api_in_process(join: Join) -> None:
    a = join(writemode=p2pstate.AUTHORIZED_ONLY)
    b = join(writemode=p2pstate.ANY)  # a joiner's own modes are ignored: the session's rule
    assert a.is_host and a.admin == b.admin == identity_of(a.me.id)
    assert b.writemode == p2pstate.AUTHORIZED_ONLY and b.readmode == p2pstate.ANY
    with pytest.raises(p2pstate.PermissionDeniedError, match="authorized_only"):
        b["k"] = 1
    with pytest.raises(p2pstate.PermissionDeniedError, match="admin"):
        b.authorize(b.me.id)
    with pytest.raises(ValueError, match="admin cannot be banned"):
        a.ban(a.me.id)
    with pytest.raises(ValueError):
        a.ban("")
    a.authorize(b.me.id)
    eventually(lambda: identity_of(b.me.id) in b.authorized)
    b["k"] = 1
    a.unauthorize(b.me.id)
    with pytest.raises(p2pstate.PermissionDeniedError):
        b["k"] = 2
    b.poll()
    a.ban(b.me.id)
    assert identity_of(b.me.id) in a.banned and b.me.id not in [p.id for p in a.peers]
    eventually(lambda: any(isinstance(e, p2pstate.Expelled) for e in b.poll()))
    with pytest.raises(p2pstate.BannedError):
        b.set("k", 3)
    with pytest.raises(p2pstate.BannedError):
        b.flush()
    assert b["k"] == 1, "reads still show the state as it was"
    a["k"] = 5  # the session goes on
    b.close()  # regression: closing an expelled state raised BannedError from its flush
    assert b.closed


def test_readmode_refuses_a_newcomer_with_a_clear_error(app_name: str) -> None:
    a = p2pstate.join(
        app_name,
        interfaces=["127.0.0.1"],
        discovery_window=0.3,
        readmode=p2pstate.ADMIN_ONLY,
        identity_dir=new_installation(),
    )
    try:
        with pytest.raises(p2pstate.PermissionDeniedError, match="authorize"):
            p2pstate.join(
                app_name,
                interfaces=["127.0.0.1"],
                discovery_window=0.3,
                identity_dir=new_installation(),
            )
        assert len(a.peers) == 1, "a refused peer must not start a second session"
    finally:
        a.close()


def test_limits_give_clear_errors(join: Join) -> None:
    a = join(max_keys=2, max_total_bytes=10_000, write_rate=0.01, write_burst=6)
    b = join()
    a["one"] = 1
    b["two"] = 2
    with pytest.raises(p2pstate.QuotaExceededError, match="max_keys"):
        b["three"] = 3
    with pytest.raises(p2pstate.QuotaExceededError, match="max_total_bytes"):
        b["two"] = "x" * 20_000
    b["two"] = 22  # an overwrite fits
    b["two"] = 23
    b["two"] = 24
    with pytest.raises(p2pstate.RateLimitedError, match="writes/s"):
        b["two"] = 25  # b's sixth write (its fourth and fifth were refused)
    a["one"] = 11  # each peer has its own bucket
    assert b["two"] == 24


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("readmode", "everyone"),
        ("writemode", None),
        ("max_keys", 0),
        ("max_total_bytes", -1),
        ("write_rate", 0),
        ("write_rate", float("inf")),
        ("write_burst", 1.5),
        ("max_keys", 10**12),
    ],
)
def test_bad_permission_options_are_refused_before_any_network(option: str, value: Any) -> None:
    with pytest.raises(ValueError, match=option):
        p2pstate.Options(**{option: value})
