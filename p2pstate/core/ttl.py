"""The expiry times of keys with a ttl, which every replica keeps by its own
clock so that whoever hosts next expires them (the host's ``expire``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..messages import EPHEMERAL, Change
from .ops import Delete, Restore, Set, SetOpts

if TYPE_CHECKING:
    from .node import Node


def note_ttl(node: Node, change: Change) -> None:
    """Keep the expiry time of every key with a ttl, by our clock: whoever
    hosts next expires them by its own."""
    for op in change.ops:
        if isinstance(op, (Set, SetOpts)):
            if op.ttl > 0:  # Set.ttl is 0: a plain key
                node.expiry[op.key] = node.clock + op.ttl
            else:
                node.expiry.pop(op.key, None)
        elif isinstance(op, Delete):
            node.expiry.pop(op.key, None)
        elif isinstance(op, Restore):
            data = node.replica.data
            node.expiry = {
                key: at
                for key, at in node.expiry.items()
                if key in data and data[key].flags & EPHEMERAL
            }
            for key, _, _, _, ttl in op.entries:
                if ttl > 0:
                    node.expiry[key] = node.clock + ttl
