"""Typed ops (core/ops.py) and statuses (core/status.py): every kind crosses
the wire as the same array as before and comes back as its type; every
malformed form is a ProtocolError; the replica applies each by its type."""

from __future__ import annotations

from typing import Any

import pytest
from simsession import Session

from p2pstate.codec import encode, hash_value
from p2pstate.core.access import Access
from p2pstate.core.node import Role
from p2pstate.core.ops import (
    COND_TYPES,
    OP_TYPES,
    Acl,
    ChangeSettings,
    Delete,
    IfAbsent,
    IfExists,
    IfHash,
    Info,
    Join,
    Leave,
    Msg,
    Profile,
    Restore,
    Set,
    SetAccess,
    SetOpts,
    Term,
    as_cond,
    as_op,
    as_ops,
)
from p2pstate.core.replica import Replica, change_bytes
from p2pstate.core.status import Status
from p2pstate.errors import ProtocolError
from p2pstate.events import (
    HostChanged,
    KeyChanged,
    KeyDeleted,
    Message,
    PeerJoined,
    PeerLeft,
    PeerUpdated,
)
from p2pstate.messages import (
    EPHEMERAL,
    OWNER_ONLY,
    Change,
    ChangeMsg,
    Member,
    Result,
    Write,
    from_frame,
    to_frame,
)

MAX = 1 << 20
ANN = Member(id="a" * 16 + ".1", name="Ann", endpoints=("sim://a",), joined_seq=1)
BOB = Member(id="b" * 16 + ".1", name="Bob", endpoints=("sim://b",), joined_seq=2)
ADMIN = Access(admin="a" * 16)

#: One op of every kind, and the array the wire carries for it.
OPS: list[tuple[Any, list[Any]]] = [
    (Set("k", [1, {"x": None}]), ["set", "k", [1, {"x": None}]]),
    (SetOpts("k", 2, EPHEMERAL, 0.0), ["set", "k", 2, EPHEMERAL, 0.0]),
    (SetOpts("t", "v", OWNER_ONLY, 30.0), ["set", "t", "v", OWNER_ONLY, 30.0]),
    (Delete("k"), ["del", "k"]),
    (Msg("", b"hi"), ["msg", "", b"hi"]),
    (Msg(BOB.id, {"to": "bob"}), ["msg", BOB.id, {"to": "bob"}]),
    (Info({"max_players": 4, "joinable": True}), ["info", {"max_players": 4, "joinable": True}]),
    (Profile({"ready": True}), ["profile", {"ready": True}]),
    (Join(ANN), ["join", ANN.to_wire()]),
    (Leave(BOB.id, "left"), ["leave", BOB.id, "left"]),
    (Term(2, ANN.id, BOB.id, "failover"), ["term", 2, ANN.id, BOB.id, "failover"]),
    (Term(1, ANN.id, None, "created"), ["term", 1, ANN.id, None, "created"]),
    (
        Restore((("r", [1], "", 0, 0.0), ("o", 1, "c" * 16, OWNER_ONLY, 3.5))),
        ["restore", [["r", [1], "", 0, 0.0], ["o", 1, "c" * 16, OWNER_ONLY, 3.5]]],
    ),
    (Acl("ban", "c" * 16), ["acl", "ban", "c" * 16]),
    (SetAccess(ADMIN), ["access", ADMIN.to_wire()]),
    (ChangeSettings({"write_rate": 2.5}), ["access_set", {"write_rate": 2.5}]),
]
CONDS: list[tuple[Any, list[Any]]] = [
    (IfExists("k"), ["exists", "k"]),
    (IfAbsent("k"), ["absent", "k"]),
    (IfHash("k", "0" * 32), ["hash", "k", "0" * 32]),
]


def _change_frame(ops: list[Any], status: Any = "ok") -> bytes:
    """A ChangeMsg as its wire array: [type, sender, epoch, change, ack, backed]."""
    change = [5, 1, ANN.id, BOB.id, 1, 0, status, None, ops]
    return encode([ChangeMsg.TYPE, ANN.id, 1, change, False, False])


def _write_frame(ops: list[Any], conds: list[Any]) -> bytes:
    return encode([Write.TYPE, BOB.id, 1, 1, 0, ops, conds])


def test_every_op_and_condition_type_has_a_sample() -> None:
    assert {type(op) for op, _ in OPS} == OP_TYPES
    assert {type(cond) for cond, _ in CONDS} == COND_TYPES


@pytest.mark.parametrize(("op", "wire"), OPS, ids=lambda x: type(x).__name__)
def test_each_op_is_the_same_array_on_the_wire_and_comes_back_typed(
    op: Any, wire: list[Any]
) -> None:
    msg = ChangeMsg(
        sender=ANN.id, epoch=1, change=Change(seq=5, epoch=1, origin=ANN.id, ops=(op,)), ack=False
    )
    frame = to_frame(msg)
    # byte for byte the array the untyped code sent: the ops' format is unchanged
    # (wire format 5 added the message's last field, the backed flag)
    change = [5, 1, ANN.id, "", 0, 0, "ok", None, [wire]]
    assert frame == encode([ChangeMsg.TYPE, ANN.id, 1, change, False, False])
    back = from_frame(frame, max_size=MAX)
    assert isinstance(back, ChangeMsg)
    (got,) = back.change.ops
    assert type(got) is type(op) and got == op
    assert got.kind == wire[0]


@pytest.mark.parametrize(("cond", "wire"), CONDS, ids=lambda x: type(x).__name__)
def test_each_condition_round_trips_typed(cond: Any, wire: list[Any]) -> None:
    write = Write(sender=BOB.id, epoch=1, req=1, acked_upto=0, ops=(Set("k", 1),), conds=(cond,))
    frame = to_frame(write)
    assert frame == _write_frame([["set", "k", 1]], [wire])
    back = from_frame(frame, max_size=MAX)
    assert isinstance(back, Write)
    assert type(back.conds[0]) is type(cond) and back.conds == (cond,)
    assert type(back.ops[0]) is Set


def test_set_keeps_its_two_wire_shapes() -> None:
    """A plain set is 3 items, one with flags or a ttl 5, as before."""
    assert encode(Set("k", 1)) == encode(["set", "k", 1])
    assert encode(SetOpts("k", 1, 0, 5.0)) == encode(["set", "k", 1, 0, 5.0])
    assert Set("k", 1).flags == 0 and Set("k", 1).ttl == 0.0


# ---------------------------------------------------------------- malformed

BAD_OPS: list[Any] = [
    # set
    ["set", "k"],
    ["set", "k", 1, 0],
    ["set", "k", 1, 0, 0.0, 0],
    ["set", 5, 1],
    ["set", "k" * 300, 1],
    ["set", "k", 1, EPHEMERAL | OWNER_ONLY | 4, 0.0],
    ["set", "k", 1, -1, 0.0],
    ["set", "k", 1, 0, -1.0],
    ["set", "k", 1, 0, 1e12],
    ["set", "k", 1, 0, "5"],
    ["set", "k", {1: 2}],
    # del
    ["del"],
    ["del", "k", "x"],
    ["del", None],
    # msg
    ["msg", "x"],
    ["msg", 5, 1],
    # info, profile
    ["info", {"bogus": 1}],
    ["info", "x"],
    ["info", {"max_players": 0}],
    ["profile", "x"],
    ["profile", {"big": "x" * 9000}],
    ["profile"],
    # join, leave, term
    ["join", "x"],
    ["join", ["id", "name"]],
    ["leave", "a"],
    ["leave", "a", 5],
    ["term", "1", "a", None, "r"],
    ["term", -1, "a", None, "r"],
    ["term", 2**62, "a", None, "r"],
    ["term", 1, "a", 5, "r"],
    ["term", 1, "a", None],
    # restore
    ["restore", [["k", 1, "", EPHEMERAL, 0.0]]],
    ["restore", [["k", 1, "", 0, 0.0], ["k", 2, "", 0, 0.0]]],
    ["restore", [["k", 1, "", 0]]],
    ["restore", "x"],
    # acl, access, access_set
    ["acl", "kick", "c" * 16],
    ["acl", "ban", "BAD.ID"],
    ["acl", ["ban"], "c" * 16],
    ["acl", "ban"],
    ["access", "x"],
    ["access", {"admin": 5}],
    ["access_set", {}],
    ["access_set", {"admin": "c" * 16}],
    ["access_set", {"write_rate": -1}],
    # no kind
    ["frob", "k"],
    [["set"], "k", 1],
    [{"set": 1}, "k", 1],
    [None],
    [5, "k"],
    [],
    "set",
    {"set": ["k", 1]},
    None,
]


@pytest.mark.parametrize("op", BAD_OPS, ids=repr)
def test_malformed_op_is_refused_in_a_change(op: Any) -> None:
    with pytest.raises(ProtocolError):
        from_frame(_change_frame([op]), max_size=MAX)


@pytest.mark.parametrize("op", BAD_OPS, ids=repr)
def test_malformed_op_is_refused_in_a_write(op: Any) -> None:
    with pytest.raises(ProtocolError):
        from_frame(_write_frame([op], []), max_size=MAX)


@pytest.mark.parametrize(
    "cond",
    [
        ["hash", "k"],
        ["hash", "k", 5],
        ["hash", "k" * 300, "h"],
        ["exists"],
        ["exists", 5],
        ["absent", "k", 1],
        ["is", "k"],
        [["hash"], "k", "h"],
        [],
        "exists",
        None,
    ],
    ids=repr,
)
def test_malformed_condition_is_refused(cond: Any) -> None:
    with pytest.raises(ProtocolError):
        from_frame(_write_frame([["set", "k", 1]], [cond]), max_size=MAX)


@pytest.mark.parametrize("status", ["bogus", "OK", "", 0, None, ["ok"]], ids=repr)
def test_an_unknown_status_is_refused(status: Any) -> None:
    """A status is one the host gives; any other is malformed (it would
    reach the writer as a refusal no one can name)."""
    with pytest.raises(ProtocolError):
        from_frame(_change_frame([["set", "k", 1]], status), max_size=MAX)
    result = encode([Result.TYPE, ANN.id, 1, 1, status, None, 3])
    with pytest.raises(ProtocolError):
        from_frame(result, max_size=MAX)


# ---------------------------------------------------------------- statuses


@pytest.mark.parametrize("status", list(Status), ids=str)
def test_statuses_are_their_strings_and_decode_as_members(status: Status) -> None:
    assert status == status.value and str(status) == status.value == f"{status}"
    assert encode(status) == encode(status.value)
    back = from_frame(
        to_frame(Result(sender="h", epoch=1, req=1, status=status, detail=None, seq=1)),
        max_size=MAX,
    )
    assert isinstance(back, Result) and back.status is status


# ---------------------------------------------------------------- raw tuples


def test_a_change_made_of_raw_tuples_holds_typed_ops() -> None:
    """The one boundary: node.py's own ops and tests' tuples become typed
    where a Change is made, and a typed tuple is kept as it is."""
    typed = (Set("a", 1),)
    assert Change(seq=1, epoch=1, origin="h", ops=typed).ops is typed
    change = Change(
        seq=1,
        epoch=1,
        origin="h",
        ops=(
            ("set", "a", 1),
            ("set", "b", 2, EPHEMERAL, 0.0),
            ("join", ANN),
            ("term", 1, "h", None, "x"),
        ),
    )
    assert [type(op) for op in change.ops] == [Set, SetOpts, Join, Term]
    assert change.ops[1].flags == EPHEMERAL and change.ops[2].member is ANN


@pytest.mark.parametrize(
    "raw",
    [("set", "k"), ("set", "k", 1, 2), ("frob", 1), (), (5, 1), "set", None, ["del"]],
    ids=repr,
)
def test_a_raw_tuple_of_no_known_shape_is_a_clear_error(raw: Any) -> None:
    with pytest.raises((TypeError, ValueError), match="op"):
        as_op(raw)
    with pytest.raises((TypeError, ValueError)):
        Change(seq=1, epoch=1, origin="h", ops=(raw,))


def test_as_cond_and_as_ops() -> None:
    assert as_cond(("hash", "k", "h")) == IfHash("k", "h")
    assert type(as_cond(["absent", "k"])) is IfAbsent
    with pytest.raises(ValueError, match="condition"):
        as_cond(("hash", "k"))
    ops = (Delete("k"),)
    assert as_ops(ops) is ops
    assert as_ops([("del", "k")]) == ops


def test_every_change_a_simulated_session_makes_holds_typed_ops() -> None:
    """The node builds its own ops (join, term, access, leave, expiry
    deletes) typed, and the simulated workload writes raw tuples: every op in
    every replica's log, the host's own included, is typed."""
    session = Session(seed=3)
    nodes = session.start(3)
    assert session.put(nodes[1], "k", 1).status == Status.OK
    out = session.write(nodes[2], (("set", "t", 2, 0, 0.2), ("del", "k")), (("exists", "k"),))
    assert session.run_until(lambda: bool(out)) and out[0].status == Status.OK
    session.run_until(lambda: "t" not in nodes[0].replica.data)  # the ttl's delete
    session.net.crash(nodes[0].me.id)
    assert session.run_until(lambda: nodes[1].role is Role.HOST), session.tail()
    logged = [(type(op), op) for node in nodes for c in node.replica.log for op in c.ops]
    kinds = {cls for cls, _ in logged}
    assert kinds >= {Join, Term, SetAccess, Set, SetOpts, Delete, Leave}
    assert kinds <= OP_TYPES, [op for cls, op in logged if cls not in OP_TYPES]


# ---------------------------------------------------------------- replica


def _apply(replica: Replica, *ops: Any, writer: str = "", events: list[Any] | None = None) -> None:
    seq = replica.seq + 1
    replica.apply(
        Change(seq=seq, epoch=1, origin=ANN.id, writer=writer, req=seq, ops=ops), events=events
    )


def test_replica_applies_each_typed_op() -> None:
    r = Replica()
    ev: list[Any] = []
    _apply(r, Join(ANN), Term(1, ANN.id, None, "created"), SetAccess(ADMIN), events=ev)
    assert [type(e) for e in ev] == [PeerJoined, HostChanged]
    assert (r.host_id, r.epoch, r.access) == (ANN.id, 1, ADMIN)
    _apply(r, Join(BOB), Info({"max_players": 4}), events=ev)
    assert r.info == {"max_players": 4} and [m.id for m in r.members] == [ANN.id, BOB.id]

    ev.clear()
    _apply(r, Set("plain", 1), SetOpts("mine", [2], EPHEMERAL, 0.0), writer=BOB.id, events=ev)
    assert [(type(e), e.key) for e in ev] == [(KeyChanged, "plain"), (KeyChanged, "mine")]
    assert r.data["mine"].owner == BOB.id and r.data["mine"].flags == EPHEMERAL
    assert r.total_bytes == r.data["plain"].size + r.data["mine"].size

    ev.clear()
    _apply(r, Msg("", "hello"), Profile({"ready": True}), writer=BOB.id, events=ev)
    assert isinstance(ev[0], Message) and ev[0].payload == "hello" and ev[0].to is None
    assert isinstance(ev[1], PeerUpdated) and ev[1].peer.profile == {"ready": True}

    _apply(r, Acl("authorize", "c" * 16), ChangeSettings({"writemode": "authorized_only"}))
    assert r.access.authorized == {"c" * 16} and r.access.writemode == "authorized_only"

    ev.clear()
    _apply(r, Delete("plain"), Delete("never"), events=ev)
    assert [type(e) for e in ev] == [KeyDeleted] and "plain" not in r.data

    ev.clear()
    _apply(r, Leave(BOB.id, "left"), events=ev)  # its ephemeral key goes with it
    assert [type(e) for e in ev] == [PeerLeft, KeyDeleted] and r.data == {}

    _apply(r, Set("gone", 1), Restore((("back", 7, "", 0, 0.0),)), events=ev)
    assert {k: e.value for k, e in r.data.items()} == {"back": 7}
    assert r.total_bytes == r.data["back"].size


def test_the_log_counts_typed_ops_as_the_tuples_were_counted() -> None:
    """change_bytes: 64 a change, 16 an op, plus keys and values."""
    change = Change(
        seq=1,
        epoch=1,
        origin="h",
        ops=(Set("key", "v"), Delete("gone"), Msg("p", [1]), Term(1, "h", None, "x")),
    )
    expected = 64 + 4 * 16 + (3 + 2) + len(encode(["gone"])) + (1 + len(encode([1])))
    expected += len(encode([1, "h", None, "x"]))
    assert change_bytes(change) == expected
    r = Replica()
    r.apply(change)
    assert r.log_bytes == expected


def test_a_condition_hash_is_the_values_hash() -> None:
    assert IfHash("k", hash_value([1])).hash == hash_value([1])
