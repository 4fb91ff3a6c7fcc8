"""The start-up election (p2pstate/core/startup.py): one test per rule of the
machine, then copies started together in the simulator, driven by that same
machine, under seeded faults in what each copy sees of the others.

A failing schedule prints its seed; rerun it alone with::

    PYTHONPATH=. python -c "import sys; sys.path.insert(0, 'tests/core'); \\
        from test_startup import run_start_schedule; run_start_schedule(SEED)"
"""

from __future__ import annotations

import os
import random

import pytest
from chaos import Pipeline
from samples import first_hello
from simsession import CONFIG

from p2pstate.core.node import Node, Role
from p2pstate.core.startup import (
    MAX_HELD_HELLOS,
    Advert,
    Fail,
    Host,
    Join,
    Reason,
    Startup,
    candidate_notice,
)
from p2pstate.events import WritesRolledBack
from p2pstate.messages import WIRE_VERSION, Hello
from p2pstate.sim import SimNetwork, StartFaults, random_start_faults

ME = "m0000000"


def machine(**kwargs: object) -> Startup:
    args: dict[str, object] = {
        "node_id": ME,
        "secured": False,
        "wire": WIRE_VERSION,
        "discovery_window": 0.5,
        "hello_retry": 0.1,
        "deadline": 100.0,
    }
    args.update(kwargs)
    return Startup(**args)  # type: ignore[arg-type]


def advert(node_id: str, epoch: int = 0, **kwargs: object) -> Advert:
    args: dict[str, object] = {
        "node_id": node_id,
        "endpoints": (f"tcp://{node_id}",),
        "epoch": epoch,
        "wire": WIRE_VERSION,
    }
    args.update(kwargs)
    return Advert(**args)  # type: ignore[arg-type]


def hello(sender: str) -> Hello:
    return first_hello(sender, name=sender, endpoints=(f"tcp://{sender}",))


# ---------------------------------------------------------------- whom to join


def test_a_copy_that_sees_nobody_hosts_at_once() -> None:
    assert machine().begin(0.0) == Host()


def test_a_copy_joins_the_lowest_candidate_below_it() -> None:
    m = machine()
    for node_id in ("z1", "b1", "a9", "a1"):
        m.seen(advert(node_id))
    assert m.begin(0.0) == Join(node_id="a1", endpoints=("tcp://a1",))


def test_a_host_goes_before_any_candidate_and_the_merge_winner_first() -> None:
    """More players, then the higher epoch, then the lower node id."""
    m = machine()
    m.seen(advert("a0"))  # a lower candidate: a host still goes first
    m.seen(advert("h1", epoch=5, players=2))
    m.seen(advert("h2", epoch=1, players=3))
    m.seen(advert("h3", epoch=9, players=3))
    m.seen(advert("h0", epoch=9, players=3))
    assert m.begin(0.0) == Join(node_id="h0", endpoints=("tcp://h0",))


def test_a_host_record_of_ourselves_is_ignored() -> None:
    m = machine()
    m.seen(advert(ME, epoch=3))
    assert m.begin(0.0) == Host()


# ---------------------------------------------------------------- rivals


def test_the_lowest_candidate_waits_for_the_rivals_it_saw() -> None:
    m = machine(discovery_window=0.3)
    m.seen(advert("y1"))
    m.seen(advert("z1"))
    assert m.begin(10.0) is None
    assert m.next_deadline() == 11.0  # max(1 s, 2 x 0.3 s)
    assert m.hello(hello("y1"), 10.9) is None  # z1 still unheard
    assert m.tick(10.95) is None
    assert m.tick(11.0) == Join(node_id="z1", endpoints=("tcp://z1",))  # asked
    assert m.hello(hello("y1"), 11.0) is None  # y1 still asks us: kept
    decision = m.tick(11.3)  # z1 silent
    assert isinstance(decision, Host) and decision.unanswered == 1
    assert [h.sender for h in decision.hellos] == ["y1"]
    assert m.stats["hosted_without_rivals"] == 1


def test_a_copy_nobody_chose_asks_its_unheard_rivals_in_turn() -> None:
    """Found by the simulator (seed 500006): the lowest copy waited for one
    blind to it, which waited for rivals that had chosen the lowest; both
    hosted when their waits ran out. A rival that did not choose us, though
    higher, knows a lower copy we cannot see, and redirects our Hello there.
    Each in turn (seed 501358): the lowest may have crashed, its record on."""
    m = machine()
    m.seen(advert("z2"))
    m.seen(advert("z1"))
    assert m.begin(0.0) is None
    assert m.tick(1.0) == Join(node_id="z1", endpoints=("tcp://z1",))
    assert m.next_deadline() == pytest.approx(1.3)  # 3 hello_retry: it is asked, not awaited
    assert m.tick(1.3) == Join(node_id="z2", endpoints=("tcp://z2",))  # z1 is silent
    assert m.tick(1.6) is None  # z2 did not answer either: a moment's grace
    assert m.tick(1.91) == Host(unanswered=2)


def test_an_asked_rival_that_answers_is_waited_for_one_rival_wait_more() -> None:
    """It holds our Hello and will host and welcome us, or join and redirect
    us; but it may wait for a copy that waits for us: the bound breaks that."""
    m = machine()
    m.seen(advert("z1"))
    assert m.begin(0.0) is None
    assert m.tick(1.0) == Join(node_id="z1", endpoints=("tcp://z1",))
    for t in (1.1, 1.3, 1.5, 1.7, 1.9, 2.1):
        m.answered("z1", t)
        assert m.tick(t + 0.05) is None
    assert m.next_deadline() == pytest.approx(2.3)  # 1.0 + 0.3 + a rival wait of 1 s
    assert m.tick(2.3) is None  # it may be hosting right now: a moment's grace
    assert m.tick(2.61) == Host(unanswered=1)


def test_a_chosen_copy_asks_its_unheard_rival_but_does_not_wait_on_its_answer() -> None:
    """Found by the simulator (seed 1001197): a rival blind to us hosted just
    before our wait ran out; asked, it welcomes us. But copies wait for us:
    a rival that answers is not waited for (seed 500782: waiting for it,
    which waited for a crashed copy, made every copy time out)."""
    m = machine()
    m.seen(advert("z1"))
    assert m.begin(0.0) is None
    assert m.hello(hello("y1"), 0.95) is None
    assert m.tick(1.0) == Join(node_id="z1", endpoints=("tcp://z1",))
    m.answered("z1", 1.1)
    assert m.hello(hello("y1"), 1.15) is None
    assert m.next_deadline() == pytest.approx(1.3)
    decision = m.tick(1.3)
    assert isinstance(decision, Host) and [h.sender for h in decision.hellos] == ["y1"]


def test_a_lower_copy_that_asks_us_is_chosen_over_a_higher_rival() -> None:
    """Found by the simulator (seed 501210, with the first version of the
    candidate notice): three copies each waited for the next, two of them
    asking a higher rival, and two hosted when their waits ran out. A lower
    copy's Hello tells us of a candidate whose record we missed."""
    m = machine(node_id="m5")
    m.seen(advert("z1"))
    assert m.begin(0.0) is None
    assert m.tick(1.0) == Join(node_id="z1", endpoints=("tcp://z1",))  # asked
    m.answered("z1", 1.1)
    assert m.hello(hello("m1"), 1.2) == Join(node_id="m1", endpoints=("tcp://m1",))
    assert m.take_answers() == []  # we ask it instead


def test_the_rival_we_asked_choosing_us_ends_our_wait_for_it() -> None:
    """It waits for us now: waiting for it too would tie us both up."""
    m = machine()
    m.seen(advert("z1"))
    assert m.begin(0.0) is None
    assert m.tick(1.0) == Join(node_id="z1", endpoints=("tcp://z1",))
    m.answered("z1", 1.1)
    decision = m.hello(hello("z1"), 1.2)
    assert isinstance(decision, Host) and [h.sender for h in decision.hellos] == ["z1"]


# ---------------------------------------------------------------- candidate notices


def test_a_held_hello_is_answered_with_the_candidate_notice() -> None:
    m = machine()
    m.seen(advert("y1"))
    m.seen(advert("z1"))
    assert m.begin(0.0) is None
    assert m.hello(hello("z1"), 0.1) is None
    assert [h.sender for h in m.take_answers()] == ["z1"]
    assert m.take_answers() == []
    assert isinstance(m.hello(hello("y1"), 0.2), Host)  # welcomed instead
    assert m.take_answers() == []
    notice = candidate_notice(ME, ("tcp://me",))
    assert (notice.sender, notice.host_id, notice.reason, notice.epoch) == (ME, ME, "candidate", 0)


def test_a_copy_still_browsing_does_not_answer() -> None:
    """It may never decide (tests/net: a copy that never begins stands for one
    killed while starting): its silence must not hold the copy that chose it."""
    m = machine()
    assert m.hello(hello("z1"), 0.0) is None
    assert m.take_answers() == []


def test_a_chosen_candidate_that_answers_is_waited_for_past_the_patience() -> None:
    """Found by the simulator (seeds 501502, 504177, 504513): a copy gave up on
    the candidate it chose, which was alive and waiting for its own rivals,
    and both hosted. Answering, it is waited for; silent, it died."""
    m = machine(deadline=100.0)
    m.seen(advert("a1"))
    assert m.begin(0.0) == Join(node_id="a1", endpoints=("tcp://a1",))
    m.answered("x9", 0.1)  # not whom we chose: no word about a1
    t = 0.1
    while t < 5.0:
        m.answered("a1", t)
        assert m.tick(t + 0.05) is None
        t += 0.1
    assert m.next_deadline() == pytest.approx(t - 0.1 + 0.3)
    assert m.tick(t + 0.2) is None  # silent since t - 0.1: it crashed just now
    assert m.tick(t + 0.21) is None  # gave up: a moment's grace first
    assert m.tick(t + 0.6) == Host()


def test_a_host_ignores_candidate_notices() -> None:
    """A notice that arrives after its election is over means nothing."""
    m = machine()
    assert m.begin(0.0) == Host()
    m.answered("a1", 0.1)
    assert m.next_deadline() is None and m.take_answers() == []


def test_the_rival_wait_is_two_discovery_windows_when_longer_than_1_s() -> None:
    m = machine(discovery_window=0.8)
    m.seen(advert("z1"))
    assert m.begin(0.0) is None
    assert m.next_deadline() == pytest.approx(1.6)


def test_a_rivals_hello_ends_the_wait_and_is_welcomed() -> None:
    m = machine()
    m.seen(advert("y1"))
    m.seen(advert("z1"))
    assert m.begin(0.0) is None
    assert m.hello(hello("z1"), 0.1) is None  # y1 still unheard
    decision = m.hello(hello("y1"), 0.2)
    assert isinstance(decision, Host)
    assert sorted(h.sender for h in decision.hellos) == ["y1", "z1"]
    assert decision.unanswered == 0


def test_a_rival_that_hosts_is_joined() -> None:
    m = machine()
    m.seen(advert("z1"))
    assert m.begin(0.0) is None
    m.seen(advert("z1", epoch=1))
    assert m.tick(0.3) == Join(node_id="z1", endpoints=("tcp://z1",))


def test_a_rival_stays_one_after_its_candidate_record_goes() -> None:
    """Its candidate record goes when it hosts, maybe before its host record
    comes: forgetting it then would let us host a second session."""
    m = machine()
    m.seen(advert("z1"))
    m.gone("z1", host=False, now=0.0)
    assert m.begin(0.0) is None
    assert m.tick(0.5) is None


def test_an_incompatible_candidate_is_no_rival() -> None:
    m = machine()
    m.seen(advert("z1", secured=True))
    m.seen(advert("z2", wire=WIRE_VERSION + 1))
    assert m.begin(0.0) == Host()


# ---------------------------------------------------------------- patience


def test_a_silent_host_is_given_up_after_1_s() -> None:
    m = machine()
    m.seen(advert("h1", epoch=2))
    assert m.begin(0.0) == Join(node_id="h1", endpoints=("tcp://h1",))
    assert m.next_deadline() == 1.0
    assert m.tick(0.99) is None
    assert m.tick(1.0) == Host()
    assert m.stats["join_retries"] == 1


def test_a_candidate_is_given_its_rival_wait_more() -> None:
    m = machine(discovery_window=0.5, deadline=100.0)
    m.seen(advert("a1"))
    m.seen(advert("a2"))
    assert m.begin(0.0) == Join(node_id="a1", endpoints=("tcp://a1",))
    assert m.next_deadline() == 2.0  # 1 s + its rival wait of 1 s
    assert m.tick(2.0) == Join(node_id="a2", endpoints=("tcp://a2",))


def test_a_silent_candidate_leaves_time_to_host_before_the_deadline() -> None:
    """Half of what is left, at least 1 s: join() must not time out on it."""
    m = machine(discovery_window=1.5, deadline=5.0)
    m.seen(advert("a1"))
    assert m.begin(1.5) == Join(node_id="a1", endpoints=("tcp://a1",))
    assert m.next_deadline() == pytest.approx(1.5 + 1.75)


def test_a_candidate_given_up_on_is_joined_once_it_hosts() -> None:
    """Found by the simulator (seed 500062): a candidate we stopped waiting
    for hosted later, but having been tried it was never tried again, and
    we hosted a second session."""
    m = machine(deadline=100.0)
    m.seen(advert("a1"))
    m.seen(advert("z1"))  # a rival that never answers
    assert m.begin(0.0) == Join(node_id="a1", endpoints=("tcp://a1",))
    assert m.tick(2.0) is None  # a1 tried: now waiting for z1
    m.seen(advert("a1", epoch=1))
    assert m.tick(2.1) == Join(node_id="a1", endpoints=("tcp://a1",))


def test_a_copy_that_gave_up_on_a_candidate_hosts_after_a_moment_unless_chosen() -> None:
    """Found by the simulator (seeds 500378, 500462): a copy that chose a
    candidate, which chose a silent one, gave up on it just as it hosted,
    and hosted too. Now the one nobody chose waits 3 hello_retry more, and
    the chosen one hosts at once and welcomes it."""
    unchosen = machine()
    unchosen.seen(advert("a1"))
    assert unchosen.begin(0.0) == Join(node_id="a1", endpoints=("tcp://a1",))
    assert unchosen.tick(2.0) is None
    assert unchosen.next_deadline() == pytest.approx(2.3)
    unchosen.seen(advert("a1", epoch=1))  # it hosts meanwhile: join it
    assert unchosen.tick(2.1) == Join(node_id="a1", endpoints=("tcp://a1",))
    chosen = machine()
    chosen.seen(advert("a1"))
    assert chosen.begin(0.0) == Join(node_id="a1", endpoints=("tcp://a1",))
    assert chosen.hello(hello("z1"), 1.95) is None
    decision = chosen.tick(2.0)
    assert isinstance(decision, Host) and [h.sender for h in decision.hellos] == ["z1"]


def test_a_copy_nobody_chose_with_no_rival_to_ask_hosts_after_a_moment() -> None:
    """Found by the simulator (seed 1001471): the rival's record went (it
    gave up), so it cannot be asked; a copy its other rivals chose may be
    hosting right now, and its host record is worth a moment."""
    m = machine()
    m.seen(advert("z1"))
    m.gone("z1", host=False, now=0.0)
    assert m.begin(0.0) is None
    assert m.tick(1.0) is None
    m.seen(advert("a1", epoch=1))
    assert m.tick(1.1) == Join(node_id="a1", endpoints=("tcp://a1",))
    m = machine()
    m.seen(advert("z1"))
    m.gone("z1", host=False, now=0.0)
    assert m.begin(0.0) is None and m.tick(1.0) is None
    assert m.tick(1.31) == Host(unanswered=1)


def test_a_host_joined_during_the_moments_grace_is_not_left_when_it_ends() -> None:
    """Found by the simulator (seed 502085): a copy that chose a host (or a
    lower copy) during its grace hosted anyway when the grace ran out."""
    m = machine()
    m.seen(advert("z1"))
    m.gone("z1", host=False, now=0.0)
    assert m.begin(0.0) is None and m.tick(1.0) is None  # grace until 1.3
    m.seen(advert("a1", epoch=1))
    assert m.tick(1.1) == Join(node_id="a1", endpoints=("tcp://a1",))
    assert m.tick(1.35) is None
    assert m.next_deadline() == pytest.approx(2.1)  # a host's patience


def test_a_rival_whose_record_went_long_ago_is_not_waited_for() -> None:
    """Found by the simulator (seed 504635): the last live copy tried three
    crashed candidates, then waited for a rival that had given up long ago,
    and timed out. No host record two rival waits after its candidate record
    went: it was welcomed elsewhere or gave up."""
    m = machine()
    m.seen(advert("a1"))
    m.seen(advert("z1"))
    assert m.begin(0.0) == Join(node_id="a1", endpoints=("tcp://a1",))
    m.gone("z1", host=False, now=0.1)
    assert m.tick(2.0) is None  # a1 silent: z1 gone only 1.9 s ago
    m = machine()
    m.seen(advert("a1"))
    m.seen(advert("z1"))
    assert m.begin(0.0) == Join(node_id="a1", endpoints=("tcp://a1",))
    m.gone("z1", host=False, now=-0.1)
    assert m.tick(2.0) is None  # z1 is no rival: a moment's grace for a1 only
    assert m.tick(2.31) == Host()


def test_the_rival_wait_is_not_cut_short_by_the_callers_deadline() -> None:
    """Found by the simulator (seed 502622): a copy with a short timeout
    hosted beside a rival that could not see it. It had better time out."""
    m = machine(deadline=0.65)
    m.seen(advert("z1"))
    assert m.begin(0.5) is None
    assert m.next_deadline() == pytest.approx(1.5)


# ---------------------------------------------------------------- held Hellos


def test_only_hellos_still_asking_are_welcomed() -> None:
    """A copy repeats its Hello every hello_retry; one silent for 3 of them
    gave up or went elsewhere, and must not become a member."""
    fresh = machine(hello_retry=0.1)
    fresh.seen(advert("a1"))
    assert fresh.begin(0.0) == Join(node_id="a1", endpoints=("tcp://a1",))
    assert fresh.hello(hello("y1"), 1.7) is None
    assert fresh.tick(2.0) == Host(hellos=(hello("y1"),))  # a1 never answered
    stale = machine(hello_retry=0.1)
    stale.seen(advert("a1"))
    assert stale.begin(0.0) == Join(node_id="a1", endpoints=("tcp://a1",))
    assert stale.hello(hello("y1"), 1.6) is None
    assert stale.tick(2.0) is None  # nobody asks: a moment's grace first
    assert stale.tick(2.3) == Host()


def test_held_hellos_are_capped_and_the_rest_counted() -> None:
    m = machine()
    for i in range(MAX_HELD_HELLOS + 5):
        assert m.hello(hello(f"y{i:04d}"), 0.0) is None
    assert m.stats["dropped: Hello to a candidate"] == 5
    decision = m.begin(0.1)
    assert isinstance(decision, Host) and len(decision.hellos) == MAX_HELD_HELLOS


def test_joining_another_copy_drops_the_held_hellos() -> None:
    m = machine()
    m.seen(advert("z1"))
    assert m.hello(hello("z1"), 0.0) is None  # held before we even decide
    m.seen(advert("a1"))
    assert m.begin(0.1) == Join(node_id="a1", endpoints=("tcp://a1",))
    # a1 never answered: z1 (whose Hello went) is waited for again, then asked
    assert m.tick(5.0) is None
    assert m.tick(6.0) == Join(node_id="z1", endpoints=("tcp://z1",))
    assert m.tick(6.31) is None and m.tick(6.62) == Host(unanswered=1)  # asked, silent


def test_hellos_before_the_decision_are_kept_and_nothing_is_decided() -> None:
    m = machine()
    m.seen(advert("z1"))
    assert m.hello(hello("z1"), 0.0) is None
    assert m.tick(50.0) is None and m.next_deadline() is None
    decision = m.begin(0.05)
    assert isinstance(decision, Host) and [h.sender for h in decision.hellos] == ["z1"]


# ---------------------------------------------------------------- can't talk


@pytest.mark.parametrize(
    ("found", "reason"),
    [
        ({"wire": WIRE_VERSION + 1}, Reason.INCOMPATIBLE),
        ({"wire": None}, Reason.INCOMPATIBLE),
        ({"secured": True}, Reason.SECURED),
    ],
)
def test_a_host_we_cannot_talk_to_fails_after_one_more_window(
    found: dict[str, object], reason: Reason
) -> None:
    m = machine(discovery_window=0.5)
    m.seen(advert("h1", epoch=1, **found))
    assert m.begin(0.0) is None  # others may still appear
    assert m.next_deadline() == 0.5
    fail = m.tick(0.5)
    assert isinstance(fail, Fail) and fail.reason is reason and fail.node_id == "h1"
    assert m.done and m.tick(9.0) is None


def test_an_open_host_fails_a_copy_with_a_secret() -> None:
    m = machine(secured=True)
    m.seen(advert("h1", epoch=1))
    assert m.begin(0.0) is None
    fail = m.tick(0.5)
    assert isinstance(fail, Fail) and fail.reason is Reason.OPEN


def test_a_host_we_can_talk_to_that_appears_meanwhile_is_joined() -> None:
    m = machine()
    m.seen(advert("h1", epoch=9, players=5, wire=WIRE_VERSION + 1))
    assert m.begin(0.0) is None
    m.seen(advert("h2", epoch=1))
    assert m.tick(0.1) == Join(node_id="h2", endpoints=("tcp://h2",))


def test_a_refused_handshake_with_whom_we_join_fails_the_join() -> None:
    m = machine(secured=True)
    m.seen(advert("h1", epoch=1, secured=True))
    assert m.begin(0.0) == Join(node_id="h1", endpoints=("tcp://h1",))
    assert m.handshake_failed("x9", 0.1) is None  # not the one we join: the caller counts it
    assert m.handshake_failed("h1", 0.1) is None
    fail = m.tick(0.6)
    assert isinstance(fail, Fail) and fail.reason is Reason.REJECTED


# ---------------------------------------------------------------- once in


def test_once_welcomed_nothing_is_left_to_wait_for() -> None:
    """Regression (review of 55e06be): a copy welcomed late kept a past
    deadline, and its I/O loop never slept again."""
    m = machine()
    m.seen(advert("z1"))
    assert m.begin(0.0) is None
    m.joined()
    assert m.next_deadline() is None
    assert m.tick(5.0) is None and m.hello(hello("z1"), 5.0) is None


# ---------------------------------------------------------------- in the simulator


class _NoRivalWait(Startup):
    """The machine as before commit 5a6a57a: the lowest candidate hosts at once."""

    def rival_wait(self) -> float:
        return 0.0

    def _rival_to_ask(self, unheard: set[str]) -> Advert | None:
        return None

    def _in_grace(self, now: float, unanswered: int) -> bool:
        return False


def _blind_start(machine: type[Startup]) -> SimNetwork:
    """Two copies started together; the higher never sees the lower's record."""
    net = SimNetwork(7, config=CONFIG)
    low, high = "1000000000000000", "9000000000000000"
    faults = StartFaults(lost={(high, low)})
    net.start_together([low, high], window=0.3, faults=faults, machine=machine)
    pipes = [Pipeline(net, nid, total=3, window=3) for nid in (low, high)]

    def done() -> bool:
        for pipe in pipes:
            pipe.pump()
        return all(p.finished for p in pipes) and net.quiet()

    assert net.run_until(done, 20.0), net.trace_tail()
    net.run(1.0)
    return net


def _rolled_back(net: SimNetwork) -> list[WritesRolledBack]:
    return [e for evs in net.events.values() for e in evs if isinstance(e, WritesRolledBack)]


def test_the_simulator_finds_the_two_hosts_bug_without_the_rival_wait() -> None:
    """The CI failure fixed by 5a6a57a, found by the simulator: a copy blind
    to the lowest candidate hosts too, and the merge rolls back writes."""
    net = _blind_start(_NoRivalWait)
    assert len(net.hosts_by_epoch[1]) == 2
    assert _rolled_back(net)


def test_with_the_rival_wait_the_blind_copy_joins_one_session() -> None:
    net = _blind_start(Startup)
    assert len(net.hosts_by_epoch[1]) == 1
    assert not _rolled_back(net)


FACTOR = int(os.environ.get("P2PSTATE_SCHEDULES", "1"))
SCHEDULES = 500 * FACTOR


def run_start_schedule(seed: int, machine: type[Startup] = Startup) -> SimNetwork:
    """2-5 copies started together with seeded faults; each writes once in.
    Checks: one host among the live copies, every live copy a member of its
    session, every acknowledged write on every replica, none rolled back."""
    rng = random.Random(seed)
    net = SimNetwork(seed, config=CONFIG, max_delay=rng.choice((0.001, 0.003, 0.01, 0.03)))
    ids = [f"{rng.getrandbits(64):016x}" for _ in range(rng.randint(2, 5))]
    net.start_together(
        ids, window=rng.choice((0.2, 0.3, 0.5)), faults=random_start_faults(rng, ids)
    )
    pipes = [Pipeline(net, nid, total=rng.randint(1, 4), window=2) for nid in ids]

    def settled() -> bool:
        for pipe in pipes:
            pipe.pump()
        working = [p for p in pipes if p.node_id in net.alive and not p.finished]
        return not net.starting() and not working and net.quiet()

    assert net.run_until(settled, 30.0), f"seed {seed}\n{net.trace_tail(60)}"
    where = f"seed {seed}\n{net.trace_tail(60)}"
    live = net.live_nodes()
    assert [n.role for n in live].count(Role.HOST) == 1, where
    host = next(n for n in live if n.role is Role.HOST)
    assert {m.id for m in host.replica.members} == {n.me.id for n in live}, where
    assert not _rolled_back(net), where
    for pipe in pipes:
        for key, (value, _) in pipe.acked.items():
            assert all(_value(n, key) == value for n in live), f"{key} lost; {where}"
    return net


def _value(node: Node, key: str) -> object:
    entry = node.replica.data.get(key)
    return entry.value if entry is not None else None


@pytest.mark.parametrize("seed", range(SCHEDULES))
def test_copies_started_together_make_one_session_and_lose_nothing(seed: int) -> None:
    run_start_schedule(500_000 + seed)


#: Schedules outside CI's range that failed before the starting copies'
#: "candidate, keep asking me" answer: two hosts after a chooser gave up on a
#: candidate that was alive but waiting (501502, 504177, 504513), copies that
#: spent their waits on crashed candidates and hosted side by side (500745,
#: 501358), or ran out of time (504635).
FOUND_SEEDS = (500745, 501358, 501502, 504177, 504513, 504635)
#: Schedules that broke the first versions of that fix (a rival ask skipped
#: near the caller's deadline, copies waiting for each other in a ring, a
#: join during the grace undone), and one more range's (1001197).
FIX_SEEDS = (500782, 501210, 502085, 502622, 1001197)


@pytest.mark.parametrize("seed", FOUND_SEEDS + FIX_SEEDS)
def test_schedules_found_outside_ci_make_one_session(seed: int) -> None:
    run_start_schedule(seed)
