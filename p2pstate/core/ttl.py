"""The expiry times of keys with a ttl, which every replica keeps by its own
clock so that whoever hosts next expires them (the host's ``expire``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..messages import EPHEMERAL, Change

if TYPE_CHECKING:
    from .node import Node


def note_ttl(node: Node, change: Change) -> None:
    """Keep the expiry time of every key with a ttl, by our clock: whoever
    hosts next expires them by its own."""
    for op in change.ops:
        if op[0] == "set":
            if len(op) == 5 and op[4] > 0:
                node.expiry[op[1]] = node.clock + op[4]
            else:
                node.expiry.pop(op[1], None)
        elif op[0] == "del":
            node.expiry.pop(op[1], None)
        elif op[0] == "restore":
            data = node.replica.data
            node.expiry = {
                key: at
                for key, at in node.expiry.items()
                if key in data and data[key].flags & EPHEMERAL
            }
            for key, _, _, _, ttl in op[1]:
                if ttl > 0:
                    node.expiry[key] = node.clock + ttl
