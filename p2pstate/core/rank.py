"""Which of two hosts of one session a merge keeps: one rule, used by the
node (its own rank and a rival's), the lobby (which host to list) and a first
join (which host to ask).

Pure: numbers in, an order key out. The host serving more players wins (an
isolated peer that took over alone gives way to the rest of the session);
on a tie the higher epoch, then the lower node id.
"""

from __future__ import annotations

__all__ = ["Rank", "host_rank"]

#: (players, epoch, the node id as a key under which a lower id is larger)
Rank = tuple[int, int, tuple[int, ...]]


def host_rank(players: int, epoch: int, node_id: str) -> Rank:
    """The order key of a host: compare two with ``>``; the larger wins."""
    return (players, epoch, _lower_first(node_id))


def _lower_first(node_id: str) -> tuple[int, ...]:
    # Each byte negated reverses the order; the closing 1 sits above every
    # negated byte, so an id ranks above the longer ids it is a prefix of,
    # as "a" < "ab" says.
    return (*(-b for b in node_id.encode("utf-8", "surrogatepass")), 1)
