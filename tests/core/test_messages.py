"""Wire messages: every type round-trips; anything malformed is a ProtocolError."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pstate.codec import encode, normalize
from p2pstate.core.access import Access
from p2pstate.errors import ProtocolError
from p2pstate.messages import (
    _BY_TYPE,
    MAX_BATCH,
    Ack,
    Change,
    ChangeMsg,
    Gone,
    Handoff,
    Heartbeat,
    Hello,
    Leave,
    Member,
    Message,
    Redirect,
    Refused,
    Result,
    Snapshot,
    Welcome,
    Write,
    from_batch,
    from_frame,
    to_frame,
)

MAX = 1 << 20

A = Member(id="a" * 16, name="Ann", endpoints=("tcp://127.0.0.1:5000",), joined_seq=1)
B = Member(
    id="b" * 16,
    name="Bob",
    endpoints=("tcp://127.0.0.1:5001", "tcp://[::1]:5001"),
    joined_seq=2,
    profile={"color": "red", "level": 3},
)
CHANGE = Change(
    seq=7,
    epoch=2,
    origin=A.id,
    writer=B.id,
    req=3,
    acked_upto=2,
    status="ok",
    detail=None,
    ops=(
        ("set", "score", {"b": [1, 2.5, None, True, b"\x00"]}),
        ("del", "old"),
        ("join", B),
        ("leave", "c" * 16, "timeout"),
        ("term", 2, A.id, None, "failover"),
        ("term", 3, B.id, A.id, "handoff"),
    ),
)
REFUSED = Change(
    seq=8,
    epoch=2,
    origin=A.id,
    writer=B.id,
    req=4,
    status="conflict",
    detail={"key": "score", "exists": True, "value": 3},
)
SNAPSHOT = Snapshot(
    session_id="s1",
    seq=8,
    last_epoch=2,
    last_origin=A.id,
    host_id=A.id,
    epoch=2,
    data=(("score", 3, 7, "", 0, 0.0), ("name", "x", 2, "a" * 16, 3, 4.5)),
    members=(A, B),
    dedupe=((B.id, 4, 2, ((3, "ok", None, 7), (4, "conflict", {"value": 3}, 8))),),
    terms=((1, 1, A.id), (5, 2, A.id)),
)

SAMPLES: list[Message] = [
    Hello(
        sender=B.id,
        epoch=2,
        name="Bob",
        endpoints=B.endpoints,
        profile={"color": "red"},
        session_id="s1",
        resume_seq=5,
        resume_epoch=2,
        resume_origin=A.id,
        prev_host=A.id,
        suspects=(A.id, "c" * 16),
    ),
    Hello(
        sender=B.id,
        epoch=0,
        name="",
        endpoints=(),
        profile={},
        session_id=None,
        resume_seq=0,
        resume_epoch=0,
        resume_origin="",
        prev_host=None,
        suspects=(),
    ),
    Welcome(sender=A.id, epoch=2, session_id="s1", host_id=A.id, snapshot=SNAPSHOT, changes=()),
    Welcome(
        sender=A.id,
        epoch=2,
        session_id="s1",
        host_id=A.id,
        snapshot=None,
        changes=(CHANGE, REFUSED),
    ),
    Redirect(sender=B.id, epoch=3, host_id=B.id, endpoints=B.endpoints, reason="failover"),
    Write(
        sender=B.id,
        epoch=2,
        req=4,
        acked_upto=3,
        ops=(("set", "k", [1, {"x": None}]), ("del", "j")),
        conds=(("hash", "k", "0" * 32), ("exists", "j"), ("absent", "n")),
    ),
    Result(sender=A.id, epoch=2, req=4, status="conflict", detail={"value": 3}, seq=8),
    ChangeMsg(sender=A.id, epoch=2, change=CHANGE, ack=True, backed=True),
    ChangeMsg(sender=A.id, epoch=2, change=REFUSED, ack=False),
    Ack(sender=B.id, epoch=2, seq=8),
    Heartbeat(sender=A.id, epoch=2, seq=8, backed=(7, 2, A.id)),
    Leave(sender=B.id, epoch=2),
    Handoff(sender=A.id, epoch=2),
    Gone(sender=A.id, epoch=2),
    Refused(sender=A.id, epoch=2, reason="full"),
    # access: the session's first change, an admin's ACL write, a snapshot's state
    ChangeMsg(
        sender=A.id,
        epoch=2,
        change=Change(
            seq=1,
            epoch=1,
            origin=A.id,
            ops=(
                ("access", Access(admin=A.id, writemode="authorized_only", max_keys=10)),
                ("acl", "ban", "c" * 16),
                ("access_set", {"readmode": "admin_only", "write_rate": 2.5}),
            ),
        ),
        ack=True,
    ),
    Write(sender=A.id, epoch=2, req=5, acked_upto=4, ops=(("acl", "authorize", B.id),), conds=()),
    Welcome(
        sender=A.id,
        epoch=2,
        session_id="s1",
        host_id=A.id,
        snapshot=replace(
            SNAPSHOT,
            access=Access(admin=A.id, authorized=frozenset({B.id}), banned=frozenset({"c" * 16})),
        ),
        changes=(),
    ),
    Refused(sender=A.id, epoch=2, reason="banned"),
]


def test_every_message_type_has_a_sample() -> None:
    assert {type(m) for m in SAMPLES} == set(_BY_TYPE.values())


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(msg: Message) -> None:
    frame = to_frame(msg)
    assert isinstance(frame, bytes)
    back = from_frame(frame, max_size=MAX)
    assert back == msg
    assert to_frame(back) == frame


def test_member_profile_survives_though_not_compared() -> None:
    msg = SAMPLES[0]
    assert isinstance(msg, Hello)
    back = from_frame(to_frame(msg), max_size=MAX)
    assert isinstance(back, Hello)
    assert back.profile == {"color": "red"}
    welcome = from_frame(to_frame(SAMPLES[2]), max_size=MAX)
    assert isinstance(welcome, Welcome) and welcome.snapshot is not None
    assert welcome.snapshot.members[1].profile == B.profile


# ---------------------------------------------------------------- malformed


def _body(msg: Message) -> list[Any]:
    body = msgpack.unpackb(to_frame(msg), raw=False)
    assert isinstance(body, list)
    return body


def _refused(body: Any) -> None:
    with pytest.raises(ProtocolError):
        from_frame(encode(body), max_size=MAX)


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_truncated_frames(msg: Message) -> None:
    frame = to_frame(msg)
    for cut in range(len(frame)):
        with pytest.raises(ProtocolError):
            from_frame(frame[:cut], max_size=MAX)


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_missing_and_extra_fields(msg: Message) -> None:
    body = _body(msg)
    _refused(body[:-1])
    _refused([*body, None])
    _refused([*body, 0])


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_wrong_types_in_each_field(msg: Message) -> None:
    body = _body(msg)
    for i in range(1, len(body)):
        for bad in (None, 1.5, [1.5], {"x": 1}, -1, True):
            if bad is None and body[i] is None:
                continue
            mutated = list(body)
            mutated[i] = bad
            try:
                out = from_frame(encode(mutated), max_size=MAX)
            except ProtocolError:
                continue
            # some fields take any value (a result's detail): then it must still
            # be a well-formed message that encodes again
            assert to_frame(out)


@pytest.mark.parametrize("kind", [0, 13, 99, -1, "1", None, True, 1.0, [1]])
def test_unknown_type_code(kind: Any) -> None:
    _refused([kind, "a", 1])


def test_not_an_array() -> None:
    for body in ({"type": 1}, "hello", 1, None, [], [1], [1, "a"]):
        _refused(body)


def test_sender_and_epoch_checked() -> None:
    body = _body(Ack(sender="a", epoch=1, seq=1))
    _refused([body[0], 5, 1, 1])
    _refused([body[0], "a", -1, 1])
    _refused([body[0], "a", "1", 1])
    _refused([body[0], "a", True, 1])


def test_oversized_frame() -> None:
    frame = to_frame(Heartbeat(sender="a" * 100, epoch=1, seq=1))
    with pytest.raises(ProtocolError, match="limit"):
        from_frame(frame, max_size=10)


def test_long_keys_refused() -> None:
    body = _body(SAMPLES[5])  # Write
    body[5] = [["set", "k" * 300, 1]]
    _refused(body)
    body[5] = [["del", "k" * 300]]
    _refused(body)


@pytest.mark.parametrize(
    "op",
    [
        ["set", "k"],
        ["set", "k", 1, 2],
        ["del"],
        ["join", ["id", "name"]],
        ["leave", "id"],
        ["term", -1, "a", None, "x"],
        ["term", 1, "a", 5, "x"],
        ["frob", "k"],
        [],
        "set",
    ],
)
def test_malformed_ops(op: Any) -> None:
    body = _body(SAMPLES[5])
    body[5] = [op]
    _refused(body)


@pytest.mark.parametrize(
    "cond", [["hash", "k"], ["hash", "k", 5], ["exists"], ["absent", "k", 1], ["is", "k"], []]
)
def test_malformed_conditions(cond: Any) -> None:
    body = _body(SAMPLES[5])
    body[6] = [cond]
    _refused(body)


@pytest.mark.parametrize(
    "value",
    [
        msgpack.Timestamp(1, 0),
        {b"bytes-key": 1},
        [1, [msgpack.Timestamp(1, 0)]],
        {"k": {b"x": 1}},
    ],
    ids=["timestamp", "bytes-key", "nested-timestamp", "nested-bytes-key"],
)
def test_unstorable_values_refused(value: Any) -> None:
    """Regression: msgpack decodes timestamps and bytes map keys, which the
    state cannot hold; a Write carrying one was stored, and the next
    compare-and-swap on that key raised TypeError inside the host."""
    write = _body(SAMPLES[5])
    write[5] = [["set", "k", value]]
    with pytest.raises(ProtocolError):
        from_frame(msgpack.packb(write, use_bin_type=True), max_size=MAX)
    result = _body(SAMPLES[6])
    result[5] = value
    with pytest.raises(ProtocolError):
        from_frame(msgpack.packb(result, use_bin_type=True), max_size=MAX)
    hello = _body(SAMPLES[0])
    hello[5] = {"p": value}
    with pytest.raises(ProtocolError):
        from_frame(msgpack.packb(hello, use_bin_type=True), max_size=MAX)


# ---------------------------------------------------------------- fuzzing

wire_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=12)
    | st.binary(max_size=12)
    | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=4))
)
wire = st.recursive(
    wire_scalars,
    lambda kids: (
        st.lists(kids, max_size=6)
        | st.dictionaries(st.text(max_size=6) | st.binary(max_size=4), kids, max_size=4)
    ),
    max_leaves=12,
)


def _check_decoded(out: Message) -> None:
    """Whatever from_frame accepts is a message that encodes again and holds
    only storable values."""
    assert isinstance(out, Message)
    again = from_frame(to_frame(out), max_size=MAX)
    assert again == out


def _decode(frame: bytes) -> None:
    try:
        out = from_frame(frame, max_size=MAX)
    except ProtocolError:
        return
    _check_decoded(out)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_random_bytes_only_raise_protocol_error(frame: bytes) -> None:
    _decode(frame)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 14), st.lists(wire, max_size=10))
def test_random_structures_only_raise_protocol_error(kind: int, rest: list[Any]) -> None:
    _decode(msgpack.packb([kind, *rest], use_bin_type=True))


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(_BY_TYPE)), st.data())
def test_random_fields_of_the_right_count_only_raise_protocol_error(
    kind: int, data: st.DataObject
) -> None:
    n_fields = len(_body(next(m for m in SAMPLES if kind == m.TYPE))) - 1
    fields = data.draw(st.lists(wire, min_size=n_fields, max_size=n_fields))
    _decode(msgpack.packb([kind, *fields], use_bin_type=True))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SAMPLES), st.data())
def test_mutated_samples_only_raise_protocol_error(msg: Message, data: st.DataObject) -> None:
    """Change one part of a valid message, anywhere in its structure."""
    body = _body(msg)

    def mutate(node: Any) -> Any:
        if isinstance(node, list) and node and data.draw(st.booleans()):
            i = data.draw(st.integers(0, len(node) - 1))
            node = list(node)
            action = data.draw(st.sampled_from(("replace", "drop", "dup", "descend")))
            if action == "replace":
                node[i] = data.draw(wire)
            elif action == "drop":
                del node[i]
            elif action == "dup":
                node.insert(i, node[i])
            else:
                node[i] = mutate(node[i])
            return node
        return data.draw(wire)

    _decode(msgpack.packb(mutate(body), use_bin_type=True))


def test_ext_types_arrive_as_plain_values() -> None:
    """An ext type is a (code, data) pair to msgpack: it is stored as that list."""
    write = _body(SAMPLES[5])
    write[5] = [["set", "k", msgpack.ExtType(5, b"xx")]]
    msg = from_frame(msgpack.packb(write, use_bin_type=True), max_size=MAX)
    assert isinstance(msg, Write)
    assert msg.ops[0][2] == [5, b"xx"]


def test_decoded_values_are_normalised() -> None:
    msg = from_frame(to_frame(SAMPLES[5]), max_size=MAX)
    assert isinstance(msg, Write)
    assert msg.ops[0][2] == normalize([1, {"x": None}])


# ---------------------------------------------------------------- batches


def test_a_batch_is_messages_end_to_end_and_decodes_in_order() -> None:
    frame = b"".join(to_frame(m) for m in SAMPLES)
    assert from_batch(frame, max_size=MAX) == SAMPLES
    assert from_batch(to_frame(SAMPLES[0]), max_size=MAX) == [SAMPLES[0]]


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.99])
def test_a_truncated_last_message_refuses_the_whole_batch(keep: float) -> None:
    last = to_frame(SAMPLES[-1])
    frame = b"".join(to_frame(m) for m in SAMPLES[:-1]) + last[: int(len(last) * keep)]
    with pytest.raises(ProtocolError):
        from_batch(frame, max_size=MAX)


def test_one_bad_message_refuses_the_whole_batch() -> None:
    good = to_frame(SAMPLES[0])
    bad = encode([8, "x", -1, 0, [0, 0, ""]])  # a Heartbeat with a negative epoch
    with pytest.raises(ProtocolError):
        from_batch(good + bad + good, max_size=MAX)


def test_batches_are_bounded_in_count_and_size() -> None:
    beat = to_frame(Heartbeat(sender="s", epoch=1, seq=0))
    assert len(from_batch(beat * MAX_BATCH, max_size=MAX)) == MAX_BATCH
    with pytest.raises(ProtocolError, match="more than"):
        from_batch(beat * (MAX_BATCH + 1), max_size=MAX)
    with pytest.raises(ProtocolError, match="limit"):
        from_batch(beat * 10, max_size=len(beat) * 10 - 1)
    with pytest.raises(ProtocolError, match="empty"):
        from_batch(b"", max_size=MAX)


@given(st.binary(max_size=300))
def test_random_batches_only_raise_protocol_error(tail: bytes) -> None:
    try:
        msgs = from_batch(to_frame(SAMPLES[0]) + tail, max_size=MAX)
    except ProtocolError:
        return
    assert msgs[0] == SAMPLES[0]
    assert all(isinstance(m, Message) for m in msgs)
