"""The fixtures of tests/net; they live in netkit.py, with the helpers."""

from netkit import app_name, join, spawn

__all__ = ["app_name", "join", "spawn"]
