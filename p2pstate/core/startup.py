"""The start-up election: how a copy that is starting finds its session, or
creates it, without two copies started together making two sessions.

A sans-I/O state machine. The adapter feeds it what discovery saw (adverts
added and removed), the Hellos that reach this copy while it starts, a failed
handshake and the time; it answers with at most one :class:`Decision` per
input (join that node, host now and welcome these Hellos, or fail) and says
when it next needs a :meth:`Startup.tick`. It never reads a clock.

The rules, all here:

* **Whom to join.** Of the records not tried yet, the host that would win a
  merge (:func:`.rank.host_rank`); with no host, the lowest candidate id below
  ours. A copy with nobody lower hosts. A candidate we gave up on is tried
  again once it hosts.
* **Candidates wait for their rivals.** Seeing candidates is not mutual under
  load: a copy that would host waits, once and at most
  :meth:`Startup.rival_wait` (``max(1 s, 2 discovery windows)``, less when
  the caller's deadline is near), for every candidate it saw to choose it
  (its Hello) or to host, so that a copy that missed our record does not
  host a second session whose merge would roll back acknowledged writes.
* **Rivals that did not answer.** When that wait runs out, we ask them,
  lowest first, each briefly (one chose a copy we cannot see, and redirects
  us there once in; a starting one learns of us), keeping the Hellos we hold.
  Then a copy that nobody chose gives a copy that may be hosting right now
  a moment (``3 x hello_retry``) before hosting. A copy that was chosen
  hosts at once, so of two whose waits run out together the chosen one
  goes first.
* **Patience with whom we chose.** A host answers at once; a candidate may
  itself wait its rival wait first, but one that went silent (killed while
  starting) must leave us time to host before the caller gives up.
* **A candidate says it is alive.** A copy that holds our Hello answers
  "candidate, keep asking me" (:func:`candidate_notice`, the notice a peer
  gathering votes sends). Whom we chose lower than us is waited for as long
  as it answers: it will host and welcome us, or join and redirect us, and
  hosting beside it would make two sessions. One that answered and then
  went silent (``3 x hello_retry``) died: we go on at once. A higher rival
  we only asked is waited for at most one rival wait more, and not at all
  when copies chose us: that breaks any cycle of copies waiting for each
  other. A lower copy's Hello (it asks us as a rival) makes it our choice
  when it is lower than whom we chose; a rival we asked that chose us
  ends our wait for it.
* **Hellos kept while starting** are welcomed once we host, only if their
  copy still asks (received within ``3 x hello_retry``), at most
  :data:`MAX_HELD_HELLOS`; joining another copy drops them (they will find
  our host).
* **Hosts we cannot talk to** (another wire format, or one of us has a secret
  and the other not, or its handshake refused ours): with nobody else to try
  we fail rather than host a rival session of the same name, after waiting
  one discovery window for other hosts to appear.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field

from ..messages import Hello, Redirect
from .rank import host_rank

__all__ = [
    "JOIN_RETRY",
    "MAX_HELD_HELLOS",
    "Advert",
    "Decision",
    "Fail",
    "Host",
    "Join",
    "Reason",
    "Startup",
    "candidate_notice",
]

#: How long a first join waits on one host before trying another or hosting.
JOIN_RETRY = 1.0
#: Hellos a candidate keeps from the copies that chose it, until it hosts.
MAX_HELD_HELLOS = 256


@dataclass(frozen=True, kw_only=True)
class Advert:
    """What discovery saw of one copy: a candidate (epoch 0) or a host."""

    node_id: str
    endpoints: tuple[str, ...]
    epoch: int
    players: int = 1
    secured: bool = False
    #: The wire format it speaks (None: older than wire versions).
    wire: int | None = None


class Reason(enum.Enum):
    """Why a host found could not be joined."""

    INCOMPATIBLE = "incompatible"  # another wire format
    SECURED = "secured"  # it has a secret, we have none
    OPEN = "open"  # we have a secret, it has none
    REJECTED = "rejected"  # its handshake refused our secret


@dataclass(frozen=True, kw_only=True)
class Join:
    """Ask node *node_id* at *endpoints* to let us in."""

    node_id: str
    endpoints: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Host:
    """Create the session now, then welcome the copies of *hellos*."""

    hellos: tuple[Hello, ...] = ()
    #: Rivals that neither chose us nor hosted before our wait ran out.
    unanswered: int = 0


@dataclass(frozen=True, kw_only=True)
class Fail:
    """Give up: the session exists but we cannot talk to its host."""

    reason: Reason
    node_id: str
    #: The wire format the host advertised (for an INCOMPATIBLE reason).
    wire: int | None = None


Decision = Join | Host | Fail


def candidate_notice(node_id: str, endpoints: tuple[str, ...]) -> Redirect:
    """What a starting copy answers a Hello it holds: "I am alive and still
    deciding, keep asking me" (the notice of a peer that gathers votes)."""
    return Redirect(
        sender=node_id, epoch=0, host_id=node_id, endpoints=endpoints, reason="candidate"
    )


@dataclass
class Startup:
    """The election of one starting copy; see the module docstring."""

    node_id: str
    secured: bool
    wire: int
    discovery_window: float
    hello_retry: float
    #: When the caller gives up starting (its timeout).
    deadline: float = float("inf")
    stats: Counter[str] = field(default_factory=Counter)
    #: True once this copy hosts, was welcomed or failed: inputs are ignored.
    done: bool = False
    _started: bool = False
    _adverts: dict[tuple[str, bool], Advert] = field(default_factory=dict)
    # Candidates seen while starting; one stays a rival after its record
    # goes (a candidate's record goes when it hosts, maybe before its host
    # record arrives).
    _rivals: set[str] = field(default_factory=set)
    # When a rival's candidate record went (see _unheard).
    _gone: dict[str, float] = field(default_factory=dict)
    # (node id, host record?): a candidate we gave up on may host later,
    # and its host record is worth trying then.
    _tried: set[tuple[str, bool]] = field(default_factory=set)
    _refused: dict[str, Fail] = field(default_factory=dict)
    _held: dict[str, tuple[Hello, float]] = field(default_factory=dict)  # sender -> (Hello, when)
    _target: str | None = None  # whom we last chose to join
    _join_at: float = 0.0
    _patience: float = JOIN_RETRY
    _others_until: float | None = None  # a join waiting for other hosts to appear
    _rivals_until: float | None = None  # a candidate waiting for its rivals
    _rivals_waited: bool = False  # the rival wait ran out once
    _target_candidate: bool = False  # whom we last chose was a candidate
    _grace_until: float | None = None  # see _in_grace
    _answered_at: float | None = None  # whom we chose last said it is starting
    _asking_rival: bool = False  # whom we chose is a higher rival, only asked
    _asked: set[str] = field(default_factory=set)  # the rivals we asked so
    _answers: list[Hello] = field(default_factory=list)  # see take_answers

    # ============================================================ inputs

    def begin(self, now: float) -> Decision | None:
        """Discovery's first window is over: decide."""
        if self.done:
            return None
        self._started = True
        return self._decide(now)

    def seen(self, advert: Advert) -> None:
        """Discovery saw *advert* (added or updated). The next tick acts on it."""
        if self.done or advert.node_id == self.node_id:
            return
        self._adverts[(advert.node_id, advert.epoch > 0)] = advert
        if advert.epoch == 0:
            self._gone.pop(advert.node_id, None)
        if advert.epoch == 0 and self.compatible(advert):
            self._rivals.add(advert.node_id)

    def gone(self, node_id: str, *, host: bool, now: float) -> None:
        """Discovery saw the host (or candidate) record of *node_id* go."""
        self._adverts.pop((node_id, host), None)
        if not host:
            self._gone.setdefault(node_id, now)

    def hello(self, msg: Hello, now: float) -> Decision | None:
        """A Hello while we start: a copy that started with us chose us."""
        if self.done:
            return None
        if msg.sender not in self._held and len(self._held) >= MAX_HELD_HELLOS:
            self.stats["dropped: Hello to a candidate"] += 1
            return None
        self._held[msg.sender] = (msg, now)
        if msg.sender < self.node_id:
            self._learn_lower(msg)
        if self._started and self._moves_us(msg, now):
            decision = self._decide(now)
            if decision is not None or msg.sender not in self._held:
                return decision  # hosting (it is welcomed) or joining (redirected)
        if self._started:  # deciding: a copy still browsing has nothing to say
            self._answers.append(msg)
        return None

    def take_answers(self) -> list[Hello]:
        """The Hellos held since last asked: answer each sender with
        :func:`candidate_notice`, so that it keeps waiting for us."""
        answers, self._answers = self._answers, []
        return answers if not self.done else []

    def answered(self, node_id: str, now: float) -> None:
        """*node_id* sent us :func:`candidate_notice`: if we chose it, it is
        alive and still deciding (see the module docstring)."""
        if self.done or node_id != self._target or not self._target_candidate:
            return
        if self._asking_rival and self._fresh_hellos(now):
            # Copies wait for us: we only tell the rival we are here (seed
            # 500782: waiting for a rival that waited too made all time out).
            return
        self._answered_at = now

    def handshake_failed(self, node_id: str, now: float) -> Decision | None:
        """The secured handshake with *node_id* failed. Only the one we are
        joining matters here (False-y None otherwise: the caller counts it)."""
        if self.done or node_id != self._target:
            return None
        self._refused[node_id] = Fail(reason=Reason.REJECTED, node_id=node_id)
        return self._decide(now)

    def joined(self) -> None:
        """The copy was welcomed: the election is over, its waits with it."""
        self._finish()

    def tick(self, now: float) -> Decision | None:
        """Timers: a wait that ran out, a host that appeared, a join unanswered."""
        if self.done or not self._started:
            return None
        if self._others_until is not None:
            if now >= self._others_until or self._choose() is not None:
                return self._decide(now)
            return None
        if self._rivals_until is not None:
            if now >= self._rivals_until or self._choose() is not None or not self._unheard(now):
                return self._decide(now)
            return None
        if self._grace_until is not None:
            if now >= self._grace_until or self._choose() is not None:
                return self._decide(now)
            return None
        if self._target is None or now < self._target_deadline():
            return None
        self.stats["join_retries"] += 1
        return self._decide(now)

    # ============================================================ views

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has something to do; None: nothing to wait for."""
        if self.done or not self._started:
            return None
        waits = [
            t for t in (self._others_until, self._rivals_until, self._grace_until) if t is not None
        ]
        if self._target is not None:
            waits.append(self._target_deadline())
        return min(waits, default=None)

    def adverts(self) -> list[Advert]:
        """The records known now."""
        return list(self._adverts.values())

    def compatible(self, advert: Advert) -> bool:
        """Can we talk to *advert*'s copy at all (same secret-ness, same wire)?"""
        return advert.secured == self.secured and advert.wire == self.wire

    def rival_wait(self) -> float:
        """How long a candidate that would host waits for the others it saw."""
        return max(1.0, 2 * self.discovery_window)

    # ============================================================ rules

    def _decide(self, now: float) -> Decision | None:
        self._join_at = now
        while (advert := self._choose()) is not None:
            self._tried.add((advert.node_id, advert.epoch > 0))
            refusal = self._refusal(advert)
            if refusal is None:
                return self._join(advert, now)
            self._refused[advert.node_id] = refusal
        if self._refused:
            # Browsing stops at the first host found: give the others (a rogue
            # may advertise a better rank than the real host) time to appear.
            if self._others_until is None:
                self._others_until = now + self.discovery_window
            if now < self._others_until:
                return None
            # Someone holds this session and we can't talk to them: hosting a
            # second one of the same name would only split the players.
            self._finish()
            return next(iter(self._refused.values()))
        unheard = self._unheard(now)
        if unheard and not self._rivals_waited:
            # A copy we saw may not have seen us and host too, and merging two
            # fresh sessions rolls back acknowledged writes: wait until each
            # chose us, or hosts, or we waited enough (once). Not cut short
            # by the caller's deadline: a copy in a hurry that hosts beside a
            # rival splits the players (seed 502622); it had better time out.
            if self._rivals_until is None:
                self._rivals_until = now + self.rival_wait()
            if now < self._rivals_until:
                return None
            self._rivals_waited = True
        rival = self._rival_to_ask(unheard)
        if rival is not None:
            self._tried.add((rival.node_id, False))
            self._asked.add(rival.node_id)
            # It answers at once when it is in (a peer redirects a Hello) or
            # starting (candidate_notice), and a silent one must not hold us.
            return self._join(rival, now, ask=True)
        return self._host(now, len(unheard | self._asked))

    def _learn_lower(self, msg: Hello) -> None:
        """A lower copy's Hello: it asks us as a rival (we missed its record,
        or it would be our choice). It is a candidate we may choose."""
        if (msg.sender, False) not in self._adverts:
            self._adverts[(msg.sender, False)] = Advert(
                node_id=msg.sender,
                endpoints=msg.endpoints,
                epoch=0,
                secured=self.secured,
                wire=self.wire,
            )

    def _moves_us(self, msg: Hello, now: float) -> bool:
        """Whether a Hello changes what we wait for: the last rival we waited
        for chose us; the higher rival we asked chose us (it waits for us
        now: waiting for it too would tie us both up); or a lower copy we
        did not know asks us, and is a better choice than ours (found by the
        simulator, seed 501210: three copies each waited for the next)."""
        if self._rivals_until is not None and not self._unheard(now):
            return True
        if msg.sender == self._target and self._asking_rival:
            return True
        lower = msg.sender < self.node_id and (msg.sender, False) not in self._tried
        return lower and (
            self._target is None or (self._target_candidate and msg.sender < self._target)
        )

    def _target_deadline(self) -> float:
        """When we stop waiting for whom we chose (see the module docstring)."""
        if self._answered_at is None:
            return self._join_at + self._patience
        silent = self._answered_at + 3 * self.hello_retry
        if not self._asking_rival:
            return silent
        return min(silent, self._join_at + self._patience + self.rival_wait())

    def _host(self, now: float, unanswered: int) -> Host | None:
        hellos = self._fresh_hellos(now)
        if not hellos and self._in_grace(now, unanswered):
            return None
        if unanswered:
            self.stats["hosted_without_rivals"] += 1
        self._finish()
        return Host(hellos=hellos, unanswered=unanswered)

    def _fresh_hellos(self, now: float) -> tuple[Hello, ...]:
        """The Hellos held whose copies still ask: a copy repeats its Hello
        every hello_retry, and one that stopped (gone, or joined elsewhere)
        must not become a member, let alone the successor."""
        fresh = now - 3 * self.hello_retry
        return tuple(h for h, at in self._held.values() if at >= fresh)

    def _in_grace(self, now: float, unanswered: int) -> bool:
        """A copy that nobody chose, and that gave up on a candidate or on
        rivals, waits a moment more before hosting: that candidate, or a
        copy its rivals chose, may be hosting right now (its own wait ran
        out with ours), and would welcome us, or show its host record. A copy
        that holds Hellos hosts at once, so of the two the chosen one goes
        first (found by the simulator: both hosted)."""
        if not (self._target_candidate or unanswered):
            return False
        if self._grace_until is None:
            self._grace_until = now + 3 * self.hello_retry
        return now < self._grace_until

    def _join(self, advert: Advert, now: float, *, ask: bool = False) -> Join:
        """Join *advert*'s copy, or only *ask* a rival (briefly, and keeping
        the Hellos held: we may host after all)."""
        self._others_until = self._rivals_until = self._grace_until = None
        if not ask:
            self._held.clear()  # those copies will find our host
            self._answers.clear()
        self._patience = 3 * self.hello_retry if ask else self._patience_with(advert, now)
        self._target = advert.node_id
        self._target_candidate = advert.epoch == 0
        self._answered_at, self._asking_rival = None, ask
        return Join(node_id=advert.node_id, endpoints=advert.endpoints)

    def _refusal(self, advert: Advert) -> Fail | None:
        if advert.wire != self.wire:
            # The other side could not decode a word we say, nor we its.
            return Fail(reason=Reason.INCOMPATIBLE, node_id=advert.node_id, wire=advert.wire)
        if advert.secured != self.secured:
            # CURVE and plaintext cannot talk: don't even try.
            reason = Reason.SECURED if advert.secured else Reason.OPEN
            return Fail(reason=reason, node_id=advert.node_id)
        return None

    def _rival_to_ask(self, unheard: set[str]) -> Advert | None:
        """A copy whose wait ran out: rather than host, ask its unheard
        rivals, lowest first, each briefly, even if copies chose us (seed
        1001197: a rival blind to us hosted just before us). Such a rival chose a copy
        we cannot see (it is higher than us, or it would have chosen us), and
        once in it sends us there (a peer redirects a Hello to its host); a
        starting one holds our Hello and answers. Without this, that copy
        waiting for us and we for the rival both hosted when their waits ran
        out together (found by the simulator). Each in turn, not only the
        lowest: a crashed copy's record lives on (seed 501358)."""
        if not unheard:
            return None
        known = [a for a in self._adverts.values() if a.epoch == 0 and a.node_id in unheard]
        return min(known, key=lambda a: a.node_id, default=None)

    def _choose(self) -> Advert | None:
        """Whom to ask: the host that would win a merge; with no host yet, the
        candidate with the lowest node id (None: that is us)."""
        adverts = [a for key, a in self._adverts.items() if key not in self._tried]
        hosts = [a for a in adverts if a.epoch > 0]
        if hosts:
            return max(hosts, key=lambda a: host_rank(a.players, a.epoch, a.node_id))
        lower = [a for a in adverts if a.node_id < self.node_id]
        return min(lower, key=lambda a: a.node_id, default=None)

    def _unheard(self, now: float) -> set[str]:
        """The candidates seen that neither chose us (their Hello) nor were
        tried by us: any of them may not have seen us, and host. Not one
        whose record went two rival waits ago with no host record since: it
        was welcomed elsewhere, or gave up (seed 504635: waiting for it made
        the last live copy time out)."""
        left = {n for n, at in self._gone.items() if now - at > 2 * self.rival_wait()}
        tried = {node_id for node_id, _ in self._tried}
        return self._rivals - self._held.keys() - tried - left

    def _patience_with(self, advert: Advert, now: float) -> float:
        """How long to wait for *advert* to answer before trying another: a
        candidate may itself wait its rival wait before hosting, but a silent
        one must leave us time to host before the caller gives up."""
        if advert.epoch > 0:
            return JOIN_RETRY
        left = self.deadline - now
        return min(JOIN_RETRY + self.rival_wait(), max(JOIN_RETRY, left / 2))

    def _finish(self) -> None:
        self.done = True
        self._others_until = self._rivals_until = self._grace_until = None
        self._held.clear()
        self._answers.clear()
