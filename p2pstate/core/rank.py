"""The one rule that decides which of two hosts of a session (and so which
of two histories) wins when they meet: after a split heals, after a pause,
or when two copies started hosting at once.

In order:

1. A history that holds the other's last change *extends* it: it wins, as
   stepping down then undoes nothing.
2. Otherwise both sides hold changes the other lacks. If they are one
   session (their histories start with the same term), the side that holds
   a majority of its last agreed membership *now* wins: only it can have
   acknowledged writes under the session's rules (a host without a majority
   stops acknowledging, see :mod:`.quorum`). Two sessions (a copy that found
   no host and started its own, maybe while the session's last player waited
   out ``isolation_timeout``) have no common membership to count: the longer
   history wins, so the game's state is not replaced by a newcomer's.
   Both sides may claim a majority: a member whose link to its host
   delivers while the host's link to it holds counts as live to that host
   for up to ``host_timeout`` after it voted for a successor. Then the
   side that took over from the other's last term (its history holds
   that term and a later one after it) wins: its term began with a
   majority's votes, which is news of now, while the other's count is
   the voters' messages of before (2b).
3. Both sides of one session without a majority now (each went on alone,
   or lost its majority later): the side whose history holds the other's
   *backed* change wins if the other's does not hold its own. A side's
   backed change is the last change of its history that a host made while
   it reached a majority: whatever it acknowledged for a majority is at or
   before it; after it come only changes made alone or unacknowledged.
   A host tells its peers its backed change with its changes and
   heartbeats, and a node that takes over claims the one its host told
   it (``liveness.takeover_backed``), not the last change it holds: that
   may be a tail its host made alone, and a claim too high protects less
   (the other side may not hold it, neither holds the other's, and the
   rest of the order decides: a successor that took over an isolated
   host's lone tail so undid the majority's writes of a later term).
   Keeping the side that holds the other's backed change undoes only
   what the other made after its own, which no majority acknowledged;
   the other way round would undo the keeper's backed change. A node told
   nothing of its history yet (a snapshot since) claims the last change
   it holds, as before. (Why not the history that
   holds more of the term both share, or Raft's "later last term, then
   longer"? Terms begun alone get new epochs too, and a history says not
   whether its terms had a majority: a peer cut off long before that hosts
   alone from an old seq wins the first (red seed 700194: it undid the
   majority's writes by its live players), a majority's successor that
   lost its majority later loses the second to the old host's lone tail.)
   When neither or both hold the other's, the rule goes on.
4. Then more live players (heard within ``host_timeout``, now), then the
   higher epoch, then the longer history, then the lower node id:
   deterministic, the same on both sides.

Each host counts its own live players itself, by the verified rule of
:mod:`.quorum` (heard within ``host_timeout``, after it last woke from a
pause), and both sides compare the same two standings by the same total
order: that symmetry is what makes them settle. (Capping a rival's claim by
what *we* see was tried, and made two hosts with crossed membership lists
each think it won, for ever: PARTITION seed 200109.) Who may take part at
all is decided before this rule: a host never meets a rival that its access
state refuses, nor a member it hears as live (node.py, ``_may_meet``).

A first join and the lobby see only a host's mDNS record (players, epoch,
id), not its history: :func:`host_rank` is the part of this order that a
record shows (rule 4 without the history), so they pick the host that
would win a merge whenever histories do not decide it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .replica import history_contains

__all__ = ["Rank", "Standing", "host_rank", "wins"]

Terms = tuple[tuple[int, int, str], ...]


@dataclass(frozen=True, slots=True)
class Standing:
    """What a host knows of itself, or what a rival claims of itself."""

    host_id: str
    epoch: int
    #: Players heard within host_timeout, the host included.
    live: int
    #: Whether ``live`` is a majority of the host's last agreed membership.
    majority: bool
    #: Its last change and the terms (first seq, epoch, origin) of its history.
    seq: int
    terms: Terms
    #: (seq, epoch, origin) of its last change made with a majority (rule 3).
    backed: tuple[int, int, str] = (0, 0, "")

    def holds_last_of(self, other: Standing) -> bool:
        """Whether this history contains the other's last change."""
        if other.seq == 0:
            return True
        if not other.terms:
            return False
        _, epoch, origin = other.terms[-1]
        return history_contains(self.terms, self.seq, other.seq, epoch, origin)

    def supersedes(self, other: Standing) -> bool:
        """Whether this history took over from the other's last term: it
        holds that term, and a later one of its own after it (rule 2b)."""
        if not other.terms:
            return False
        last = other.terms[-1]
        return last in self.terms and self.terms[-1] != last

    def holds_backed_of(self, other: Standing) -> bool:
        """Whether this history contains the other's last backed change."""
        seq, epoch, origin = other.backed
        return history_contains(self.terms, self.seq, seq, epoch, origin)


def wins(a: Standing, b: Standing) -> bool:
    """Whether host *a* wins over host *b* (see the module's rule)."""
    a_extends, b_extends = a.holds_last_of(b), b.holds_last_of(a)
    if a_extends != b_extends:
        return a_extends
    one_session = bool(a.terms) and bool(b.terms) and a.terms[0] == b.terms[0]
    if one_session and a.majority != b.majority:
        return a.majority
    if one_session and a.majority and a.supersedes(b) != b.supersedes(a):
        return a.supersedes(b)  # rule 2b: both claim a majority
    if not one_session and a.seq != b.seq:
        return a.seq > b.seq
    if one_session and not a.majority:  # neither has one: rule 3
        a_holds, b_holds = a.holds_backed_of(b), b.holds_backed_of(a)
        if a_holds != b_holds:
            return a_holds
    return _key(a) > _key(b)


def _key(s: Standing) -> tuple[int, int, int, tuple[int, ...]]:
    return (s.live, s.epoch, s.seq, _lower_first(s.host_id))


#: (players, epoch, the node id as a key under which a lower id is larger)
Rank = tuple[int, int, tuple[int, ...]]


def host_rank(players: int, epoch: int, node_id: str) -> Rank:
    """A host as its advert shows it: compare two with ``>``; the larger is
    the one a merge keeps when histories do not decide (more players, then
    the higher epoch, then the lower node id)."""
    return (players, epoch, _lower_first(node_id))


def _lower_first(node_id: str) -> tuple[int, ...]:
    # Each byte negated reverses the order; the closing 1 sits above every
    # negated byte, so an id ranks above the longer ids it is a prefix of,
    # as "a" < "ab" says.
    return (*(-b for b in node_id.encode("utf-8", "surrogatepass")), 1)
