"""Two hosts of one session meet (a split that heals, two that started at
once): each announces its standing, ``rank.wins`` picks one and the other
steps down, sending its peers to the winner."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..messages import Hello, Leave, Member, Redirect, Refused, Welcome
from . import follower, host
from .common import ACCESS_REFUSALS, EPOCH_CEILING, Role, Send, remember
from .ids import identity_of
from .quorum import Streak, is_live
from .rank import Standing, wins

if TYPE_CHECKING:
    from .node import Node


def step_down(node: Node, winner: Member, epoch: int, now: float) -> None:
    """Another host outranks us: send our peers there and join it. Should
    it never welcome us, we host again (``failover.go_back``) above every
    epoch it may hold: its *epoch*, or ours + 1, where our Hello moves it
    (``host.on_hello``)."""
    node.gave_way_at = max(node.gave_way_at, epoch, node.epoch + 1)
    notice = Redirect(
        sender=node.me.id,
        epoch=node.epoch,
        host_id=winner.id,
        endpoints=winner.endpoints,
        reason="merge",
    )
    for peer_id in node.conns:
        node.send_id(peer_id, notice)
    host.close_host_side(node)
    node.stats["stepped_down"] += 1
    follower.follow(node, winner, now)


def on_redirect(node: Node, msg: Redirect, now: float) -> None:
    """Another host announces itself: it took over while we were cut off,
    or discovery made us meet. ``rank.wins`` decides; the loser steps
    down, the winner answers once, so that the other learns it lost."""
    if msg.host_id != msg.sender:
        node.drop("redirect to a third node, sent to a host")
        return
    if not may_meet(node, msg, now):
        return
    remember(node.rivals, msg.sender, msg.endpoints)
    mine = node.standing()
    theirs = Standing(
        host_id=msg.host_id,
        epoch=msg.epoch,
        live=max(1, msg.players),
        majority=msg.majority,
        seq=msg.seq,
        terms=msg.terms,
        backed=msg.backed,
    )
    if wins(theirs, mine) and must_challenge(mine, theirs, msg.reason):
        challenge(node, msg, now)
    elif wins(theirs, mine):
        winner = Member(id=msg.host_id, name="", endpoints=msg.endpoints)
        step_down(node, winner, msg.epoch, now)
    else:
        challenger = node.liveness.challenger
        if challenger is not None and challenger[0].id == msg.sender:
            resume(node)  # its standing of now loses
        if msg.reason != "outranked":
            node.outbox.append(Send(msg.sender, msg.endpoints, announce(node, "outranked")))


def must_challenge(mine: Standing, theirs: Standing, reason: str) -> bool:
    """Whether to ask a rival that wins for its standing of now before we
    step down. An announcement tells what its sender had when it sent it,
    and TCP may hold it for a while: a takeover notice claims the majority
    of the votes that made it host, votes that may since have come back to
    us (a voter told who hosts reports to us again, and lifts our successor
    fence: ``host.pass_fence``). While we hear a majority ourselves and the
    rival wins by rule 2b (it took over from our term and lacks our last
    change: stepping down would undo it), we step down on an answer to our
    own announcement ("outranked", or "challenge", never challenged back),
    or after host_timeout with no notice of the rival that loses; till
    then we acknowledge nothing: if it still wins, that would be undone."""
    fresh = reason in ("outranked", "challenge")
    undoes = theirs.supersedes(mine) and not theirs.holds_last_of(mine)
    return mine.majority and not fresh and undoes


def challenge(node: Node, msg: Redirect, now: float) -> None:
    """Ask the rival of *msg* for its standing of now; acknowledge nothing
    till it answers (``liveness.acks_paused``)."""
    node.stats["challenged"] += 1
    if node.liveness.challenger is None:  # its later notices do not prolong it
        node.liveness.challenged_at = now
        winner = Member(id=msg.host_id, name="", endpoints=msg.endpoints)
        node.liveness.challenger = (winner, msg.epoch)
    node.outbox.append(Send(msg.sender, msg.endpoints, announce(node, "challenge")))


def tick(node: Node, now: float) -> None:
    """The host's timers: a challenge unanswered, then ``host.tick``."""
    expire_challenge(node, now)
    if node.role is Role.HOST:  # else it stepped down
        host.tick(node, now)


def expire_challenge(node: Node, now: float) -> None:
    """No answer that we win within host_timeout: step down to the rival,
    as its claim said (one that refuses us, or died, sends us back:
    ``failover.sent_in_vain``)."""
    at, challenger = node.liveness.challenged_at, node.liveness.challenger
    if at is None or challenger is None or now - at < node.config.host_timeout:
        return
    node.liveness.challenged_at = node.liveness.challenger = None
    step_down(node, challenger[0], challenger[1], now)


def on_hello(node: Node, msg: Hello, now: float) -> None:
    """A Hello to a host. From the rival we challenged, sent since it took
    over (its epoch is the rival's or later), it is that rival's answer: it
    gave way and follows us, and sends no notice that it loses."""
    challenger = node.liveness.challenger
    host.on_hello(node, msg, now)
    welcomed = node.role is Role.HOST and msg.sender in node.conns  # (not refused, not a farewell)
    if (
        challenger is not None
        and challenger[0].id == msg.sender
        and msg.epoch >= challenger[1]
        and welcomed
    ):
        node.stats["challenge_answered_by_hello"] += 1
        resume(node)


def resume(node: Node) -> None:
    """The rival we challenged loses after all: acknowledge what waited."""
    node.liveness.challenged_at = node.liveness.challenger = None
    if node.successor is not None:
        host.ask_ack(node, node.successor)  # it was told not to acknowledge
    host.release_durable(node)  # (nothing while acks are still paused)


def announce(node: Node, reason: str) -> Redirect:
    """A host's notice that it hosts, with its standing (core/rank.py)."""
    mine = node.standing()
    return Redirect(
        sender=node.me.id,
        epoch=mine.epoch,
        host_id=node.me.id,
        endpoints=node.me.endpoints,
        reason=reason,
        players=mine.live,
        majority=mine.majority,
        seq=mine.seq,
        terms=mine.terms,
        backed=mine.backed,
    )


def on_welcome(node: Node, msg: Welcome, now: float) -> None:
    """A host welcomes a Hello we sent before we took over (held by TCP,
    or a question of ours, failover.probe_members). Tell it we are not coming,
    or it keeps us as a member it hears from (our heartbeats, as host),
    refuses to weigh our announcements (may_meet) while we refuse its
    own for the same reason, and the two hosts never settle."""
    node.drop("Welcome in role HOST")
    endpoints = node.endpoints_of(msg.sender) or node.rivals.get(msg.sender, ())
    if endpoints:
        leave = Leave(sender=node.me.id, epoch=msg.epoch)
        node.outbox.append(Send(msg.sender, endpoints, leave))


def may_meet(node: Node, msg: Redirect, now: float) -> bool:
    """Host: whether a host's announcement may be weighed against our rank.
    A member we heard from just now is ours, not the host of another half
    (that one stopped hearing us): its claim is not weighed, only answered;
    an epoch no session reaches is a lie."""
    conn = node.conns.get(msg.sender)
    if conn is not None and msg.epoch > node.epoch:
        # it hosts a later term: it took over from us, so what it sent us
        # before (held by TCP, read over a while) is no streak of ours
        conn.heard = Streak()
    if not node.admission.may_lead(msg.sender):
        node.drop("host announcement from a refused identity")
        why = node.replica.access.refusal(identity_of(msg.sender))
        if why in ACCESS_REFUSALS:
            # Say so: if it hosts the other half of our session, our
            # admin's refusal makes it send that half here (on_refused).
            refused = Refused(sender=node.me.id, epoch=node.epoch, reason=why)
            node.outbox.append(Send(msg.sender, msg.endpoints, refused))
    elif (
        conn is not None
        and now - conn.last_heard < 2 * node.config.heartbeat_interval
        # a streak, not a burst: what TCP held while our cable was out
        # (its acks, then its takeover notice) says nothing of now
        and is_live(conn.heard, now, node.liveness.woke_at, node.config)
    ):
        node.drop("host announcement from a live member")
        if msg.reason != "outranked":
            # Not weighed, but answered: a member that took over while we
            # were slow (under load) learns that we host and comes back.
            node.outbox.append(Send(msg.sender, msg.endpoints, announce(node, "outranked")))
    elif msg.epoch >= EPOCH_CEILING:
        node.drop("host announcement with an implausible epoch")
    else:
        return True
    return False


def on_refused(node: Node, msg: Refused, now: float) -> None:
    """A host we met refuses our identity. Only our admin's word counts
    (its identity is proven with a secret): it banned us while the session
    was split. Send our half to it and leave, as a banned member would."""
    endpoints = node.rivals.get(msg.sender)
    admin = node.replica.access.admin
    if identity_of(msg.sender) != admin or msg.reason not in ACCESS_REFUSALS or not endpoints:
        node.drop("refusal from a host that is not our admin's")
        return
    step_down(node, Member(id=msg.sender, name="", endpoints=endpoints), msg.epoch, now)
