"""Our own writes' outcomes, and the exact report of those a merge undid:
where each acknowledged write of ours sits in the history, checked against
every snapshot we load (``WritesRolledBack``)."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from ..events import RolledBackWrite
from .common import Acked
from .replica import history_contains
from .status import Status
from .writer import Outcome

if TYPE_CHECKING:
    from .node import Node


def deliver(node: Node, outcomes: list[Outcome]) -> None:
    """Hand our writes' outcomes to the user, and remember where each
    acknowledged one sits in the history (its change is applied here by
    now), so that a merge that undoes it can say so."""
    for o in outcomes:
        keys = node.write_keys.pop(o.req, ())
        term = node.replica.term_of(o.seq) if o.status == Status.OK and keys else None
        if term is not None:
            node.acked.append(Acked(o.req, o.seq, term[0], term[1], keys))
    node.outcomes.extend(outcomes)


def rolled_back(
    node: Node, terms: tuple[tuple[int, int, str], ...], last_seq: int
) -> tuple[tuple[RolledBackWrite, ...], tuple[RolledBackWrite, ...]]:
    """Our own acknowledged writes that the incoming snapshot does not hold,
    and those an earlier snapshot undid that this one holds again (reported
    restored, so that the reports net out to what was undone).

    Taken from the acknowledgements we kept rather than from the log: the
    log starts afresh at every snapshot, and a write acknowledged before
    an earlier snapshot is just as lost. Called once the snapshot is
    loaded: a write the new history applied elsewhere (a resent request
    that two lineages each applied, at different places) is in its table
    of results, and is not lost."""
    out, kept, back = [], [], []
    for a in node.acked:
        found = found_in(node, a, terms, last_seq)
        if found is not None:
            kept.append(found)
        else:
            out.append(RolledBackWrite(writer=node.me.id, request=a.req, keys=a.keys))
            node.undone[a.req] = a
    for req, a in list(node.undone.items()):
        # undone by an earlier merge, and this history holds it after all
        found = found_in(node, a, terms, last_seq)
        if found is not None:  # (never one just undone: this history lacks those)
            del node.undone[req]
            kept.append(found)
            back.append(RolledBackWrite(writer=node.me.id, request=a.req, keys=a.keys))
    node.acked = deque(sorted(kept, key=lambda x: x.seq))
    return tuple(out), tuple(back)


def found_in(
    node: Node, a: Acked, terms: tuple[tuple[int, int, str], ...], last_seq: int
) -> Acked | None:
    """Where acknowledged write *a* sits in the history just loaded (its
    own place, or where that history applied the same request), if it is
    there."""
    if history_contains(terms, last_seq, a.seq, a.epoch, a.origin):
        return a
    record = node.replica.dedupe.get(node.me.id)
    here = record.results.get(a.req) if record is not None else None
    term = node.replica.term_of(here[2]) if here is not None and here[0] == Status.OK else None
    if here is None or term is None:
        return None
    return Acked(a.req, here[2], term[0], term[1], a.keys)


def release_own(node: Node) -> None:
    if node.writer.held:
        deliver(node, node.writer.release(node.replica.seq))
