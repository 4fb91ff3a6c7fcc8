"""Two hosts of one session meet (a split that heals, two that started at
once): each announces its standing, ``rank.wins`` picks one and the other
steps down, sending its peers to the winner."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..messages import Leave, Member, Redirect, Refused, Welcome
from . import follower, host
from .common import ACCESS_REFUSALS, EPOCH_CEILING, Send, remember
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
    if wins(theirs, mine):
        winner = Member(id=msg.host_id, name="", endpoints=msg.endpoints)
        step_down(node, winner, msg.epoch, now)
    elif msg.reason != "outranked":
        node.outbox.append(Send(msg.sender, msg.endpoints, announce(node, "outranked")))


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
