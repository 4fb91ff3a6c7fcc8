"""One rank: the node, the lobby and a first join's choice of host agree on
which of two hosts of one session a merge keeps (more players, then the
higher epoch, then the lower node id). No network: the lobby's records are
built by hand."""

from __future__ import annotations

import itertools

from p2pstate.core.node import Node
from p2pstate.core.rank import host_rank
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
