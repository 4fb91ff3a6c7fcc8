"""The checks a contributor runs, as part of the one test command."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed")
def test_ruff_check() -> None:
    result = _run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed")
def test_ruff_format() -> None:
    result = _run("ruff", "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict() -> None:
    result = _run(sys.executable, "-m", "mypy", "--strict", "p2pstate")
    assert result.returncode == 0, result.stdout + result.stderr


def test_core_imports_no_io() -> None:
    """The sans-I/O core must not pull in zmq or zeroconf, nor read a clock or
    touch threads and sockets in its own code."""
    code = (
        "import sys, p2pstate.core.node, p2pstate.sim;"
        "print(','.join(m for m in ('zmq', 'zeroconf') if m in sys.modules))"
    )
    result = _run(sys.executable, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"the core imported {result.stdout.strip()}"
    for path in [*(ROOT / "p2pstate" / "core").glob("*.py"), ROOT / "p2pstate" / "sim.py"]:
        for line in path.read_text().splitlines():
            words = line.split()
            if words[:1] in (["import"], ["from"]) and len(words) > 1:
                assert words[1].split(".")[0] not in {
                    "zmq",
                    "zeroconf",
                    "threading",
                    "time",
                    "socket",
                }, f"{path.name}: {line.strip()}"
