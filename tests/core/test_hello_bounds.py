"""Issue 16 item 5: every field of a Hello (and of a member as the state
holds it) has a size limit, and profiles count against max_total_bytes."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from samples import first_hello
from simsession import done, start_players

from p2pstate import messages
from p2pstate.codec import encode
from p2pstate.core.access import Access
from p2pstate.errors import ProtocolError
from p2pstate.messages import Member, from_frame, to_frame
from p2pstate.options import Options

_FRAME = 16 * 1024 * 1024


def _hello(**fields: Any) -> bytes:
    return to_frame(replace(first_hello("ab12.cd34", name="ann"), **fields))


@pytest.mark.parametrize(
    "fields",
    [
        {"profile": {"blob": "x" * 10_000_000}},
        {"profile": {"blob": "x" * (messages.MAX_PROFILE_BYTES + 1)}},
        {"name": "n" * (messages.MAX_NAME_BYTES + 1)},
        {"name": "é" * (messages.MAX_NAME_BYTES // 2 + 1)},  # counted in UTF-8 bytes
        {"sender": "a" * (messages.MAX_ID_CHARS + 1)},
        {"endpoints": tuple(f"tcp://127.0.0.1:{p}" for p in range(messages.MAX_ENDPOINTS + 1))},
        {"endpoints": ("tcp://" + "h" * messages.MAX_ENDPOINT_CHARS,)},
        {"session_id": "s" * (messages.MAX_ID_CHARS + 1)},
        {"resume_origin": "o" * (messages.MAX_ID_CHARS + 1)},
        {"prev_host": "p" * (messages.MAX_ID_CHARS + 1)},
        {"suspects": tuple(f"{i:x}.1" for i in range(messages.MAX_SUSPECTS + 1))},
        {"suspects": ("s" * (messages.MAX_ID_CHARS + 1),)},
    ],
    ids=lambda f: next(iter(f)),
)
def test_an_oversized_hello_field_is_refused_on_decoding(fields: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        from_frame(_hello(**fields), max_size=_FRAME)


def test_a_hello_at_every_limit_decodes() -> None:
    fields = {
        "profile": {"b": "x" * (messages.MAX_PROFILE_BYTES - 16)},
        "name": "n" * messages.MAX_NAME_BYTES,
        "endpoints": tuple(f"tcp://127.0.0.1:{p}" for p in range(messages.MAX_ENDPOINTS)),
        "suspects": tuple(f"{i:x}.1" for i in range(messages.MAX_SUSPECTS)),
        "session_id": "s" * messages.MAX_ID_CHARS,
    }
    msg = from_frame(_hello(**fields), max_size=_FRAME)
    assert msg == replace(first_hello("ab12.cd34", name="ann"), **fields)


def test_a_member_with_an_oversized_profile_is_refused_in_a_change_too() -> None:
    big = Member(id="ab.1", name="x", endpoints=(), profile={"b": "x" * 100_000})
    with pytest.raises(ProtocolError):
        Member.from_wire(big.to_wire())


def test_a_profile_write_is_held_to_the_profile_limit() -> None:
    session, (alice, bob) = start_players("a1ice.1", "b0b.1")
    over = {"b": "x" * messages.MAX_PROFILE_BYTES}  # within max_value_size, not this
    out = done(session, alice, ("profile", over))  # the host's own: it never crosses the wire
    assert out.status == "too_large" and out.detail["key"] == "profile"
    bad_before = session.net.bad_frames
    dropped = session.write(bob, (("profile", over),))  # the frame is refused on decoding
    session.net.run(1.0)
    assert not dropped and session.net.bad_frames > bad_before
    assert all(m.profile == {} for n in session.live() for m in n.replica.members)


def test_profiles_count_against_max_total_bytes() -> None:
    limits = Access(max_total_bytes=20_000)
    session, (alice, bob, carol) = start_players("a1ice.1", "b0b.1", "ca401.1", access=limits)
    for node in (bob, carol):
        assert done(session, node, ("profile", {"p": "x" * 6_000})).status == "ok"
    refused = done(session, alice, ("set", "v", "y" * 10_000))
    assert refused.status == "quota" and refused.detail["limit"] == "max_total_bytes"
    assert done(session, alice, ("set", "v", "y" * 5_000)).status == "ok"
    grow = done(session, alice, ("profile", {"p": "x" * 6_000}))
    assert grow.status == "quota"
    # A profile that shrinks is let through, as a write that frees bytes is.
    assert done(session, bob, ("profile", {})).status == "ok"
    assert session.settle()
    totals = {n.replica.total_bytes + n.replica.profile_bytes for n in session.live()}
    assert len(totals) == 1  # every replica counts the same


def test_profiles_leave_the_count_with_their_member() -> None:
    limits = Access(max_total_bytes=15_000)
    session, (alice, bob) = start_players("a1ice.1", "b0b.1", access=limits)
    assert done(session, bob, ("profile", {"p": "x" * 8_000})).status == "ok"
    assert done(session, alice, ("set", "v", "y" * 10_000)).status == "quota"
    session.net.leave(bob.me.id)
    assert session.settle()
    assert alice.replica.profile_bytes == sum(len(encode(m.profile)) for m in alice.replica.members)
    assert done(session, alice, ("set", "v", "y" * 10_000)).status == "ok"


def test_the_join_option_and_set_profile_share_the_wire_limit() -> None:
    with pytest.raises(ValueError, match="profile"):
        Options(profile={"b": "x" * messages.MAX_PROFILE_BYTES})
    Options(profile={"b": "x" * (messages.MAX_PROFILE_BYTES - 16)})
