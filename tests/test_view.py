"""The view readers see: after every publish it equals the replica at that
moment, and an earlier view never changes, whatever the core did to its
entries (set, delete, pop, replace the dict whole), with no network."""

from __future__ import annotations

import random

import pytest

from p2pstate._view import ViewPublisher
from p2pstate.core.node import Node
from p2pstate.core.replica import Entry


def _node(keys: int) -> Node:
    node = Node(node_id="a" * 16 + ".1", name="a", endpoints=("tcp://127.0.0.1:1",))
    node.replica.seed(tuple((f"k{i}", i, 1, "", 0, 0.0) for i in range(keys)), 1)
    return node


@pytest.mark.parametrize("seed", range(20))
def test_every_view_is_the_replica_of_its_moment(seed: int) -> None:
    rng = random.Random(seed)
    node = _node(rng.choice([0, 5, 300]))
    publisher = ViewPublisher(node)
    kept = [(publisher.view, dict(node.replica.data))]
    for step in range(400):
        data = node.replica.data
        for _ in range(rng.randint(0, 4)):
            key = f"k{rng.randrange(400)}"
            action = rng.random()
            if action < 0.5:
                data[key] = Entry.make([step, key], step)
            elif action < 0.8:
                data.pop(key, None)
            elif action < 0.9 and key in data:
                del data[key]
            elif action < 0.92:
                # The core replaces the dict whole (a snapshot, a restore).
                node.replica.data = {k: e for k, e in data.items() if rng.random() < 0.7}
                data = node.replica.data
        node.replica.seq += 1
        publisher.publish()
        view = publisher.view
        live = dict(node.replica.data)
        assert dict(view.entries) == live
        assert len(view.entries) == len(live)
        assert sorted(view.entries) == sorted(live)
        for key in ("k0", "k1", f"k{rng.randrange(400)}"):
            assert (key in view.entries) == (key in live)
            assert view.entries.get(key) is live.get(key)
        kept.append((view, live))
    for old_view, then in kept:  # no view changed after it was published
        assert dict(old_view.entries) == then


def test_nothing_changed_publishes_nothing() -> None:
    node = _node(10)
    publisher = ViewPublisher(node)
    first = publisher.view
    assert not publisher.publish()
    assert publisher.view is first
    node.replica.data["k3"] = Entry.make("new", 2)
    assert publisher.publish()
    assert publisher.view.entries["k3"].value == "new"
    assert first.entries["k3"].value == 3
