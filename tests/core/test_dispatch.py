"""The node's one dispatch table (core/node.py's DISPATCH): every role names
every message type, the pairs the protocol handles go to their handler, and a
message a role does not handle is dropped and counted, changing nothing."""

from __future__ import annotations

import dataclasses

import pytest
import test_messages
from simsession import Session

from p2pstate.core.node import DISPATCH, DROP, Node, Role
from p2pstate.messages import (
    _BY_TYPE,
    Ack,
    ChangeMsg,
    Gone,
    Handoff,
    Heartbeat,
    Hello,
    Leave,
    Redirect,
    Refused,
    Result,
    Welcome,
    Write,
)

#: The (role, message) pairs the node handled before the split, one table row each,
#: and since branch suspect a peer's Welcome (its host answers a probe: Node.suspect).
HANDLED = {
    (Role.HOST, Hello),
    (Role.HOST, Write),
    (Role.HOST, Ack),
    (Role.HOST, Heartbeat),
    (Role.HOST, Leave),
    (Role.HOST, Redirect),
    (Role.HOST, Refused),
    (Role.HOST, Welcome),
    (Role.PEER, Hello),
    (Role.PEER, ChangeMsg),
    (Role.PEER, Result),
    (Role.PEER, Heartbeat),
    (Role.PEER, Redirect),
    (Role.PEER, Gone),
    (Role.PEER, Handoff),
    (Role.PEER, Refused),
    (Role.PEER, Welcome),
    (Role.JOINING, Hello),
    (Role.JOINING, Welcome),
    (Role.JOINING, Refused),
    (Role.JOINING, Redirect),
    (Role.JOINING, Handoff),
    (Role.LEAVING, Gone),
    (Role.LEAVING, Redirect),
}


def test_every_role_names_every_message_type() -> None:
    every = set(_BY_TYPE.values())  # every message the wire decodes
    for role in Role:
        assert set(DISPATCH[role]) == every, role


def test_the_handled_pairs_are_the_protocols() -> None:
    handled = {(r, t) for r, row in DISPATCH.items() for t, h in row.items() if h is not DROP}
    assert handled == HANDLED
    assert all(callable(DISPATCH[r][t]) for r, t in HANDLED)


def _node_in(role: Role) -> Node:
    """A node in *role*, from a simulated session where it needs one."""
    if role in (Role.PEER, Role.LEAVING, Role.HOST):
        s = Session(3)
        host, peer = s.start(2)
        if role is Role.HOST:
            return host
        if role is Role.LEAVING:
            peer.leave(s.net.now)
        return peer
    node = Node(node_id="n.1", name="n", endpoints=("tcp://127.0.0.1:1",))
    if role is Role.JOINING:
        node.join("h.1", ("tcp://127.0.0.1:2",), 0.0)
    elif role is Role.CLOSED:
        node.leave(0.0)
    return node


@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.name)
def test_a_message_a_role_does_not_handle_is_dropped_and_counted(role: Role) -> None:
    for sample in test_messages.SAMPLES:
        kind = type(sample)
        if (role, kind) in HANDLED:
            continue
        node = _node_in(role)
        assert node.role is role
        node.take_outbox()
        before = (node.epoch, node.replica.seq, node.target_id)
        msg = dataclasses.replace(sample, sender="stranger.1")
        node.receive(msg, node.clock + 0.01)
        assert node.stats[f"dropped: {kind.__name__} in role {role.name}"] == 1
        assert node.role is role, kind
        assert (node.epoch, node.replica.seq, node.target_id) == before, kind
        assert node.take_outbox() == [], kind
