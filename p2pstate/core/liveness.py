"""Liveness and isolation: who counts as live, whether we reach a majority,
when a host may remove members or a peer may take over. The pure rules are
in ``core/quorum.py``; this holds their state (``Liveness``) and applies them
to a node's members."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..messages import Hello, Member
from .common import Conn
from .quorum import Streak, has_majority, live_count, may_go_alone

if TYPE_CHECKING:
    from .node import Node


@dataclass(slots=True)
class Liveness:
    """The state of core/quorum.py's rules for one node."""

    #: the last membership a majority of its own saw (host): who votes
    agreed: frozenset[str]
    #: when we last woke from a pause (a gap in the caller's clock)
    woke_at: float = float("-inf")
    #: members that asked us to take over from our host, and when
    evidence: dict[str, Streak] = field(default_factory=dict)
    #: members that handed over to us on leaving: out of every majority
    handed: set[str] = field(default_factory=set)
    #: a member that asked us to take over holding more of the lost host's
    #: changes than we do, whom we ask to take over instead; and members
    #: ahead of us in succession that did that for us (failover.give_way)
    behind: str | None = None
    gave_way: set[str] = field(default_factory=set)
    #: since when we have lost our host (peer)
    lost_since: float | None = None
    #: since when we have reached no majority (host)
    isolated_since: float | None = None
    #: a rival host that claims to win, asked for its standing of now
    #: (host, ``merge.challenge``): when, and it with its epoch. No
    #: acknowledgement till a notice of it loses, or we step down to it
    challenged_at: float | None = None
    challenger: tuple[Member, int] | None = None
    #: the agreed membership we had when we went on alone, until we hear
    #: a majority of it again: till then our side is no majority's
    lone_from: frozenset[str] | None = None
    #: (seq, epoch, origin) of the last change of our history that its
    #: host made while it reached a majority: what it may have acknowledged
    #: on a majority's behalf (a merge keeps the side that holds the other's,
    #: core/rank.py). A node that takes over starts from the last change it
    #: holds; a host moves it on with each change made with a majority.
    backed: tuple[int, int, str] = (0, 0, "")


def live(node: Node, now: float) -> int:
    """Host: itself and the members heard within host_timeout, since we woke."""
    return live_count(
        (c.heard for c in node.conns.values()), now, node.liveness.woke_at, node.config
    )


def majority_of(
    node: Node,
    ids: frozenset[str],
    now: float,
    *,
    within: float | None = None,
    exclude: tuple[str, ...] = (),
) -> bool:
    """Host: are we and the live members among *ids* a majority of them?
    Only those vote: players who joined us while we were isolated do not
    make us a majority of the membership we lost."""
    heard = (c.heard for pid, c in node.conns.items() if pid in ids and pid not in exclude)
    live = live_count(heard, now, node.liveness.woke_at, node.config, within=within)
    return has_majority(live, len(ids | {node.me.id}))


def may_remove(node: Node, dead: list[str], now: float) -> bool:
    """Host: removing members changes the membership, so only while the
    others (not counting them) are a majority of the agreed membership;
    after isolation_timeout that is whoever we hear (host.check_isolation).
    The others must have been heard a heartbeat more recently than
    host_timeout: members cut off together fall silent a heartbeat apart,
    and the last of them must not vouch for the removal of the first."""
    cfg = node.config
    within = max(cfg.host_timeout - cfg.heartbeat_interval, cfg.heartbeat_interval)
    return majority_of(node, node.liveness.agreed, now, within=within, exclude=tuple(dead))


def acks_paused(node: Node) -> bool:
    """Host: isolated and not (yet) allowed to go on alone, or a rival's
    claim to win is being checked (``merge.must_challenge``)."""
    since = node.liveness.isolated_since
    if since is not None and not may_go_alone(since, node.clock, node.config):
        return True
    return node.liveness.challenged_at is not None


def note_evidence(node: Node, msg: Hello, now: float) -> None:
    """A member asks us to take over from the host it lost, which is ours:
    it can reach us, which counts towards a majority at once (a takeover
    waits for no second Hello: we lost that host too, see
    failover.asked_to_take_over, so a Hello held by TCP is no news against it)."""
    if node.replica.member(msg.sender) is None:
        return
    streak = node.liveness.evidence.get(msg.sender)
    if streak is None:
        streak = node.liveness.evidence[msg.sender] = Streak()
        asked = node.questions.pop(msg.sender, None)
        if asked is not None and asked <= now:
            # it asked us who hosts first (its link to the host dropped,
            # ``Node.suspect``): its streak of messages to us began there
            streak.hear(asked, node.config)
    streak.hear(now, node.config)


def note_question(node: Node, sender: str, now: float) -> None:
    """A member asks us who hosts: it may vote next (``note_evidence``).
    The first question of a run is kept; one older than host_timeout
    says nothing of now."""
    if now - node.questions.get(sender, float("-inf")) > node.config.host_timeout:
        node.questions[sender] = now


def may_take_over(node: Node, now: float) -> bool:
    """Peer next in succession: take over only if we reach a majority of the
    membership (ourselves and the members that asked us, lately), or
    after isolation_timeout without one, where allowed."""
    reach = live_count(node.liveness.evidence.values(), now, node.liveness.woke_at, node.config)
    staying = [m for m in node.replica.members if m.id not in node.liveness.handed]
    if has_majority(reach, len(staying)):
        return True
    return may_go_alone(node.liveness.lost_since, now, node.config)


def term_liveness(node: Node, gone: list[str], handoff: bool, now: float) -> None:
    """A new host's view of who is live. After a handoff, the members the
    old host served (it handed them over); after a failover, the members
    that asked us to take over: the others have peer_timeout to say hello.
    The agreed membership is the one we lost the host from (the lost host
    is in it), so a node that goes on alone stays isolated, acting as
    the lone-node rule allows."""
    ids = [m.id for m in node.replica.members if m.id not in gone and m.id != node.me.id]
    node.conns = {mid: Conn(last_heard=now) for mid in ids}
    for mid, conn in node.conns.items():
        if handoff:
            conn.heard = Streak(since=now - node.config.heartbeat_interval, last=now)
        elif mid in node.liveness.evidence:
            conn.heard = node.liveness.evidence[mid]
    if handoff:
        node.liveness.agreed = frozenset(node.conns) | {node.me.id}
    else:  # the membership we lost the host from, the host included
        members = frozenset(m.id for m in node.replica.members) | {node.me.id}
        node.liveness.agreed = members - node.liveness.handed  # unless it left on purpose
    node.liveness.isolated_since = node.liveness.challenged_at = None
    node.liveness.challenger = None
    if not majority_of(node, node.liveness.agreed, now):
        node.liveness.isolated_since = (
            node.liveness.lost_since if node.liveness.lost_since is not None else now
        )
    node.liveness.evidence.clear()
    node.liveness.handed.clear()
    node.liveness.lone_from = None
    node.liveness.lost_since = None
    node.liveness.backed = takeover_backed(node)


def note_backed(node: Node, seq: int, epoch: int, origin: str) -> None:
    """Host: a change made now counts as backed while we reach a majority
    (neither isolated nor gone on alone)."""
    if node.liveness.isolated_since is None and node.liveness.lone_from is None:
        node.liveness.backed = (seq, epoch, origin)


def takeover_backed(node: Node) -> tuple[int, int, str]:
    """The backed change a node claims as it takes over: the last its host
    told it a majority backed (``follower.told_backed``), not the last it
    holds, which may be the tail an isolated host made alone. All it holds
    when the host told it of a later change, or of a later term (we lag).
    Told nothing of this history (a snapshot since): the last it holds, a
    claim that may be too high (the rule then decides nothing, rank.py)."""
    told, r = node.liveness.backed, node.replica
    last = (r.seq, r.last_epoch, r.last_origin)
    if told[0] == 0 or (told[0] >= r.seq and told[1] >= r.last_epoch):
        return last
    return told if r.in_history(*told) else last
