"""The host pipeline: a write is checked (``admission``), ordered as the next
change, applied and sent to every synced peer, the successor first; it is
answered once the successor holds it (the durable point). Also TTL expiry,
membership (hellos, leaves, timeouts), the successor and isolation."""

from __future__ import annotations

import heapq
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..events import IsolationChanged
from ..messages import (
    Ack,
    Change,
    ChangeMsg,
    Gone,
    Heartbeat,
    Hello,
    Leave,
    Member,
    Message,
    Refused,
    Result,
    Snapshot,
    Welcome,
    Write,
)
from . import admission, follower, liveness, rollback, ttl
from .access import ALWAYS_ADMIN_OPS, Access
from .common import UNSYNCED, Conn, Fence, Role, Send, remember
from .ids import identity_of
from .ops import Cond, Delete, Info, Join, Op, Restore, SetAccess, Term
from .ops import Leave as LeaveOp
from .quorum import Streak, has_majority, is_live, may_go_alone
from .status import Status
from .writer import Outcome

if TYPE_CHECKING:
    from .node import Node


def first_access(admin: str, access: Access | None, stored: Access | None) -> Access:
    """The access state a new session starts with: *admin*'s for good, or,
    from a store, the one it kept, whole (*access* is then unused)."""
    if stored is None:
        return replace(access or Access(), admin=admin, banned=frozenset())
    if not stored.may_read(admin):
        raise ValueError(f"the stored access state refuses {admin}")
    return stored


def create(  # noqa: PLR0917 (start_host's arguments, as they come)
    node: Node,
    session_id: str,
    now: float,
    access: Access,
    info: dict[str, Any] | None,
    initial: tuple[tuple[str, Any, int, str, int, float], ...],
    initial_seq: int,
) -> None:
    """Host a new session at epoch 1 (``Node.start_host``). One from a store
    starts with its keys, *initial* (key, value, version, owner, flags,
    seconds of ttl left or 0), and numbers its changes after *initial_seq*,
    so that versions keep growing."""
    node.replica.session_id = session_id
    if initial or initial_seq:
        node.replica.seed(initial, initial_seq)
        node.expiry = {key: now + ttl for key, _, _, _, _, ttl in initial if ttl > 0}
    node.role, node.epoch, node.ready = Role.HOST, 1, True
    node.liveness.agreed = frozenset((node.me.id,))
    ops: list[Op] = [
        Join(node.me_at(node.replica.seq + 1)),
        Term(1, node.me.id, None, "created"),
        SetAccess(access),
    ]
    if info:
        ops.append(Info(dict(info)))
    change = Change(seq=node.replica.seq + 1, epoch=1, origin=node.me.id, ops=tuple(ops))
    apply(node, change, report=False)
    node.beat_at = now


def check_isolation(node: Node, now: float) -> None:
    """Host: are we heard by a majority of the last agreed membership?
    While we are, the current membership becomes agreed once that keeps
    a majority; when we stop being, we become ``isolated``. The lone-node
    rule: after isolation_timeout (durability "default") we go on with
    the players we hear, which become the agreed membership; so after a
    successor fence that long (``outwait_fence``)."""
    outwait_fence(node, now)
    if not liveness.majority_of(node, node.liveness.agreed, now) and may_go_alone(
        node.liveness.isolated_since, now, node.config
    ):
        node.stats["went_alone"] += 1
        node.fence = None  # the lone rule decides what we acknowledge now
        if node.liveness.lone_from is None:
            node.liveness.lone_from = node.liveness.agreed
        cfg, woke = node.config, node.liveness.woke_at
        live = {pid for pid, c in node.conns.items() if is_live(c.heard, now, woke, cfg)}
        node.liveness.agreed = frozenset(live | {node.me.id})
    if node.liveness.lone_from is not None and liveness.majority_of(
        node, node.liveness.lone_from, now
    ):
        node.liveness.lone_from = None
    if liveness.majority_of(node, node.liveness.agreed, now):
        members = frozenset(m.id for m in node.replica.members) | {node.me.id}
        if liveness.majority_of(node, members, now):
            node.liveness.agreed = members
        if node.liveness.isolated_since is not None:
            node.liveness.isolated_since = None
            node.events.append(IsolationChanged(isolated=False))
            # what we made while isolated is acknowledged now (ask_ack)
            r = node.replica
            liveness.note_backed(node, r.seq, r.last_epoch, r.last_origin)
            if node.successor is not None:
                ask_ack(node, node.successor)  # it was told not to acknowledge
            release_durable(node)
    elif node.liveness.isolated_since is None:
        node.liveness.isolated_since = now
        node.stats["isolated"] += 1
        node.events.append(IsolationChanged(isolated=True))


def order(  # noqa: PLR0917 (a write's fields, as they come)
    node: Node,
    writer: str,
    req: int,
    acked_upto: int,
    ops: tuple[Op, ...],
    conds: tuple[Cond, ...],
) -> None:
    """Decide one write and make it the next change."""
    record = node.replica.dedupe.get(writer)
    if req > max(record.last_req if record else 0, acked_upto) + 1:
        # An earlier request of this writer is still pending and not here:
        # it was lost on the way. Requests are applied in the writer's
        # order, so this one waits for the writer to resend from there.
        node.stats["write_gap"] += 1
        return
    if record is not None and req <= record.last_req:
        kept = record.results.get(req)
        if kept is None:
            node.stats["duplicate_without_result"] += 1
            answer(node, writer, req, Status.INVALID, "request already applied", 0)
        elif kept[2] > durable_point(node):
            await_seq(node, kept[2], writer, req)
        else:
            answer(node, writer, req, kept[0], kept[1], kept[2])
            if (conn := node.conns.get(writer)) is not None and not conn.answer_writes:
                conn.answer_writes = True  # our successor's answer missed it
                node.stats["writer_answered_by_host"] += 1
        return
    status, detail = node.admission.check(writer, ops, conds, node.clock)
    change = Change(
        seq=node.replica.seq + 1,
        epoch=node.epoch,
        origin=node.me.id,
        writer=writer,
        req=req,
        acked_upto=acked_upto,
        status=status,
        detail=detail,
        ops=ops if status == Status.OK else (),
    )
    expelled: dict[str, tuple[str, ...]] = {}  # member -> its endpoints
    acl = status == Status.OK and any(op.kind in ALWAYS_ADMIN_OPS for op in ops)
    if acl:
        # A member the new rules refuse leaves in the same change, so no
        # replica ever holds the rule without its effect.
        leaves = node.admission.expulsions(ops, node.me.id)
        expelled = {op.peer: node.endpoints_of(op.peer) for op in leaves}
        change = replace(change, ops=ops + leaves)
    # Asked to acknowledge, the successor answers the writer itself
    # (follower.answer_writer): then the host need not (release_durable).
    asked = node.successor if node.successor is not None and asks_ack(node) else None
    apply(node, change)
    await_seq(node, change.seq, writer, req, asked)
    release_durable(node)
    if acl:
        after_expulsions(node, change, expelled)


def after_expulsions(node: Node, change: Change, expelled: dict[str, tuple[str, ...]]) -> None:
    """Host: tell each member that *change* removed why (at *expelled*, its
    endpoints), forget its connection; leave ourselves if the change
    refuses us."""
    for op in change.ops:
        if not isinstance(op, LeaveOp):
            continue
        node.conns.pop(op.peer, None)
        node.admission.buckets.pop(op.peer, None)
        refusal = Refused(sender=node.me.id, epoch=node.epoch, reason=op.reason)
        node.outbox.append(Send(op.peer, expelled.get(op.peer, ()), refusal))
    update_successor(node)
    mine = identity_of(node.me.id)
    if not node.replica.access.may_read(mine):
        node.leave(node.clock)  # hand over first, as any host that leaves
        follower.expel(node, node.replica.access.refusal(mine))


def apply(node: Node, change: Change, *, report: bool = True) -> None:
    """Host: apply a change it made and send it to every synced peer."""
    node.replica.apply(change, events=node.events if report else None)
    liveness.note_backed(node, change.seq, change.epoch, change.origin)
    ttl.note_ttl(node, change)
    # The successor first: its acknowledgement is what the writer waits for
    # (and it answers the writer itself: not while we are isolated).
    successor = node.successor
    backed = is_backed(node, change)
    if successor is not None and node.conns.get(successor, UNSYNCED).synced:
        ack = asks_ack(node)
        msg = ChangeMsg(sender=node.me.id, epoch=node.epoch, change=change, ack=ack, backed=backed)
        node.send_id(successor, msg)
    others = ChangeMsg(sender=node.me.id, epoch=node.epoch, change=change, ack=False, backed=backed)
    # Each peer's endpoints from one map: looked up in the member list, one
    # scan per peer made the fan-out of every change quadratic in the peers.
    by_id = {m.id: m.endpoints for m in node.replica.members}
    outbox = node.outbox
    for peer_id, conn in node.conns.items():
        if conn.synced and peer_id != successor:
            endpoints = by_id.get(peer_id)
            if endpoints is None:
                endpoints = node.endpoints_of(peer_id)
            outbox.append(Send(peer_id, endpoints, others))  # one message: encoded once
    rollback.release_own(node)


def expire(node: Node, now: float) -> None:
    """Host: delete the keys whose ttl ran out, as one change."""
    due = sorted(key for key, at in node.expiry.items() if at <= now)
    for key in due:
        del node.expiry[key]
    ops = tuple(Delete(key) for key in due if key in node.replica.data)
    if ops:
        node.stats["expired"] += len(ops)
        apply(node, Change(seq=node.replica.seq + 1, epoch=node.epoch, origin=node.me.id, ops=ops))


def snapshot(node: Node) -> Snapshot:
    return node.replica.snapshot(node.ttl_left())


def durable_point(node: Node) -> int:
    """Highest seq that survives the loss of this host: none while we are
    isolated (a takeover on the other side may not hold it)."""
    if liveness.acks_paused(node):
        return 0
    if not node.replica.succession():
        return node.replica.seq  # alone: nobody else could hold it
    if node.fence is not None:
        return 0  # a replaced successor may yet take over without it
    return node.durable if node.successor is not None else 0


def asks_ack(node: Node) -> bool:
    """Whether a change sent to the successor now asks it to acknowledge
    (and so to answer the change's writer): not while we are isolated, nor
    while a replaced successor's fence stands."""
    return not liveness.acks_paused(node) and node.fence is None


def await_seq(node: Node, seq: int, writer: str, req: int, asked: str | None = None) -> None:
    """Answer *writer*'s request *req* once change *seq* is durable; *asked*
    is the successor asked to answer it too, if one was."""
    node.awaiting[seq] = (writer, req, asked)
    heapq.heappush(node.awaiting_seqs, seq)


def release_durable(node: Node) -> None:
    # A heap, not a scan: with thousands of writes in flight, a scan per
    # write made the host quadratic.
    point = durable_point(node)
    seqs = node.awaiting_seqs
    while seqs and seqs[0] <= point:
        entry = node.awaiting.pop(heapq.heappop(seqs), None)
        if entry is None:
            continue  # the same seq was awaited twice
        writer, req, asked = entry
        if asked is not None and asked == node.successor and _answered_by(node, writer):
            # The successor whose acknowledgement made it durable answered
            # the writer when it took the change: a second Result would only
            # cost the writer a decode. Should that one be lost, the writer
            # resends, gets its kept result from order(), and from then on
            # we answer that writer ourselves.
            node.stats["results_left_to_successor"] += 1
            continue
        record = node.replica.dedupe.get(writer)
        kept = record.results.get(req) if record else None
        if kept is not None:
            answer(node, writer, req, kept[0], kept[1], kept[2])


def _answered_by(node: Node, writer: str) -> bool:
    """Whether our successor's answer reaches *writer* (as far as we know)."""
    conn = node.conns.get(writer)
    return conn is not None and not conn.answer_writes


def answer(  # noqa: PLR0917 (a kept result's fields, as they come)
    node: Node, writer: str, req: int, status: Status, detail: Any, seq: int
) -> None:
    if writer == node.me.id:
        outcome = Outcome(req=req, status=status, detail=detail, seq=seq)
        rollback.deliver(node, node.writer.result(outcome, node.replica.seq))
    elif writer in node.conns:
        msg = Result(
            sender=node.me.id,
            epoch=node.epoch,
            req=req,
            status=status,
            detail=detail,
            seq=seq,
        )
        node.send_id(writer, msg)


def synced_successor(node: Node) -> str | None:
    for m in node.replica.succession():
        conn = node.conns.get(m.id)
        return m.id if conn is not None and conn.synced else None
    return None


def update_successor(node: Node, *, resynced: str | None = None) -> None:
    """Pick the successor again after membership or sync changed (or after
    member *resynced* said hello again); a new one is sent every change
    still awaiting durability, to acknowledge.

    It is asked to acknowledge the latest change even when nothing awaits:
    a resent request whose result was decided in an earlier term waits on
    that acknowledgement, and no new change may come to bring one. A
    successor that says hello again (it missed changes, and a welcome is
    not acknowledged) is asked again for the same reason."""
    successor = synced_successor(node)
    if successor != node.successor or (successor is not None and successor == resynced):
        note_fence(node, successor)
        node.successor, node.durable = successor, 0
        if successor is not None:
            ask_ack(node, successor)  # (not while isolated or fenced: asked when that ends)
    # Always: losing the last peer makes everything awaiting durable.
    release_durable(node)


def note_fence(node: Node, successor: str | None) -> None:
    """Our successor changes to *successor*. A write is acknowledged once
    we and our successor hold it because the successor is who a majority
    elects if we are lost. Replacing it (it fell silent, was removed) does
    not tell the members that still follow the old one: those that lost us
    too vote for it, and it may take over without what the new one
    acknowledged (seen with host blips whose links delivered late: the old
    host removed its successor, which was gathering votes, and went on
    acknowledging with the next member). So the new successor's
    acknowledgements count only once too few members lack the change that
    replaced the old one to elect it (``pass_fence``)."""
    old = node.successor
    fence = node.fence
    if fence is not None and successor == fence.old:
        node.fence = None  # the first one is back: it holds what it acknowledged
    elif old is not None and successor != old and node.liveness.lone_from is None:
        # (a host gone on alone acknowledges under the lone rule instead)
        members = frozenset(m.id for m in node.replica.members) | node.liveness.agreed
        members |= {old, node.me.id}
        if fence is not None:
            members |= fence.members
        first = fence.old if fence else old
        node.fence = Fence(node.replica.seq, members, first, fence.since if fence else node.clock)


def note_holds(node: Node, conn: Conn, epoch: int, seq: int) -> None:
    """Member *conn* says it holds our changes up to *seq*."""
    if epoch == node.epoch and seq > conn.seq:
        conn.seq = min(seq, node.replica.seq)
        pass_fence(node)


def pass_fence(node: Node) -> None:
    """Lift the fence once the members that lack its change are too few
    to elect the old successor (no majority of the fence's members), and
    ask the successor to acknowledge what waits.

    A report does not withdraw a vote: a member may have voted for the old
    successor, which can count it for host_timeout more, before it came
    back to us. If the old successor took over on it, its notice claims
    that majority when it reaches us, late: ``merge.must_challenge`` asks
    for its standing of now rather than step down on it
    (tests/core/test_stale_claims.py)."""
    fence = node.fence
    if fence is None:
        return
    held = 1 + sum(
        1
        for mid in fence.members
        if (c := node.conns.get(mid)) is not None and mid != node.me.id and c.seq >= fence.seq
    )
    if not has_majority(len(fence.members) - held, len(fence.members)):
        lift_fence(node)  # else those that lack it could still elect the old one


def outwait_fence(node: Node, now: float) -> None:
    """A fence still up after isolation_timeout (of our running time): the
    members that lack its change stayed a majority of its membership. Dead,
    or cut off together and electing the old successor: we cannot tell,
    as when we hear no majority, and the lone rule decides (durability
    "default": go on; our side is no majority's until we hear a majority
    of that membership again, so a merge with the old successor's side
    keeps that one). Removing the silent members does not lift the fence:
    they went on lacking the change, so their votes may still count there."""
    fence = node.fence
    if fence is None or liveness.acks_paused(node):
        return  # (isolated: the lone rule of check_isolation decides first)
    if may_go_alone(max(fence.since, node.liveness.woke_at), now, node.config):
        node.stats["went_alone"] += 1
        node.stats["fence_outwaited"] += 1
        node.liveness.lone_from = fence.members
        lift_fence(node)


def lift_fence(node: Node) -> None:
    """The new successor's acknowledgements count: ask it for what waits."""
    node.fence = None
    if node.successor is not None:
        ask_ack(node, node.successor)
    release_durable(node)


def ask_ack(node: Node, successor: str) -> None:
    """Send *successor* every change still awaiting durability (at least
    the latest one), each asking for an acknowledgement. Not while our
    acknowledgements are paused (isolated, or a rival's claim is being
    checked) nor while a fence stands: it would answer the writers itself;
    the end of the pause or the fence asks again (``check_isolation``,
    ``merge.resume``, ``lift_fence``)."""
    if not asks_ack(node):
        return
    first = min(node.awaiting, default=node.replica.seq)
    for change in node.replica.log:
        if change.seq >= first:
            msg = ChangeMsg(
                sender=node.me.id,
                epoch=node.epoch,
                change=change,
                ack=True,
                backed=is_backed(node, change),
            )
            node.send_id(successor, msg)


def is_backed(node: Node, change: Change) -> bool:
    """Host: whether *change* (of our history) is at or before our backed
    change: our peers keep what we say, and one that takes over claims it
    (``liveness.takeover_backed``)."""
    return change.seq <= node.liveness.backed[0]


def remove_member(node: Node, peer_id: str, reason: str, now: float) -> None:
    node.conns.pop(peer_id, None)
    node.admission.buckets.pop(peer_id, None)
    if reason == "left":
        # It said so itself: it is no side of a split to be outvoted by, so
        # the majority we need shrinks with it (else the host of a game of
        # two goes isolated whenever the other player quits).
        node.liveness.agreed -= {peer_id}
        if node.liveness.lone_from is not None:  # nor of the one we went alone from
            node.liveness.lone_from -= {peer_id}
    member = node.replica.member(peer_id)
    if member is not None:
        change = Change(
            seq=node.replica.seq + 1,
            epoch=node.epoch,
            origin=node.me.id,
            ops=(LeaveOp(peer_id, reason),),
        )
        apply(node, change)
        if reason == "timeout":
            remember(node.departed, peer_id, ())
        if reason == "timeout" and member.endpoints:
            # It may only have been silent for a while: tell it, so that
            # it says hello again at once rather than after host_timeout
            # (we will not know where it is once it is no member).
            node.outbox.append(
                Send(peer_id, member.endpoints, Gone(sender=node.me.id, epoch=node.epoch))
            )
    update_successor(node)
    if reason == "left" and node.fence is not None:
        forget_leaver(node, peer_id)


def forget_leaver(node: Node, peer_id: str) -> None:
    """A member that left on purpose neither votes nor takes over: it
    leaves the fence, which falls if it was the successor replaced."""
    fence = node.fence
    assert fence is not None
    if fence.old != peer_id:
        node.fence = replace(fence, members=fence.members - {peer_id})
        pass_fence(node)
    else:
        lift_fence(node)


def close_host_side(node: Node) -> None:
    node.conns.clear()
    node.resets_seen.clear()
    node.admission.buckets.clear()
    node.awaiting.clear()
    node.awaiting_seqs.clear()
    node.successor, node.durable = None, 0
    node.fence = None
    node.liveness.challenged_at = node.liveness.challenger = None


def on_hello(node: Node, msg: Hello, now: float) -> None:
    """A node asks to join, or a member to catch up: welcome it with the
    changes after its resume point, or a snapshot, unless admission refuses."""
    conn = node.conns.get(msg.sender)
    if conn is not None and says_farewell(node, msg, now):
        # a member whose link to us was reset took us for lost
        # (``failover.disown``): no longer ours to count on, whatever it said
        # before; it says hello again if its new host fails it
        node.stats["disowned"] += 1
        conn.heard = Streak()
        check_isolation(node, now)
        return
    if _refused_by_access(node, msg, now):
        return
    if msg.epoch > node.epoch and not _move_epoch(node, msg):
        return
    if node.replica.member(msg.sender) is None and not _room_for(node, msg):
        return
    newcomer = node.replica.member(msg.sender) is None
    if newcomer:
        _add_member(node, msg)
    welcome = _welcome(node, msg)
    node.stats["welcome_snapshot" if welcome.snapshot is not None else "welcome_catchup"] += 1
    node.send_id(msg.sender, welcome)
    welcomed(node, msg.sender, newcomer, now)
    update_successor(node, resynced=msg.sender)


def on_reset(node: Node, peer_id: str, now: float) -> None:
    """The transport saw member *peer_id*'s link to us reset (``Node.suspect``):
    it counts as live again only on a new streak of messages."""
    node.stats["suspected_member"] += 1
    node.resets_seen[peer_id] = now
    node.conns[peer_id].heard = Streak()
    check_isolation(node, now)


def says_farewell(node: Node, msg: Hello, now: float) -> bool:
    """Host: a member's vote naming us as lost, sent to us after its link
    to us was reset (we saw it too: ``Node.suspect``). From the candidate (the
    first of our succession it does not suspect) it asks us back (it
    waits for votes and keeps asking the host it lost); from anyone else
    it is ``failover.disown``'s farewell."""
    reset = node.resets_seen.get(msg.sender)
    if msg.prev_host != node.me.id or reset is None or now - reset > node.config.host_timeout:
        return False
    lost = set(msg.suspects)
    for m in node.replica.succession():
        if m.id not in lost:
            return m.id != msg.sender
    return True


def _refused_by_access(node: Node, msg: Hello, now: float) -> bool:
    """Refuse a Hello from an identity our access state refuses (and remove
    it, if a member): True if we did."""
    identity = identity_of(msg.sender)
    if not node.replica.access.may_read(identity):
        # readmode, or a ban: checked on every hello, a member's too, so a
        # new host refuses what the old one did; before anything else, so
        # a refused hello changes nothing here (not even our epoch)
        why = node.replica.access.refusal(identity)
        node.refusal(f"refused_{why}", msg.sender)
        refused = Refused(sender=node.me.id, epoch=node.epoch, reason=why)
        node.outbox.append(Send(msg.sender, msg.endpoints, refused))
        if node.replica.member(msg.sender) is not None:
            remove_member(node, msg.sender, why, now)
        return True
    return False


def _move_epoch(node: Node, msg: Hello) -> bool:
    """A Hello names a later epoch than ours: move past it if it may (True),
    else drop it (False)."""
    if not admission.may_move_epoch(node, msg):
        # Asked again soon: by then a merging host is known to us.
        node.drop("hello with an epoch we cannot verify")
        return False
    # The newcomer knew a later epoch than ours: move past it so that
    # nothing from that other lineage can be taken for ours.
    node.epoch = msg.epoch + 1
    apply(
        node,
        Change(
            seq=node.replica.seq + 1,
            epoch=node.epoch,
            origin=node.me.id,
            ops=(Term(node.epoch, node.me.id, node.me.id, "merge"),),
        ),
    )
    return True


def _room_for(node: Node, msg: Hello) -> bool:
    """A newcomer: is there room (max_players, joinable)? Refuse it if not
    (False). Only a current member skips this (its id is in our
    membership), never a Hello that names our session."""
    info = node.replica.info
    limit = info.get("max_players")
    reason = "closed" if info.get("joinable") is False else None
    if limit is not None and len(node.replica.members) >= limit:
        reason = "full"
    if reason is not None:
        node.stats[f"refused_{reason}"] += 1
        refusal = Refused(sender=node.me.id, epoch=node.epoch, reason=reason)
        node.outbox.append(Send(msg.sender, msg.endpoints, refusal))
        return False
    return True


def _add_member(node: Node, msg: Hello) -> None:
    """A newcomer joins the membership, as the next change."""
    member = Member(
        id=msg.sender,
        name=msg.name,
        endpoints=msg.endpoints,
        joined_seq=node.replica.seq + 1,
        profile=msg.profile,
        joined_at=msg.joined_at,
    )
    apply(
        node,
        Change(
            seq=node.replica.seq + 1,
            epoch=node.epoch,
            origin=node.me.id,
            ops=(Join(member),),
        ),
    )


def _welcome(node: Node, msg: Hello) -> Welcome:
    """Our answer to *msg*: the changes after its resume point when we hold
    them, else a snapshot."""
    changes = None
    if msg.session_id == node.replica.session_id:
        changes = node.replica.changes_after(msg.resume_seq, msg.resume_epoch, msg.resume_origin)
        if changes and any(isinstance(op, Restore) for c in changes for op in c.ops):
            # A restore is as big as the state: one snapshot rather than the
            # restore plus every change around it in one message.
            changes = None
    return Welcome(
        sender=node.me.id,
        epoch=node.epoch,
        session_id=node.replica.session_id,
        host_id=node.me.id,
        snapshot=snapshot(node) if changes is None else None,
        changes=tuple(changes or ()),
        resume_seq=msg.resume_seq,
        resume_epoch=msg.resume_epoch,
        resume_origin=msg.resume_origin,
    )


def welcomed(node: Node, sender: str, newcomer: bool, now: float) -> None:
    """Host: *sender* is a synced member now; its streak of messages goes
    on if it had one. A newcomer is live at once and in the agreed
    membership (a bigger one only makes majorities harder to reach), but
    not while we are isolated: it would help outvote the members we lost."""
    old = node.conns.get(sender)
    conn = node.conns[sender] = Conn(last_heard=now, synced=True, epoch=node.epoch)
    if old is not None:
        # what it holds is what it says (note_holds): a Welcome sent to
        # a candidate asking us back may never reach it
        conn.heard, conn.seq = old.heard, old.seq
    elif newcomer and node.liveness.isolated_since is None:
        conn.heard = Streak(since=now - node.config.heartbeat_interval, last=now)
        node.liveness.agreed |= {sender}
    conn.heard.hear(now, node.config)


def on_write(node: Node, msg: Write, now: float) -> None:
    conn = member_conn(node, msg, now)
    if conn is None:
        return
    if msg.epoch != node.epoch:
        node.drop("write from another epoch")
        return
    order(node, msg.sender, msg.req, msg.acked_upto, msg.ops, msg.conds)


def on_ack(node: Node, msg: Ack, now: float) -> None:
    conn = member_conn(node, msg, now)
    if conn is not None:
        note_holds(node, conn, msg.epoch, msg.seq)
        successor_holds(node, msg.sender, msg.epoch, msg.seq)


def on_heartbeat(node: Node, msg: Heartbeat, now: float) -> None:
    # A synced peer's heartbeat names the last change it holds: from the
    # successor it is an acknowledgement too, which heals a lost Ack.
    conn = member_conn(node, msg, now)
    if conn is not None:
        note_holds(node, conn, msg.epoch, msg.seq)
        successor_holds(node, msg.sender, msg.epoch, msg.seq)


def successor_holds(node: Node, sender: str, epoch: int, seq: int) -> None:
    if sender == node.successor and epoch == node.epoch and seq > node.durable:
        node.durable = min(seq, node.replica.seq)
        release_durable(node)


def on_leave(node: Node, msg: Leave, now: float) -> None:
    conn = node.conns.get(msg.sender)
    if conn is not None and msg.epoch < conn.epoch:
        # sent before we welcomed it back (held by TCP): it stays
        node.drop("stale leave")
        return
    if member_conn(node, msg, now) is None:
        return
    node.send_id(msg.sender, Gone(sender=node.me.id, epoch=node.epoch))
    remove_member(node, msg.sender, "left", now)


def member_conn(node: Node, msg: Message, now: float) -> Conn | None:
    conn = node.conns.get(msg.sender)
    if conn is None:
        node.drop(f"{type(msg).__name__} from a non-member")
        member = node.replica.member(msg.sender)
        endpoints = member.endpoints if member else node.endpoints_of(msg.sender)
        if endpoints:
            node.outbox.append(
                Send(msg.sender, endpoints, Gone(sender=node.me.id, epoch=node.epoch))
            )
        return None
    conn.last_heard = now
    conn.heard.hear(now, node.config)
    return conn


def tick(node: Node, now: float) -> None:
    """The host's timers: isolation, heartbeats, TTL expiry, silent members."""
    cfg = node.config
    check_isolation(node, now)
    if now - node.beat_at >= cfg.heartbeat_interval:
        node.beat_at = now
        beat = Heartbeat(
            sender=node.me.id,
            epoch=node.epoch,
            seq=node.replica.seq,
            backed=node.liveness.backed,
        )
        for peer_id, conn in node.conns.items():
            if conn.synced:
                node.send_id(peer_id, beat)
    if node.expiry:
        expire(node, now)
    dead = [pid for pid, c in node.conns.items() if now - c.last_heard > cfg.peer_timeout]
    if dead and not liveness.may_remove(node, dead, now):
        dead = []  # without a majority we cannot tell who is cut off: remove nobody
    for peer_id in dead:
        remove_member(node, peer_id, "timeout", now)
