"""Fixtures for the protocol-core tests (the helpers are in simsession.py)."""

from __future__ import annotations

import pytest
from simsession import Session


@pytest.fixture
def session() -> Session:
    """A fresh simulated LAN with the library's default timings, seed 1."""
    return Session()
