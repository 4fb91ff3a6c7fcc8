"""Joining: a host's Welcome (a snapshot, or the changes after our resume
point) makes us a peer, reporting every write of ours it rolls back; its
Refused ends a first join or a member's session."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..events import WritesRestored, WritesRolledBack
from ..messages import Refused, Snapshot, Welcome
from . import failover, follower, rollback, ttl
from .access import takeover_refusal
from .common import ACCESS_REFUSALS, Role
from .ids import identity_of
from .replica import history_contains

if TYPE_CHECKING:
    from .node import Node


def may_expel(node: Node, host_id: str) -> bool:
    """Whether a host's refusal by access ends our session. Never the
    admin's: no state of its session refuses it, so a host that does holds
    another session's state. Anyone else: as a ban made in the other half
    of a split reaches it (the refuser may hold the admin's act)."""
    admin = node.replica.access.admin
    return identity_of(node.me.id) != admin or node.replica.member(host_id) is not None


def on_welcome(node: Node, msg: Welcome, now: float) -> None:
    asked = node.target is not None and msg.sender == node.target.id
    if not asked and not (node.failing_over and msg.sender in node.probed):
        node.drop("welcome from a node we did not ask")
        return
    if msg.host_id != msg.sender or (msg.snapshot and msg.snapshot.host_id != msg.sender):
        node.drop("welcome naming another node as host")
        return
    if not asked and node.replica.member(msg.sender) is None and not _extends_ours(node, msg):
        # a host discovery showed (failover.probe_found): never at the cost
        # of changes we hold (acknowledged writes, maybe)
        node.drop("welcome from a found host that lacks our last change")
        return
    if not node.admission.may_lead(msg.sender):
        node.drop("welcome from a refused identity")
        return
    snap = msg.snapshot
    refusal = takeover_refusal(node.replica.access, snap.access) if snap else None
    if refusal is not None:
        failover.refuse_state(node, msg.sender, refusal, now)
        return
    r = node.replica
    resume = (msg.resume_seq, msg.resume_epoch, msg.resume_origin)
    if resume != (r.seq, r.last_epoch, r.last_origin):
        # It answers an older Hello of ours (held by TCP across a cut): its
        # changes follow a state we no longer hold, its snapshot is the host's
        # state back then, which may lack writes acknowledged since (reported
        # undone, then brought back by changes with no report). The answer to
        # our latest Hello is on its way.
        node.drop("welcome for an older resume point")
        return
    if msg.snapshot is not None:
        _load_snapshot(node, msg.snapshot)
    else:
        for change in msg.changes:
            if change.seq == node.replica.seq + 1:
                node.replica.apply(change, events=node.events)
                ttl.note_ttl(node, change)
    node.epoch = max(node.epoch, msg.epoch)
    node.role, node.ready = Role.PEER, True
    if follower.refused_here(node):
        return
    node.target = node.replica.member(msg.sender) or node.target
    node.suspects.clear()
    node.probed.clear()
    node.liveness.evidence.clear()
    node.liveness.handed.clear()
    node.liveness.behind, node.liveness.gave_way = None, set()
    node.failing_over, node.liveness.lost_since = False, None
    node.fast_vote = False
    node.heard = node.beat_at = now
    rollback.release_own(node)
    for request in node.writer.unacked():
        if request.req not in node.writer.held:
            follower.send_write(node, request.req, request.ops, request.conds, now)


def _load_snapshot(node: Node, snap: Snapshot) -> None:
    """Take the welcoming host's state, and tell our writer what that
    undid of its acknowledged writes, and what it brought back."""
    report = node.ready  # the first snapshot is the starting state, not news
    # A result held for a change we had not applied yet names a seq of
    # the history we leave; it says nothing of this one. Ask again.
    node.writer.held.clear()
    node.replica.load(snap, events=node.events if report else None)
    rolled, back = rollback.rolled_back(node, snap.terms, snap.seq)
    back += rollback.applied_after_all(node)
    more, more_back = rollback.folded_back(node, snap.terms, snap.seq)
    node.expiry = {key: node.clock + ttl for key, _, _, _, _, ttl in snap.data if ttl > 0}
    if back or more_back:
        node.events.append(WritesRestored(writes=back, mine=back, more=more_back))
    if rolled or more:
        node.events.append(WritesRolledBack(writes=rolled, mine=rolled, more=more))


def _extends_ours(node: Node, msg: Welcome) -> bool:
    """Whether the welcoming host's history holds our last change (its
    changes follow it, or its snapshot's history holds it)."""
    snap, r = msg.snapshot, node.replica
    if snap is None:
        return True  # changes are sent only after a change it holds
    return history_contains(snap.terms, snap.seq, r.seq, r.last_epoch, r.last_origin)


def on_refused(node: Node, msg: Refused, now: float) -> None:
    """The host we ask to join is full or closed: a first join ends here
    (the adapter tells the user); a member coming back asks again. A
    refusal by access (banned, not authorized) ends a member's session."""
    if node.target is None or msg.sender != node.target.id:
        node.drop("refusal we did not ask for")
        return
    if msg.reason in ACCESS_REFUSALS:
        if node.ready and not may_expel(node, msg.sender):
            failover.refuse_state(node, msg.sender, "refuses_us", now)
            return
        follower.expel(node, msg.reason)
    elif node.ready:
        node.drop("full or closed, to a member")
    else:
        node.refused = msg.reason
        node.role = Role.CLOSED
