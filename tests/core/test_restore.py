"""The ("restore", entries) op under the simulator: one change that replaces
the lasting keys on every replica, exactly once, through a host crash."""

from __future__ import annotations

from typing import Any

import pytest
from simsession import Session

from p2pstate.codec import encode
from p2pstate.errors import ProtocolError
from p2pstate.events import KeyChanged, KeyDeleted
from p2pstate.messages import EPHEMERAL, OWNER_ONLY, Change, ChangeMsg, from_frame, to_frame

Entries = tuple[tuple[str, Any, str, int, float], ...]


def restore(*items: tuple[str, Any]) -> tuple[str, Entries]:
    return ("restore", tuple((k, v, "", 0, 0.0) for k, v in items))


def test_restore_replaces_the_state_as_one_change(session: Session) -> None:
    a, b, c = session.start(3)
    for key, value in (("keep", 1), ("change", 1), ("drop", 1)):
        assert session.put(a, key, value).status == "ok"
    out = session.write(c, (("set", "c_pos", [3, 4], EPHEMERAL, 0.0),))
    assert session.run_until(lambda: bool(out))
    keep_version = a.replica.data["keep"].version
    assert session.settle()
    for nid in session.net.events:
        session.net.events[nid].clear()
    seq_before = a.replica.seq

    out = session.write(
        b, (restore(("keep", 1), ("change", 2), ("new", [1]), ("nested", {"a": 1})),)
    )
    assert session.run_until(lambda: bool(out)) and session.settle()
    assert out[0].status == "ok" and out[0].seq == seq_before + 1  # one change
    assert len(session.digests()) == 1
    for node in session.live():
        assert session.values(node) == {
            "keep": 1,
            "change": 2,
            "new": [1],
            "nested": {"a": 1},
            "c_pos": [3, 4],  # a player's ephemeral key stays
        }
        assert node.replica.data["keep"].version == keep_version  # unchanged: untouched
        assert node.replica.data["change"].version == out[0].seq
        events = session.net.events[node.me.id]
        changed = {e.key for e in events if isinstance(e, KeyChanged)}
        deleted = {e.key for e in events if isinstance(e, KeyDeleted)}
        assert changed == {"change", "new", "nested"}
        assert deleted == {"drop"}
    # The ephemeral key still goes with its owner.
    session.net.leave(c.me.id)
    assert session.settle()
    assert "c_pos" not in a.replica.data


def test_restore_keeps_owner_only_keys_and_ttls(session: Session) -> None:
    a, b = session.start(2)
    op = ("restore", (("mine", 1, "someone", OWNER_ONLY, 0.0), ("brief", 2, "", 0, 0.5)))
    out = session.write(b, (op,))
    assert session.run_until(lambda: bool(out)) and out[0].status == "ok"
    assert a.replica.data["mine"].owner == "someone"
    denied = session.write(b, (("set", "mine", 5),))
    assert session.run_until(lambda: bool(denied)) and denied[0].status == "denied"
    assert session.run_until(lambda: "brief" not in b.replica.data, 2.0)


def test_a_restore_with_a_value_too_large_changes_nothing(session: Session) -> None:
    a, b = session.start(2)
    session.put(a, "x", 1)
    big = "x" * (session.net.config.max_value_size + 1)
    out = session.write(b, (restore(("ok", 1), ("big", big)),))
    assert session.run_until(lambda: bool(out))
    assert out[0].status == "too_large" and out[0].detail["key"] == "big"
    assert session.settle()
    assert all(session.values(n) == {"x": 1} for n in session.live())


@pytest.mark.parametrize("seed", range(12))
def test_restore_survives_a_host_crash_right_after_it_exactly_once(seed: int) -> None:
    """The host applies the restore and crashes before or after answering; the
    writer resends to the new host. It is applied once: a write made after the
    restore is not wiped by a second application, and every replica agrees."""
    session = Session(seed)
    net = session.net
    host, _successor, writer, other = session.start(4)
    session.put(writer, "old", 1)
    restored = session.write(writer, (restore(("a", 1), ("b", 2)),))
    seq = host.replica.seq
    # Run until the host has applied it (its result may not have left yet).
    assert session.run_until(lambda: host.replica.seq > seq, 1.0)
    net.run(net.rng.uniform(0.0, 0.004))
    net.crash(host.me.id)
    after = session.write(other, (("set", "after", 1),))
    assert session.run_until(lambda: bool(restored) and bool(after), 5.0), session.tail()
    assert restored[0].status == "ok" and after[0].status == "ok"
    assert session.settle(), session.tail()
    assert len(session.digests()) == 1, session.tail()
    for node in session.live():
        assert session.values(node) == {"a": 1, "b": 2, "after": 1}, session.tail()
        restores = [c.seq for c in node.replica.log for op in c.ops if op[0] == "restore"]
        assert restores == [restored[0].seq], session.tail()


def test_a_peer_catching_up_over_a_restore_gets_a_snapshot(session: Session) -> None:
    """A restore is as big as the state: a peer that missed it (a short cut)
    is sent a snapshot, not the restore plus the changes around it."""
    a, b, c = session.start(3)
    session.net.partition({c.me.id})
    out = session.write(b, (restore(("r", 1)),))
    assert session.run_until(lambda: bool(out))
    session.put(b, "after", 2)
    before = dict(a.stats)
    session.net.heal()
    assert session.settle(), session.tail()
    assert c.me.id in session.members(a)  # it stayed a member: it caught up
    assert a.stats["welcome_snapshot"] == before.get("welcome_snapshot", 0) + 1
    assert a.stats["welcome_catchup"] == before.get("welcome_catchup", 0)
    assert session.values(c) == {"r": 1, "after": 2}
    assert len(session.digests()) == 1


# ---------------------------------------------------------------- wire validation


def _frame(ops: list[Any]) -> bytes:
    change = [5, 1, "h", "w", 1, 0, "ok", None, ops]
    return encode([ChangeMsg.TYPE, "h", 1, change, False, False])


def test_restore_op_crosses_the_wire() -> None:
    op = ("restore", (("k", [1, {"x": b"\x00"}], "", 0, 0.0), ("o", 1, "p", OWNER_ONLY, 3.5)))
    msg = ChangeMsg(
        sender="h", epoch=1, change=Change(seq=5, epoch=1, origin="h", ops=(op,)), ack=False
    )
    assert from_frame(to_frame(msg), max_size=1 << 20) == msg


@pytest.mark.parametrize(
    "bad",
    [
        ["restore"],
        ["restore", {"k": 1}],
        ["restore", [["k", 1, "", 0]]],
        ["restore", [["k", 1, "", EPHEMERAL, 0.0]]],  # a backup holds no ephemeral key
        ["restore", [["k", 1, "", 0, -1.0]]],
        ["restore", [[7, 1, "", 0, 0.0]]],
        ["restore", [["k", 1, "", 0, 0.0], ["k", 2, "", 0, 0.0]]],  # a key twice
        ["restore", [["x" * 300, 1, "", 0, 0.0]]],
    ],
)
def test_malformed_restore_ops_are_refused(bad: list[Any]) -> None:
    with pytest.raises(ProtocolError):
        from_frame(_frame([bad]), max_size=1 << 20)
