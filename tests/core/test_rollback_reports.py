"""Rollback reports net out: a write reported undone that a later history
holds again is reported back (``WritesRestored``), so the writes reported
rolled back and not restored are exactly those undone (issue 17)."""

from __future__ import annotations

from p2pstate.core.common import Acked
from p2pstate.core.node import Node
from p2pstate.core.rollback import rolled_back
from p2pstate.events import RolledBackWrite

ME = "a" * 16


def _node_with_one_acked_write() -> Node:
    node = Node(node_id=ME, name="A", endpoints=(f"sim://{ME}",))
    # request 1 became change 5 of the term (epoch 2, host "h")
    node.acked.append(Acked(1, 5, 2, "h", ("k",)))
    return node


def test_a_write_undone_then_held_again_is_reported_back() -> None:
    node = _node_with_one_acked_write()
    write = RolledBackWrite(writer=ME, request=1, keys=("k",))
    # a history that forked at 4 (another host's term 3): change 5 is not ours
    other = ((1, 1, "h0"), (4, 3, "x"))
    assert rolled_back(node, other, 10) == ((write,), ())
    # then a history that holds term (2, "h") up to 10: the write is back
    ours = ((1, 1, "h0"), (4, 2, "h"))
    assert rolled_back(node, ours, 10) == ((), (write,))
    # and it is reported neither way again while histories hold it
    assert rolled_back(node, ours, 12) == ((), ())


def test_a_write_undone_for_good_is_reported_once() -> None:
    node = _node_with_one_acked_write()
    other = ((1, 1, "h0"), (4, 3, "x"))
    rolled, back = rolled_back(node, other, 10)
    assert len(rolled) == 1 and back == ()
    assert rolled_back(node, ((1, 1, "h0"), (4, 3, "x"), (9, 4, "y")), 12) == ((), ())
