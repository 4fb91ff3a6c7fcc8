"""One rank: the node, the lobby and a first join's choice of host agree on
which of two hosts of one session a merge keeps (more players, then the
higher epoch, then the lower node id). No network: the lobby's records are
built by hand."""

from __future__ import annotations

import itertools

from p2pstate.core.node import Node
from p2pstate.core.rank import Standing, Terms, host_rank, wins
from p2pstate.discovery import HostRecord
from p2pstate.lobby import _sessions


def _record(node_id: str, epoch: int, players: int) -> HostRecord:
    return HostRecord(
        app="a",
        session="s",
        node_id=node_id,
        host_name=node_id,
        endpoints=("tcp://127.0.0.1:9",),
        epoch=epoch,
        session_id="sid",
        properties={"players": str(players)},
    )


def test_the_lobby_lists_the_host_that_wins_the_merge_not_the_higher_epoch() -> None:
    # A split: the half that kept three players at epoch 2, and one peer that
    # took over alone at epoch 3. The merge keeps the three players' host.
    records = [_record("bb", 2, 3), _record("aa", 3, 1)]
    for order in (records, records[::-1]):
        (info,) = _sessions(order).values()
        assert info.host_id == "bb", "the lobby must show the host that wins the merge"


def test_the_lobby_agrees_with_host_rank_on_every_pair() -> None:
    cases = [(n, e, p) for n in ("aa", "ab", "b") for e in (1, 2) for p in (1, 2)]
    for x, y in itertools.combinations(cases, 2):
        if x[0] == y[0]:
            continue  # one node advertises one record
        (info,) = _sessions([_record(*x), _record(*y)]).values()
        best = max((x, y), key=lambda c: host_rank(c[2], c[1], c[0]))
        assert info.host_id == best[0], (x, y)


def test_the_node_ranks_itself_with_host_rank() -> None:
    node = Node(node_id="n1", name="n", endpoints=("tcp://127.0.0.1:9",))
    node.start_host("sid", 0.0)
    assert node.rank() == host_rank(1, 1, "n1")


def test_host_rank_orders_players_then_epoch_then_the_lower_id() -> None:
    assert host_rank(2, 1, "z") > host_rank(1, 9, "a")
    assert host_rank(1, 2, "z") > host_rank(1, 1, "a")
    assert host_rank(1, 1, "a") > host_rank(1, 1, "b")
    assert host_rank(1, 1, "a") > host_rank(1, 1, "ab"), "a prefix ranks higher"


def _lone(host: str, live: int, seq: int, terms: Terms, backed: tuple[int, int, str]) -> Standing:
    return Standing(
        host_id=host,
        epoch=terms[-1][1],
        live=live,
        majority=False,
        seq=seq,
        terms=terms,
        backed=backed,
    )


def test_a_stale_lone_host_with_more_players_loses_to_the_majority_history() -> None:
    # Red seed 700194: p was cut off at seq 93 of h's term and later hosted
    # alone from there (epoch 2) with more players; h went on with a majority
    # to 105, then alone to 109. p's side holds none of h's backed changes.
    old = _lone("h", 1, 109, ((1, 1, "h"),), (105, 1, "h"))
    stale = _lone("p", 3, 97, ((1, 1, "h"), (94, 2, "p")), (93, 1, "h"))
    assert wins(old, stale)
    assert not wins(stale, old)


def test_a_successor_that_lost_its_majority_beats_the_old_hosts_lone_tail() -> None:
    # b took over from h at seq 50 with a majority and acknowledged to 75,
    # then lost its majority; h went on alone to 90 with more players.
    successor = _lone("b", 1, 80, ((1, 1, "h"), (50, 2, "b")), (75, 2, "b"))
    old = _lone("h", 3, 90, ((1, 1, "h"),), (49, 1, "h"))
    assert wins(successor, old)
    assert not wins(old, successor)


def test_when_neither_holds_the_others_backed_change_live_players_decide() -> None:
    a = _lone("a", 2, 60, ((1, 1, "h"), (40, 2, "a")), (45, 2, "a"))
    b = _lone("b", 1, 70, ((1, 1, "h"), (40, 2, "b")), (50, 2, "b"))
    assert wins(a, b)
    assert not wins(b, a)


def _took_over(host_id: str, epoch: int, live: int, took_over_at: int, seq: int) -> Standing:
    """A host that took over term (1, "h0") at *took_over_at* and went on
    without a majority of the session."""
    terms = ((1, 1, "h0"), (took_over_at, epoch, host_id))
    return _lone(host_id, live, seq, terms, (took_over_at - 1, 1, "h0"))  # all it held then


def test_of_two_lone_candidates_the_one_that_holds_more_of_the_lost_term_wins() -> None:
    # Both took over term 1 after a cut; "b" held its changes up to 133 (all
    # the acknowledged ones), "a" only up to 130. However many players "a"
    # gathered first, or however high its epoch, "a" must give way: its
    # history would undo acknowledged changes 131-133 (red seed 424).
    a = _took_over("a", epoch=3, live=3, took_over_at=131, seq=140)
    b = _took_over("b", epoch=2, live=1, took_over_at=134, seq=135)
    assert wins(b, a) and not wins(a, b)


def test_the_old_host_still_in_its_term_gives_way_as_before() -> None:
    # The old host (paused or cut off) holds more of its own term than the
    # peer that took over alone, yet gives way to it by the usual order
    # (more players, then the higher epoch): reach is compared only between
    # two that both left the term.
    old = Standing("h0", 1, 1, majority=False, seq=139, terms=((1, 1, "h0"),))
    new = _took_over("p", epoch=2, live=1, took_over_at=131, seq=135)
    assert wins(new, old) and not wins(old, new)


def _claims_majority(host: str, seq: int, terms: Terms) -> Standing:
    return Standing(host, terms[-1][1], live=3, majority=True, seq=seq, terms=terms)


def test_a_history_supersedes_the_one_whose_last_term_it_took_over() -> None:
    old = _claims_majority("h", 60, ((1, 1, "h"),))
    new = _claims_majority("b", 55, ((1, 1, "h"), (50, 2, "b")))
    assert new.supersedes(old) and not old.supersedes(new)


def test_no_history_supersedes_one_that_took_over_elsewhere_or_itself() -> None:
    b = _claims_majority("b", 55, ((1, 1, "h"), (50, 2, "b")))
    c = _claims_majority("c", 58, ((1, 1, "h"), (50, 2, "c")))  # took over term 1 too
    assert not b.supersedes(c) and not c.supersedes(b)
    assert not b.supersedes(b)  # its own last term is no later one
    empty = Standing("e", 0, 1, majority=True, seq=0, terms=())
    assert not b.supersedes(empty) and not empty.supersedes(b)


def test_rule_2b_when_both_claim_a_majority_the_later_term_wins() -> None:
    # h still counts the voters' old messages; b took over from h's term with
    # their votes. However many players h counts, or its longer history, b wins.
    old = Standing("h", 1, live=5, majority=True, seq=90, terms=((1, 1, "h"),))
    new = _claims_majority("b", 55, ((1, 1, "h"), (50, 2, "b")))
    assert wins(new, old) and not wins(old, new)


def test_rule_2b_decides_nothing_when_neither_took_over_from_the_other() -> None:
    b = Standing("b", 2, live=4, majority=True, seq=55, terms=((1, 1, "h"), (50, 2, "b")))
    c = _claims_majority("c", 58, ((1, 1, "h"), (50, 2, "c")))
    assert wins(b, c) and not wins(c, b)  # more live players (rule 4)


def test_rule_2b_only_between_two_majorities() -> None:
    # Without a majority on either side the later term does not decide:
    # rule 3 (backed changes), then live players.
    old = _lone("h", 3, 90, ((1, 1, "h"),), (49, 1, "h"))
    new = _lone("b", 1, 55, ((1, 1, "h"), (50, 2, "b")), (49, 1, "h"))
    assert wins(old, new) and not wins(new, old)
