"""Failover: a peer that loses its host walks the succession; the next in
line takes over once a majority asks it (``liveness.may_take_over``) or its
host hands over; a node sent to a host that never welcomes it goes back."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..messages import Change, Handoff, Heartbeat, Hello, Member, Redirect
from . import follower, host, liveness, merge
from .common import Role, Send, remember
from .ids import identity_of
from .ops import Join, Op, Term
from .ops import Leave as LeaveOp

if TYPE_CHECKING:
    from .node import Node


def take_over(node: Node, reason: str, now: float) -> None:
    """Become host at a new epoch, after the host died or handed over."""
    old = node.replica.host_id
    if old == node.me.id:
        # Our own history: we hosted it, stepped down to another host and
        # lost that one before it welcomed us. There is no old host to drop.
        old = ""
    old_endpoints = node.endpoints_of(old) if old else ()
    gone = [
        m.id
        for m in node.replica.members
        if m.id != node.me.id and (m.id == old or m.id in node.suspects)
    ]
    node.role, node.ready = Role.HOST, True
    node.epoch = max(node.epoch, node.replica.epoch, node.gave_way_at) + 1
    node.target, node.failing_over = None, False
    node.suspect_until = None
    # A result held for a change we have not applied names a seq of the
    # lost host's history, not of ours: those requests are ordered again.
    node.writer.held.clear()
    liveness.term_liveness(node, gone, reason == "handoff", now)
    node.successor, node.durable, node.awaiting = None, 0, {}
    node.fence = None
    node.awaiting_seqs = []
    leave_reason = "left" if reason == "handoff" else "failed"
    ops: list[Op] = [Term(node.epoch, node.me.id, old or None, reason)]
    ops.extend(LeaveOp(mid, leave_reason) for mid in gone)
    if node.replica.member(node.me.id) is None:
        ops.append(Join(node.me_at(node.replica.seq + 1)))
    host.apply(
        node,
        Change(
            seq=node.replica.seq + 1,
            epoch=node.epoch,
            origin=node.me.id,
            ops=tuple(ops),
        ),
    )
    # Tell everyone at once rather than let each find out by timeout; the old
    # host too, which steps down if it is in fact alive.
    notice = merge.announce(node, reason)
    for m in node.replica.members:
        if m.id != node.me.id:
            node.send(m, notice)
    if old and old != node.me.id and node.replica.member(old) is None and old_endpoints:
        node.outbox.append(Send(old, old_endpoints, notice))
    node.suspects.clear()
    node.probed.clear()
    node.liveness.behind, node.liveness.gave_way = None, set()
    node.beat_at = now
    for request in node.writer.unacked():
        host.order(
            node, node.me.id, request.req, node.writer.acked_upto, request.ops, request.conds
        )
    host.release_durable(node)


def sent_in_vain(node: Node, lost: str, now: float) -> bool:
    """A merge sent us to *lost* (our own step-down, or our host's Redirect)
    and it never welcomed us: its rank was a claim. Go back to the host we
    had (host again, if that is us) rather than along the succession, so a
    host that lies about its players and then stays silent changes no host."""
    if node.role is not Role.JOINING or node.failing_over or not node.ready:
        return False
    if lost == node.replica.host_id:
        return False
    node.stats["merge_target_silent"] += 1
    go_back(node, now)
    return True


def go_back(node: Node, now: float) -> None:
    """Return to the host our replica names: host again if that is us."""
    if node.replica.host_id == node.me.id:
        take_over(node, "merge_refused", now)
        return
    leader = node.replica.member(node.replica.host_id)
    if leader is not None and node.admission.may_lead(leader.id):
        follower.follow(node, leader, now)
    else:
        host_lost(node, node.replica.host_id, now)


def refuse_state(node: Node, sender: str, why: str, now: float) -> None:
    """A Welcome whose access state we may not take on (takeover_refusal):
    drop it, never follow that identity again, and go back: host again if
    we stepped down to it, else to our host, else along the succession."""
    node.refusal(f"refused_state_{why}", sender)
    remember(node.admission.foreign, identity_of(sender), ())
    go_back(node, now)


def probe_members(node: Node) -> None:
    """We are next in succession but no majority asks us: the others may
    have gone on without us (the host handed over to another while our
    cable was out, and removed us). Ask every other member, as we would
    a host: a peer answers with its host, which we follow if
    newer; a member that hosts welcomes us (``joining.on_welcome``). It is
    a question, not a vote: it names no lost host, so no candidate takes
    over on it. Only in "majority" durability: in the default one the
    isolation timeout ends the wait, and discovery merges the hosts."""
    for m in node.replica.members:
        # suspects too: we may have suspected them while our cable was out
        if m.id == node.me.id or not node.admission.may_lead(m.id):
            continue
        if node.target is not None and m.id == node.target.id:
            continue
        node.probed.add(m.id)
        node.send(m, follower.hello(node, vote=False))


def probe_found(node: Node, host_id: str, endpoints: tuple[str, ...], session_id: str) -> None:
    """Discovery shows a host of our session while we wait for a majority
    ("majority" durability, where no wait ends by itself): the session
    may have gone on under a host our membership list lacks (it rejoined
    while our cable was out, then took over). Ask it as probe_members asks
    a member; its Welcome is taken only if its history holds our last
    change (``joining.on_welcome``). Another session's host is not asked:
    it would take us for a newcomer."""
    if node.config.durability != "majority" or not (node.ready and node.failing_over):
        return
    if session_id != node.replica.session_id or host_id == node.me.id:
        return
    if not node.admission.may_lead(host_id) or node.replica.member(host_id) is not None:
        return  # a member: probe_members asks it already
    node.probed.add(host_id)
    node.outbox.append(Send(host_id, endpoints, follower.hello(node, vote=False)))


def host_lost(node: Node, lost: str, now: float) -> None:
    """The host (or the candidate we were asking) is silent: try the next
    member in succession. If that is us, take over when a majority can
    reach us (``liveness.may_take_over``); else keep asking the host we lost (the
    one cut off may be us) and count the members who ask us."""
    if sent_in_vain(node, lost, now):
        return
    if lost == node.liveness.behind:
        node.liveness.behind = None  # the member we gave way to is silent too
    if lost not in node.liveness.gave_way:  # it asked us to take over: alive
        node.suspects.add(lost)
    node.failing_over = True
    if node.liveness.lost_since is None:
        node.liveness.lost_since = now
    node.stats["host_lost"] += 1
    for m in node.replica.succession():
        if m.id in node.suspects or m.id in node.liveness.gave_way:
            continue
        if m.id != node.me.id:
            follower.follow(node, m, now)
            return
        break
    if liveness.may_take_over(node, now):
        take_over(node, "failover", now)
        return
    node.stats["takeover_waits"] += 1
    leader = node.replica.member(node.replica.host_id)
    if leader is None or leader.id == node.me.id:
        leader = node.target
    if leader is not None:
        follower.follow(node, leader, now)
    if node.config.durability == "majority":
        # never going alone, we must find the session's host ourselves
        probe_members(node)


def asked_to_take_over(node: Node, msg: Hello, now: float) -> bool:
    """Someone asks us to host: true when the host they lost is ours and
    every member ahead of us in succession is lost too (we then take over
    once a majority asks, ``liveness.may_take_over``)."""
    if not votes_against_our_host(node, msg, now):
        return False
    if gives_way_to_us(node, msg):
        # Kept across Hellos: two members ahead of us may give way to us,
        # each in its own Hello; judged one at a time, neither Hello makes
        # us next and both sides wait until they go alone at one epoch.
        node.liveness.gave_way.add(msg.sender)
    lost = node.suspects | set(msg.suspects) | {msg.prev_host} | node.liveness.gave_way
    for m in node.replica.succession():
        if m.id == node.me.id:
            return True
        if m.id not in lost:
            return False
    return False


def votes_against_our_host(node: Node, msg: Hello, now: float) -> bool:
    """A Hello is a vote against the host we follow (or followed), and we
    have not already given way to another member."""
    if msg.prev_host is None or msg.prev_host != node.replica.host_id:
        return False
    target = node.target
    rejoining = target is not None and target.id == node.replica.host_id
    if node.role is Role.JOINING and not node.failing_over and not rejoining:
        # We were sent to a new host (a merge): a Hello about the host we
        # had before is stale news, held by TCP during a split. Not so when
        # we ask our own host again (a gap in its stream: what TCP held
        # while our cable was out), the others voting as it died meanwhile.
        return False
    if msg.epoch not in (node.replica.epoch, node.epoch):
        return False
    if (
        node.role is Role.PEER
        and now - node.heard < 2 * node.config.heartbeat_interval
        and node.suspect_until is None  # its link to us dropped too: maybe not
    ):
        return False  # our host is alive: their link is the problem
    return node.liveness.behind is None  # else we asked one that holds more


def on_hello(node: Node, msg: Hello, now: float) -> None:
    if not node.admission.may_lead(msg.sender):
        node.drop("hello from a refused identity")  # it may not make us host either
        return
    if suspect_ahead_is_back(node, msg.sender, now):
        return
    if msg.prev_host is None and node.replica.member(msg.sender) is not None:
        liveness.note_question(node, msg.sender, now)
    if node.liveness.behind is not None and msg.prev_host is not None:
        point_to_behind(node, msg)
        return
    member = node.replica.member(msg.sender) is not None
    if node.ready and member and holds_more(node, msg) and votes_against_our_host(node, msg, now):
        # even when a member we still list (its leave is among the changes
        # we lack) stands between us and the lead: the voter knows better
        give_way(node, msg.sender, now)
        return
    if node.ready and asked_to_take_over(node, msg, now):
        # Only a member's word moves us (its suspects, its vote); one we
        # do not know yet (its join was lost with the host) is told to
        # keep asking us, or it would walk on and take over beside us.
        if member:
            liveness.note_evidence(node, msg, now)
            node.suspects |= set(msg.suspects) | {msg.prev_host or ""}
            # it suspected us while its cable was out: we are the one asked
            node.suspects -= {"", node.me.id}
        if not member or not liveness.may_take_over(node, now):
            # not (yet) a majority: tell it we are alive and gathering, so
            # that it goes on asking us rather than the next in line
            point_to(node, msg, node.me, "candidate")
            return
        take_over(node, "failover", now)
        host.on_hello(node, msg, now)
        return
    target = node.target
    if node.role is Role.PEER and target is not None:
        point_to(node, msg, target, "not host")


def point_to(node: Node, msg: Hello, member: Member, reason: str) -> None:
    """Answer *msg*'s sender with a Redirect naming *member* (and why)."""
    notice = Redirect(
        sender=node.me.id,
        epoch=node.epoch,
        host_id=member.id,
        endpoints=member.endpoints,
        reason=reason,
    )
    node.outbox.append(Send(msg.sender, msg.endpoints, notice))


def suspect_host(node: Node, peer_id: str, now: float) -> None:
    """A peer's transport saw its link to *peer_id* reset (``Node.suspect``):
    if that is our host, probe it and ask our successor the same question;
    ``tick_peer`` takes the host for lost if it has not answered in time."""
    target = node.target
    if node.role is not Role.PEER or target is None or peer_id != target.id:
        node.stats["suspect_ignored"] += 1
        return
    if node.suspect_until is not None:
        return  # already confirming
    node.stats["suspected"] += 1
    node.suspect_until = now + node.config.suspect_after
    question = follower.hello(node, vote=False)
    node.send(target, question)
    for m in node.replica.succession():
        if m.id != node.me.id:
            node.send(m, question)
        break


def disown(node: Node, lost: Member) -> None:
    """A suspicion confirmed: we vote against our host after a short
    window, while it may be alive and still count us live (its answer
    was late). Tell it too, so that it stops counting on us at once
    (``host.on_hello``) and a majority is never counted on both sides."""
    node.stats["suspicion_confirmed"] += 1
    target = node.target
    if node.failing_over and target is not None and target.id != lost.id:
        node.send(lost, follower.hello(node))
        node.fast_vote = True


def holds_more(node: Node, msg: Hello) -> bool:
    """A member asking us to take over holds changes of the lost host's
    term that we lack: acknowledged writes among them, maybe (their
    writers applied them; the successor that acknowledged them is gone).
    We were not that successor (it holds every acknowledged change)."""
    r = node.replica
    succession = r.succession()
    if succession and succession[0].id == node.me.id:
        return False
    same_term = (msg.resume_epoch, msg.resume_origin) == (r.last_epoch, r.last_origin)
    return same_term and msg.resume_seq > r.seq


def gives_way_to_us(node: Node, msg: Hello) -> bool:
    """A member ahead of us in succession asks us to take over (it holds
    less of the lost host's term than we do: ``holds_more`` from its side)."""
    r = node.replica
    if r.member(msg.sender) is None or msg.sender == node.me.id:
        return False
    same_term = (msg.resume_epoch, msg.resume_origin) == (r.last_epoch, r.last_origin)
    if not same_term or msg.resume_seq >= r.seq:
        return False
    for m in r.succession():
        if m.id == node.me.id:
            return False
        if m.id == msg.sender:
            return True
    return False


def give_way(node: Node, ahead: str, now: float) -> None:
    """We are next in succession, but member *ahead* holds more of the
    lost host's changes (Raft's rule: the most up-to-date takes over).
    Ask it to take over (our Hellos are votes), and send to it the
    members who ask us; taking over ourselves would undo what it holds."""
    member = node.replica.member(ahead)
    assert member is not None
    node.stats["gave_way"] += 1
    node.liveness.behind = ahead
    if not node.failing_over:
        # we were asking our host again (a gap): it is lost, as the voter
        # says, and our Hellos must be votes or *ahead* waits for ever
        node.failing_over = True
        node.suspects.add(node.replica.host_id)
        node.liveness.lost_since = now
    follower.follow(node, member, now)


def point_to_behind(node: Node, msg: Hello) -> None:
    """A vote reached us after we gave way: send it to who we asked."""
    member = node.replica.member(node.liveness.behind or "")
    if member is None or msg.sender == member.id:
        return
    point_to(node, msg, member, "not host")


def suspect_ahead_is_back(node: Node, sender: str, now: float) -> bool:
    """While failing over, a member ahead of us in succession that we
    suspected (its cable was out when we asked it) speaks to us: it is
    the candidate, not us. Ask it (our Hellos are votes), or two
    candidates that suspect each other wait for each other's votes for
    ever (a held Handoff made one of them next; "majority" durability)."""
    if not (node.failing_over and node.ready) or sender not in node.suspects:
        return False
    for m in node.replica.succession():
        if m.id == node.me.id:
            return False
        if m.id == sender:
            node.suspects.discard(sender)
            follower.follow(node, m, now)
            return True
    return False


def on_handoff(node: Node, msg: Handoff, now: float) -> None:
    if follower.from_target(node, msg) and node.admission.may_lead(msg.sender):
        take_over(node, "handoff", now)


def on_joining_handoff(node: Node, msg: Handoff, now: float) -> None:
    """Our host handed over to us while we were asking it again (our
    cable was out: TCP held its Handoff, and the others may have gone on
    without us). It left on purpose and votes no more: the majority we
    need is of the members that stay (``liveness.handed``); we take over as a
    failover, on their votes, or follow whoever they chose."""
    r = node.replica
    if not (node.ready and node.failing_over) or msg.sender != r.host_id:
        node.drop("handoff from a node that is not our host")
        return
    if msg.epoch != r.epoch or not node.admission.may_lead(msg.sender):
        node.drop("stale handoff")
        return
    node.liveness.handed.add(msg.sender)
    host_lost(node, msg.sender, now)


def tick_peer(node: Node, target: Member, now: float) -> None:
    """A peer's timers: a silent host is probed, then lost; heartbeats;
    unanswered writes."""
    cfg = node.config
    suspected = node.suspect_until is not None and now >= node.suspect_until
    silent = now - node.heard
    if suspected or silent > cfg.host_timeout + cfg.suspect_after:
        host_lost(node, target.id, now)
        if suspected:
            disown(node, target)
        return
    if silent > cfg.host_timeout / 2:
        probe_silent_host(node, target, now)
    else:
        node.probe_at = None
    if now - node.beat_at >= cfg.heartbeat_interval:
        node.beat_at = now
        node.send(
            target,
            Heartbeat(sender=node.me.id, epoch=node.epoch, seq=node.replica.seq),
        )
    follower.resend_unanswered(node, now)


def probe_silent_host(node: Node, target: Member, now: float) -> None:
    """Our host has been silent for half of host_timeout: ask it (a Hello
    that is no vote, which a live host answers with a Welcome) over a fresh
    connection, again every ``suspect_after`` while it stays silent. After
    a blip of a link, TCP's retransmissions back off and keep the old
    connection silent for over a second; a new one's SYN leaves at once, so
    a live host behind a blip answers within host_timeout, and its answer
    (``follower.on_welcome``) or anything else from it counts as heard. A
    frozen or unreachable host answers nothing, and is lost once silent for
    host_timeout and ``suspect_after`` more (``tick_peer``). The first probe
    also asks our successor, as ``suspect_host`` does: the streak that our
    vote continues there, should the host be lost, starts now."""
    cfg = node.config
    if node.probe_at is not None and now - node.probe_at < cfg.suspect_after:
        return
    first = node.probe_at is None
    node.probe_at = now
    node.stats["silence_probes"] += 1
    question = follower.hello(node, vote=False)
    endpoints = target.endpoints or node.endpoints_of(target.id)
    node.outbox.append(Send(target.id, endpoints, question, fresh=True))
    if not first or node.suspect_until is not None:
        return  # asked already (here, or by ``suspect_host``)
    for m in node.replica.succession():
        if m.id != node.me.id:
            node.send(m, question)
        break


def tick_joining(node: Node, target: Member, now: float) -> None:
    """A joining node's timers: hello again, or give up on a silent host."""
    cfg = node.config
    # A node that holds a session gives up on a silent host and moves
    # along the succession; a first join is the adapter's to time out.
    if (node.failing_over or node.ready) and now - node.asked_since > cfg.host_timeout:
        host_lost(node, target.id, now)
    elif now - node.hello_at >= cfg.hello_retry:
        follower.send_hello(node, now)
