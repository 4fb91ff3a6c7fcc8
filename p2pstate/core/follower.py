"""The follower side: joining a host, applying its changes in order (a gap
makes us say hello again), acknowledging them as its successor, answering
writers one hop early, sending and resending our own writes, and leaving."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..events import Expelled
from ..messages import (
    Ack,
    Change,
    ChangeMsg,
    Gone,
    Heartbeat,
    Hello,
    Member,
    Message,
    Redirect,
    Refused,
    Result,
    Welcome,
    Write,
)
from . import rollback, ttl
from .common import EPOCH_CEILING, Role, Send
from .ids import identity_of
from .ops import Cond, Op
from .replica import history_contains
from .status import Status
from .writer import Outcome

if TYPE_CHECKING:
    from .node import Node


def follow(node: Node, host: Member, now: float) -> None:
    """Start (or restart) joining *host*."""
    node.role = Role.JOINING
    node.target = host
    node.suspect_until = node.probe_at = None
    node.asked_since = now
    send_hello(node, now)


def send_hello(node: Node, now: float) -> None:
    assert node.target is not None
    node.hello_at = now
    node.send(node.target, hello(node))


def hello(node: Node, *, vote: bool = True) -> Hello:
    """Our Hello; while failing over it names the host we lost (asking
    the next in line to take over), unless not *vote* (a question only)."""
    r = node.replica
    vote = vote and node.failing_over
    return Hello(
        sender=node.me.id,
        epoch=node.epoch,
        name=node.me.name,
        endpoints=node.me.endpoints,
        profile=node.me.profile,
        session_id=r.session_id or None,
        resume_seq=r.seq,
        resume_epoch=r.last_epoch,
        resume_origin=r.last_origin,
        prev_host=r.host_id if vote else None,
        suspects=tuple(sorted(node.suspects)) if vote else (),
        joined_at=node.me.joined_at,
    )


def from_target(node: Node, msg: Message) -> bool:
    """Peers act only on their host's messages, and never on a stale epoch."""
    if node.target is None or msg.sender != node.target.id:
        node.drop(f"{type(msg).__name__} from a node that is not our host")
        return False
    if msg.epoch < node.epoch:
        node.drop("stale epoch")
        return False
    return True


def from_successor(node: Node, msg: Message) -> bool:
    """Our host's successor may answer writes it holds (answer_writer)."""
    succession = node.replica.succession()
    if msg.epoch != node.epoch or not succession or succession[0].id != msg.sender:
        node.drop(f"{type(msg).__name__} from a node that is neither our host nor its successor")
        return False
    return True


def on_change(node: Node, msg: ChangeMsg, now: float) -> None:
    if not from_target(node, msg):
        return
    node.heard, node.epoch = now, msg.epoch
    change = msg.change
    if change.seq == node.replica.seq + 1:
        node.replica.apply(change, events=node.events)
        ttl.note_ttl(node, change)
        rollback.release_own(node)
        if refused_here(node):
            return
    elif change.seq > node.replica.seq + 1:
        node.stats["gap"] += 1  # we missed changes: ask again from where we are
        follow(node, node.target or node.me, now)
        return
    if msg.backed:
        told_backed(node, (change.seq, change.epoch, change.origin))
    if msg.ack:
        ack = Send(
            msg.sender,
            node.endpoints_of(msg.sender),
            Ack(sender=node.me.id, epoch=node.epoch, seq=node.replica.seq),
        )
        # Acks are cumulative: one for all that came at once, where the
        # first went (the writers' Results queued between them stay put).
        outbox, slot = node.outbox, node.ack_slot
        if 0 <= slot < len(outbox) and type(outbox[slot].msg) is Ack and outbox[slot].to == ack.to:
            outbox[slot] = ack
        else:
            node.ack_slot = len(outbox)
            outbox.append(ack)
        answer_writer(node, change)


def answer_writer(node: Node, change: Change) -> None:
    """As the host's successor we now hold *change*, so its write is
    acknowledged (guarantee 2): tell the writer ourselves, one hop before
    the host could (it hears our Ack first). The host then does not, unless
    the writer once resent a write this answer should have settled (our
    link to it is down: ``host.order`` notes it); a writer whose answer we
    never send (we died first) resends, and the host answers from its
    exactly-once table."""
    writer = change.writer
    if not writer or writer == change.origin:
        return  # not a write, or the host's own: the host answers itself
    outcome = Outcome(req=change.req, status=change.status, detail=change.detail, seq=change.seq)
    if writer == node.me.id:
        rollback.deliver(node, node.writer.result(outcome, node.replica.seq))
        return
    member = node.replica.member(writer)
    if member is not None:
        result = Result(
            sender=node.me.id,
            epoch=node.epoch,
            req=change.req,
            status=change.status,
            detail=change.detail,
            seq=change.seq,
        )
        node.send(member, result)


def on_result(node: Node, msg: Result, now: float) -> None:
    if node.target is not None and msg.sender == node.target.id:
        if not from_target(node, msg):
            return
        node.heard = now
    elif not from_successor(node, msg):
        return
    outcome = Outcome(req=msg.req, status=msg.status, detail=msg.detail, seq=msg.seq)
    rollback.deliver(node, node.writer.result(outcome, node.replica.seq))


def on_heartbeat(node: Node, msg: Heartbeat, now: float) -> None:
    if not from_target(node, msg):
        return
    node.heard, node.epoch = now, msg.epoch
    told_backed(node, msg.backed)
    if msg.seq > node.replica.seq:
        node.stats["gap"] += 1
        follow(node, node.target or node.me, now)


def told_backed(node: Node, backed: tuple[int, int, str]) -> None:
    """Our host's last change made with a majority (core/rank.py rule 3):
    kept, to claim if we take over (``liveness.takeover_backed``). It only
    grows along one history; one our history lacks (another host's, from
    before a snapshot) gives way to any."""
    mine = node.liveness.backed
    if backed[0] >= mine[0] or not node.replica.in_history(*mine):
        node.liveness.backed = backed


def on_redirect(node: Node, msg: Redirect, now: float) -> None:
    if msg.reason == "candidate":
        # The next in succession is alive and waits for a majority to ask
        # it: keep asking it (it takes over once enough do).
        target = node.target
        if node.role is Role.JOINING and target and msg.sender == target.id == msg.host_id:
            node.asked_since = now
            if node.fast_vote:
                # our first vote came a little soon after our question to
                # make a streak there: the next one after half a heartbeat
                node.fast_vote = False
                soon = now + node.config.heartbeat_interval / 2 - node.config.hello_retry
                node.hello_at = min(node.hello_at, soon)
        return
    if msg.reason in ("host", "outranked", "challenge"):
        # one host to another (discovery's view of who hosts may be stale):
        # a peer follows its own host, which settles with the other
        node.drop("host announcement sent to a peer")
        return
    if not (node.admission.may_lead(msg.sender) and node.admission.may_lead(msg.host_id)):
        node.drop("redirect from or to a refused identity")
        return
    if msg.epoch >= EPOCH_CEILING:
        node.drop("redirect with an implausible epoch")
        return
    from_host = node.target is not None and msg.sender == node.target.id
    if not (from_host and msg.epoch >= node.epoch) and msg.epoch <= node.epoch:
        node.drop("redirect from a lower epoch")
        return
    if (
        not from_host
        and msg.reason != "handoff"  # our host left on purpose and chose it
        and node.role is Role.PEER
        and now - node.heard <= node.config.host_timeout
        and now >= node.liveness.woke_at + node.config.heartbeat_interval
    ):
        # Our host is alive: another node's takeover is stale news (held
        # by TCP) or a minority's; our host settles with it if they meet.
        node.drop("takeover notice while our host is alive")
        return
    if msg.host_id == node.me.id:
        return
    if not from_host and undoes_ours(node, msg):
        node.drop("takeover notice from a minority host that lacks our changes")
        return
    if msg.reason in ("takeover", "failover", "handoff") and node.replica.host_id:
        node.failing_over = True
        node.suspects.add(node.replica.host_id)
    follow(node, Member(id=msg.host_id, name="", endpoints=msg.endpoints), now)


def undoes_ours(node: Node, msg: Redirect) -> bool:
    """A host announces itself that reaches no majority and whose history
    lacks our last change: the host that stepped down and went back when
    the one it gave way to blipped (``failover.go_back``), or one that went
    on alone. Following it would undo what we hold (writes acknowledged
    under the host we lost among them), and the majority's side, back a
    moment later, would restore them: a rollback reported in vain. Our own
    failover finds the majority's host instead; discovery merges the two."""
    r = node.replica
    if msg.host_id != msg.sender or msg.majority or not node.ready or r.seq == 0:
        return False
    return not history_contains(msg.terms, msg.seq, r.seq, r.last_epoch, r.last_origin)


def on_welcome(node: Node, msg: Welcome, now: float) -> None:
    """Our host answers the probe of ``Node.suspect`` or of its silence
    (``failover.probe_silent_host``): it is alive, and the reset or the
    silence was a blip. Its changes come on the stream as always. Or the
    member we asked who hosts answers that it does, at a later epoch
    (our host handed over to it and closed before its notice came):
    we join it, as its notice would have had us do."""
    target = node.target
    if target is None or (node.suspect_until is None and node.probe_at is None):
        node.drop("welcome while a peer")
        return
    member = node.replica.member(msg.sender)
    if msg.sender != target.id:
        if member is None or msg.host_id != msg.sender or msg.epoch <= node.epoch:
            node.drop("welcome while a peer")
        elif node.admission.may_lead(msg.sender):
            node.stats["suspicion_answered"] += 1
            follow(node, member, now)
        return
    node.stats["suspicion_cleared" if node.suspect_until is not None else "probe_answered"] += 1
    node.suspect_until = node.probe_at = None
    node.heard = now


def on_gone(node: Node, msg: Gone, now: float) -> None:
    if from_target(node, msg):
        follow(node, node.target or node.me, now)  # we were dropped: join again


def on_refused(node: Node, msg: Refused, now: float) -> None:
    """A member learns of its own ban from the change that holds it, which
    its host sent first; a Refused it did not see coming (a forged one,
    or one that overtook a change we missed) only makes it ask again: a
    host that means it refuses that hello too."""
    if from_target(node, msg):
        node.stats["refused_as_member"] += 1
        follow(node, node.target or node.me, now)


def refused_here(node: Node) -> bool:
    """Peer: expel ourselves if the state we now hold refuses our identity
    (a ban reached us before, or instead of, the host's Refused)."""
    mine = identity_of(node.me.id)
    if node.replica.access.may_read(mine):
        return False
    expel(node, node.replica.access.refusal(mine))
    return True


def expel(node: Node, reason: str) -> None:
    """We may no longer be in this session: stop, fail our writes still
    waiting, tell the user. We never take over after this."""
    node.refused = reason
    if node.role is not Role.LEAVING:
        node.role = Role.CLOSED
    node.target, node.failing_over = None, False
    detail = {"reason": reason}
    failed = [
        Outcome(req=r.req, status=Status.DENIED, detail=detail, seq=0)
        for r in node.writer.unacked()
    ]
    node.writer.pending.clear()
    node.writer.held.clear()
    node.write_keys.clear()
    node.outcomes.extend(failed)
    node.stats[f"expelled_{reason}"] += 1
    node.events.append(Expelled(reason=reason))


def on_leaving_gone(node: Node, msg: Gone, now: float) -> None:
    node.role = Role.CLOSED


def on_leaving_redirect(node: Node, msg: Redirect, now: float) -> None:
    # The successor confirms it took over: our handoff is complete.
    if msg.epoch > node.epoch and node.admission.may_lead(msg.sender):
        node.role = Role.CLOSED


def resend_unanswered(node: Node, now: float) -> None:
    """A write or its result can be lost (a link that drops and comes back
    within the timeouts): resend every request still unanswered, in order,
    once the first of them has waited ``write_retry`` since it was sent and
    since the one before it was answered. The host's dedupe table makes it
    safe. The host answers a writer's requests in order, so a long pipeline
    that is being answered is not lost: timing every request from when it
    was sent resent thousands of queued writes every ``write_retry``."""
    for req in [r for r in node.sent_at if r not in node.writer.pending]:
        del node.sent_at[req]
    waiting = [r for r in node.writer.unacked() if r.req not in node.writer.held]
    if not waiting:
        return
    head = waiting[0].req
    if node.retry_head[0] != head:
        node.retry_head = (head, now)  # the request before it was answered
    since = max(node.sent_at.get(head, now), node.retry_head[1])
    if now - since < node.config.write_retry:
        return
    node.stats["writes_resent"] += 1
    for r in waiting:
        send_write(node, r.req, r.ops, r.conds, now)


def send_write(
    node: Node,
    req: int,
    ops: tuple[Op, ...],
    conds: tuple[Cond, ...],
    now: float,
) -> None:
    assert node.target is not None
    node.sent_at[req] = now
    msg = Write(
        sender=node.me.id,
        epoch=node.epoch,
        req=req,
        acked_upto=node.writer.acked_upto,
        ops=ops,
        conds=conds,
    )
    node.send(node.target, msg)
