"""Our own writes' outcomes, and the exact report of those a merge undid:
where each acknowledged write of ours sits in the history, checked against
every snapshot we load (``WritesRolledBack``).

What is kept stays bounded however long the session: the latest
``DETAILED`` acknowledged writes in detail (request, change, keys), older
ones folded into runs of requests of one term (``Run``: the requests
between that it does not count as a bitmap), which a merge reports by
number (the events' ``more``). A run is enough to count
exactly: a history applies a writer's requests in the writer's order, so
of a term it forked within, it holds our requests up to its writer
record's ``last_req`` (one that arrives after a lost one waits,
``host.order``).
Nothing acknowledged can be dropped instead: a history that lacks it (the
other half of a split, a copy's own session) may still win a merge."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from ..events import RolledBackWrite
from .common import Acked, Run
from .replica import history_contains
from .status import Status
from .writer import Outcome

if TYPE_CHECKING:
    from .node import Node

Terms = tuple[tuple[int, int, str], ...]

#: Acknowledged writes of ours kept in detail, and writes reported undone:
#: older ones are kept as runs of requests, reported by number.
DETAILED = 4096

#: The answers a host gives that a merge may contradict (the history that won
#: applied the request); the writer's own two never reached a host.
DECLINED = frozenset(Status) - {Status.OK, Status.CLOSED, Status.UNSENDABLE}


def deliver(node: Node, outcomes: list[Outcome]) -> None:
    """Hand our writes' outcomes to the user, and remember where each
    acknowledged one sits in the history (its change is applied here by
    now), so that a merge that undoes it can say so."""
    for o in outcomes:
        keys = node.write_keys.pop(o.req, ())
        term = node.replica.term_of(o.seq) if o.status == Status.OK and keys else None
        if term is not None:
            node.acked.append(Acked(o.req, o.seq, term[0], term[1], keys))
        elif o.status in DECLINED and keys:
            node.declined[o.req] = keys
    while len(node.declined) > DETAILED:  # bounded: the oldest are not checked
        del node.declined[next(iter(node.declined))]
    fold(node, DETAILED)
    node.outcomes.extend(outcomes)


def fold(node: Node, keep: int) -> None:
    """Keep the latest *keep* acknowledged writes and writes reported undone
    in detail; the older ones join runs of requests."""
    while len(node.acked) > keep:
        _join_run(node.acked_runs, node.acked.popleft())
    if len(node.undone) > keep:
        for req in sorted(node.undone)[: len(node.undone) - keep]:
            _join_run(node.undone_runs, node.undone.pop(req))


def _join_run(runs: list[Run], a: Acked) -> None:
    """Fold *a* into the last run if it is of the same term and after it
    (the requests between are not ours to count: not acknowledged with
    keys, or in another history), else start a run."""
    last = runs[-1] if runs else None
    if last is not None and (last.epoch, last.origin) == (a.epoch, a.origin) and a.req > last.last:
        last.skip_to(a.req)
        last.last_seq = max(last.last_seq, a.seq)
    else:
        runs.append(Run(a.req, a.req, a.epoch, a.origin, a.seq - 1, a.seq))


def kept_count(node: Node) -> int:
    """How many acknowledged writes of ours the current history holds."""
    return len(node.acked) + sum(r.count for r in node.acked_runs)


def undone_count(node: Node) -> int:
    """How many writes of ours were reported undone and not restored since."""
    return len(node.undone) + sum(r.count for r in node.undone_runs)


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


def applied_after_all(node: Node) -> tuple[RolledBackWrite, ...]:
    """Our writes a host declined that the history just loaded applied
    after all: a host of the other half applied the request, its answer was
    lost with the link, and a host of this half, which lacked it, declined
    it when we asked again (a conflict). Reported restored, so that the
    outcomes and reports a game counts net out to what the history holds;
    kept as acknowledged from now on, so that a later merge that undoes
    them reports them rolled back."""
    record = node.replica.dedupe.get(node.me.id)
    if record is None:
        return ()
    out = []
    for req, keys in list(node.declined.items()):
        here = record.results.get(req)
        term = node.replica.term_of(here[2]) if here is not None and here[0] == Status.OK else None
        if here is None or term is None:
            continue
        del node.declined[req]
        node.acked.append(Acked(req, here[2], term[0], term[1], keys))
        out.append(RolledBackWrite(writer=node.me.id, request=req, keys=keys))
    if out:
        node.acked = deque(sorted(node.acked, key=lambda x: x.seq))
    return tuple(out)


def folded_back(node: Node, terms: Terms, last_seq: int) -> tuple[int, int]:
    """How many of the writes kept as runs the history just loaded lacks
    (undone), and how many of those reported undone it holds again
    (restored); after ``rolled_back``, so that undone details that overflow
    join runs only once both are counted."""
    record = node.replica.dedupe.get(node.me.id)
    upto = record.last_req if record is not None else 0
    lost, back = (
        _lost_runs(node, terms, last_seq, upto),
        _restored_runs(node, terms, last_seq, upto),
    )
    node.undone_runs.extend(lost)
    fold(node, DETAILED)
    return sum(r.count for r in lost), sum(r.count for r in back)


def _lost_runs(node: Node, terms: Terms, last_seq: int, upto: int) -> list[Run]:
    """Split every run of acknowledged writes into what the history holds
    (kept) and what it lacks (returned). A run whose last change it holds
    is all there; of a run whose term it forked within, it holds the
    requests up to *upto*, the last of ours it applied; of a run whose
    changes it holds none of, nothing: its ``last_req`` may be past the
    run all the same (after a merge undid them, we wrote on in that
    history, whose host takes the request after those we confirmed)."""
    kept: list[Run] = []
    lost: list[Run] = []
    for run in node.acked_runs:
        if history_contains(terms, last_seq, run.last_seq, run.epoch, run.origin):
            kept.append(run)
            continue
        held, gone = _divide(run, term_end(terms, last_seq, run.epoch, run.origin), upto)
        if held is not None:
            kept.append(held)
        if gone is not None:
            lost.append(gone)
    node.acked_runs = kept
    return lost


def _restored_runs(node: Node, terms: Terms, last_seq: int, upto: int) -> list[Run]:
    """Take from the runs reported undone those the history holds again
    (returned, and kept as acknowledged again): all of a run whose last
    change it holds; of a run whose term it holds only in part (it forked
    within it), the requests up to *upto*. A history that forked before
    the run, or descends from the one that undid it, holds none of it
    there (its ``last_req`` may be past the run: the requests we made
    after the undo)."""
    still: list[Run] = []
    back: list[Run] = []
    for run in node.undone_runs:
        end = term_end(terms, last_seq, run.epoch, run.origin)
        if end is not None and end >= run.last_seq:
            back.append(run)
            continue
        held, gone = _divide(run, end, upto)
        if held is not None:
            back.append(held)
        if gone is not None:
            still.append(gone)
    node.undone_runs = still
    node.acked_runs.extend(back)
    return back


def _divide(run: Run, end: int | None, upto: int) -> tuple[Run | None, Run | None]:
    """Split *run* where a history that holds its term up to *end* forked:
    the part it holds (our requests up to *upto*, when it forked within the
    run) and the part it lacks (after *end* of that term)."""
    forked_within = end is not None and end > run.after
    held, gone = run.split(
        max(min(upto, run.last), run.first - 1) if forked_within else run.first - 1
    )
    if held is not None:
        held.last_seq = _at(run, end)
    if gone is not None:
        gone.after = max(run.after, end) if end is not None else run.after
    return held, gone


def _at(run: Run, end: int | None) -> int:
    """The last change of the part of *run* a history holds up to *end* of
    its term: there, if that is within the run's changes, else where it
    was (the history applied those requests elsewhere)."""
    return end if end is not None and run.after < end < run.last_seq else run.last_seq


def term_end(terms: Terms, last_seq: int, epoch: int, origin: str) -> int | None:
    """The last change of term (epoch, origin) in the history *terms*
    describes up to *last_seq*, or None if it holds none of that term."""
    for i, (first, t_epoch, t_origin) in enumerate(terms):
        if (t_epoch, t_origin) == (epoch, origin):
            end = terms[i + 1][0] - 1 if i + 1 < len(terms) else last_seq
            return end if end >= first else None
    return None


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
