"""Issue 16 item 6: the host keeps the state within what one snapshot (one
frame of max_frame_size) carries, so a newcomer can always join."""

from __future__ import annotations

from dataclasses import replace

from simsession import CONFIG, Session, done, start_players

from p2pstate.codec import MAX_KEY_BYTES
from p2pstate.core.replica import Replica
from p2pstate.messages import EPHEMERAL, OWNER_ONLY, Welcome, to_frame
from p2pstate.options import Options

_FRAME = 16 * 1024 * 1024  # max_frame_size's default, and the simulator's


def _welcome_bytes(session: Session) -> int:
    host = session.host()
    welcome = Welcome(
        sender=host.me.id,
        epoch=host.epoch,
        session_id=host.replica.session_id,
        host_id=host.me.id,
        snapshot=host.replica.snapshot(),
        changes=(),
    )
    return len(to_frame(welcome))


def test_values_within_every_default_limit_still_fit_a_snapshot() -> None:
    session = Session()
    a, b = session.start(2)
    statuses = []
    for i in range(300):  # 300 values of 60 KB: 17 MiB, within max_total_bytes
        statuses.append(session.put(b, f"v{i}", bytes([i % 256]) * 60_000))
    assert statuses[0].status == "ok" and statuses[-1].status == "quota"
    assert statuses[-1].detail["limit"] == "max_frame_size"
    assert _welcome_bytes(session) <= _FRAME
    newcomer = session.net.add_node("late")
    assert session.run_until(lambda: newcomer.ready, 10.0), session.tail()
    assert session.settle()
    assert len(newcomer.replica.data) == len(a.replica.data) > 200


def test_long_keys_count_toward_the_snapshot_too() -> None:
    session = Session(config=replace(CONFIG, max_snapshot_bytes=1024 * 1024))
    _, b = session.start(2)
    refused = None
    for batch in range(40):
        ops = tuple(("set", f"{batch:02}{i:03}".ljust(MAX_KEY_BYTES, "k"), i) for i in range(100))
        out = session.write(b, ops)
        assert session.run_until(out.__len__), session.tail()
        if out[0].status != "ok":
            refused = out[0]
            break
    assert refused is not None and refused.status == "quota"
    assert _welcome_bytes(session) <= 1024 * 1024


def test_a_write_that_shrinks_the_state_is_let_through() -> None:
    session, (_, bob) = start_players("a1ice.1", "b0b.1")
    for i in range(400):
        if done(session, bob, ("set", f"v{i}", bytes(60_000))).status != "ok":
            break
    assert done(session, bob, ("set", "v0", b"small")).status == "ok"
    assert done(session, bob, ("del", "v1")).status == "ok"


def test_the_snapshot_bound_is_the_frame_size_a_peer_accepts() -> None:
    assert Options(max_frame_size=4 << 20).core_config().max_snapshot_bytes == 4 << 20
    assert Options().core_config().max_snapshot_bytes == _FRAME


def test_every_replica_keeps_the_byte_counts_a_recount_gives() -> None:
    session, (alice, bob, carol) = start_players("a1ice.1", "b0b.1", "ca401.1")
    for op in (
        ("set", "plain", "x" * 100),
        ("set", "cursor/bob", [1, 2], EPHEMERAL, 0.0),
        ("set", "name/bob", "bob", OWNER_ONLY, 0.0),
        ("profile", {"color": "red"}),
        ("set", "plain", {"now": "a dict"}),
        ("del", "plain"),
    ):
        assert done(session, bob, op).status == "ok", op
    assert done(session, carol, ("set", "c", "y" * 50, EPHEMERAL, 0.0)).status == "ok"
    restore = ("restore", (("r", 1, "", 0, 0.0), ("name/bob", "bob", "b0b.1", OWNER_ONLY, 0.0)))
    assert done(session, alice, restore).status == "ok"
    session.net.leave(carol.me.id)
    assert session.settle()
    for node in session.live():
        fresh = Replica()
        fresh.load(node.replica.snapshot())
        counts = ("total_bytes", "profile_bytes", "record_bytes")
        assert [getattr(node.replica, c) for c in counts] == [getattr(fresh, c) for c in counts]
