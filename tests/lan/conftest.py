"""Fixtures for the namespace tests: a fresh LAN of namespaces per test."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from netlab import Lan


@pytest.fixture
def app_name() -> str:
    """A fresh app name per test, so sessions of other tests never match."""
    return f"lan-{secrets.token_hex(4)}"


@pytest.fixture
def make_lan(tmp_path: Path) -> Iterator[Callable[[int], Lan]]:
    """``make_lan(n)``: *n* peer namespaces on a bridge. At the end of the test
    every worker is stopped by its pid and every namespace deleted, pass or fail."""
    lans: list[Lan] = []

    def make(n: int) -> Lan:
        lan = Lan(n, tmp_path)
        lans.append(lan)
        return lan

    try:
        yield make
    finally:
        errors: list[str] = []
        for lan in lans:
            try:
                lan.close()
            except RuntimeError as exc:
                errors.append(str(exc))
        assert not errors, f"teardown: {errors}"
