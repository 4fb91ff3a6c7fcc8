"""The hot codec paths (issue 14): Write, ChangeMsg, Result, Ack and
Heartbeat have an encoder and a decoder of their own. Their frames are the
generic layout byte for byte (the wire is unchanged), they round-trip, and
every malformed body is still a ProtocolError, dropped and counted by a node
that goes on serving."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pytest
from simsession import Session

from p2pstate.core.ops import Delete, IfHash, Set, SetOpts
from p2pstate.core.status import Status
from p2pstate.errors import ProtocolError
from p2pstate.messages import (
    MAX_ID_CHARS,
    Ack,
    Change,
    ChangeMsg,
    Heartbeat,
    Message,
    Result,
    Write,
    from_batch,
    from_frame,
    to_frame,
)

MAX = 1 << 20
ME = "a" * 33
CHANGE = Change(
    seq=7,
    epoch=2,
    origin=ME,
    writer="b" * 33,
    req=5,
    acked_upto=4,
    detail={"why": [1, 2.5, None]},
    ops=(Set("k", {"x": [1, "two"]}), SetOpts("e", b"\x00", 1, 2.5), Delete("gone")),
)

# Each message beside the array the wire carries for it: [type, sender, epoch, *fields].
CASES: list[tuple[Message, list[Any]]] = [
    (
        Write(
            sender=ME,
            epoch=2,
            req=5,
            acked_upto=4,
            ops=(Set("k", 1), Delete("d")),
            conds=(IfHash("k", "0" * 32),),
        ),
        [4, ME, 2, 5, 4, [["set", "k", 1], ["del", "d"]], [["hash", "k", "0" * 32]]],
    ),
    (
        Result(sender=ME, epoch=2, req=5, status=Status.CONFLICT, detail={"key": "k"}, seq=0),
        [5, ME, 2, 5, "conflict", {"key": "k"}, 0],
    ),
    (
        Result(sender=ME, epoch=0, req=1, status=Status.OK, detail=None, seq=3),
        [5, ME, 0, 1, "ok", None, 3],
    ),
    (
        ChangeMsg(sender=ME, epoch=2, change=CHANGE, ack=True, backed=True),
        [6, ME, 2, CHANGE.to_wire(), True, True],
    ),
    (Ack(sender=ME, epoch=2, seq=2**62 - 1), [7, ME, 2, 2**62 - 1]),
    (Heartbeat(sender=ME, epoch=2, seq=0), [8, ME, 2, 0, [0, 0, ""]]),
    (Heartbeat(sender=ME, epoch=2, seq=9, backed=(7, 2, ME)), [8, ME, 2, 9, [7, 2, ME]]),
]


@pytest.mark.parametrize(("msg", "body"), CASES, ids=lambda v: type(v).__name__)
def test_a_hot_message_is_its_generic_frame_and_round_trips(msg: Message, body: list[Any]) -> None:
    frame = to_frame(msg)
    assert frame == msgpack.packb(body, use_bin_type=True)
    assert from_frame(frame, max_size=MAX) == msg
    assert from_batch(frame * 3, max_size=MAX) == [msg, msg, msg]


@pytest.mark.parametrize(("msg", "body"), CASES, ids=lambda v: type(v).__name__)
def test_a_decoded_hot_message_is_a_whole_frozen_message(msg: Message, body: list[Any]) -> None:
    """The hot decoders fill a message's slots directly rather than through
    the dataclass's __init__ (half the cost): what they make is still
    frozen, equal and hashed like the one built the usual way, with every
    field set and typed ops."""
    got = from_frame(to_frame(msg), max_size=MAX)
    assert type(got) is type(msg)
    assert got == msg
    try:
        expected = hash(msg)
    except TypeError:  # a dict in its detail or ops
        expected = None
    if expected is not None:
        assert hash(got) == expected
    assert repr(got) == repr(msg)
    parts: list[object] = [got]
    if isinstance(got, ChangeMsg):
        parts.append(got.change)
        assert got.change.ops == CHANGE.ops
        assert [type(op) for op in got.change.ops] == [Set, SetOpts, Delete]
    for part in parts:
        for f in dataclasses.fields(part):  # type: ignore[arg-type]
            getattr(part, f.name)  # every slot filled: an empty one raises
            with pytest.raises(dataclasses.FrozenInstanceError):
                setattr(part, f.name, None)


BAD_BODIES = [
    [4, ME, 2, 5, 4, [["set", "k"]], []],  # a set without its value
    [4, ME, 2, 5, 4, [["set", "k", {b"raw": 1}]], []],  # a value the state cannot hold
    [4, ME, 2, 5, 4, [["nope", "k"]], []],  # an unknown op
    [4, ME, 2, 5, 4, [], [["hash", "k"]]],  # a condition short of a field
    [4, ME, -1, 5, 4, [], []],  # a negative epoch
    [4, ME, 2, 2**62, 4, [], []],  # a request past the counters' bound
    [4, ME, 2, True, 4, [], []],  # a bool is no number here
    [4, "x" * (MAX_ID_CHARS + 1), 2, 5, 4, [], []],  # an id too long
    [4, ME, 2, 5, 4, "ops", []],
    [4, ME, 2, 5, 4, []],  # a field short
    [5, ME, 2, 5, "fine", None, 3],  # an unknown status
    [5, ME, 2, 5, "ok", {1: 2}, 3],  # a detail with an int map key
    [5, 7, 2, 5, "ok", None, 3],  # a sender that is no str
    [6, ME, 2, CHANGE.to_wire(), 1],  # ack is a bool
    [6, ME, 2, CHANGE.to_wire()[:-1], True],  # a change a field short
    [6, ME, 2, [*CHANGE.to_wire()[:-1], [["set"]]], True],  # a change with a bad op
    [7, ME, 2, -1],
    [7, ME, 2, 1.0],
    [8, ME, 2],
    [8, ME, 2, 1, 2],
]


@pytest.mark.parametrize("body", BAD_BODIES, ids=repr)
def test_a_malformed_hot_message_is_a_protocol_error(body: list[Any]) -> None:
    frame = msgpack.packb(body, use_bin_type=True)
    with pytest.raises(ProtocolError):
        from_frame(frame, max_size=MAX)
    good = to_frame(Ack(sender=ME, epoch=2, seq=1))
    with pytest.raises(ProtocolError):  # one bad message spoils its whole batch
        from_batch(good + frame, max_size=MAX)


def test_malformed_hot_frames_are_dropped_and_counted_and_the_session_goes_on() -> None:
    s = Session(11)
    host, successor, writer = s.start(3)
    for body in BAD_BODIES:
        # from a member, at the session's epoch, where the body says so
        sent = [
            writer.me.id if v == ME else host.epoch if i == 2 and v == 2 else v
            for i, v in enumerate(body)
        ]
        frame = msgpack.packb(sent, use_bin_type=True)
        s.net.send_raw(host.me.id, frame)
        s.net.send_raw(successor.me.id, frame)
    s.net.run(0.05)
    assert s.net.bad_frames == 2 * len(BAD_BODIES)
    assert s.put(writer, "still", "serving").status == "ok"
    assert s.values(successor)["still"] == "serving"
