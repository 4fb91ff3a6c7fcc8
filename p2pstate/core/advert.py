"""The session's settings as its mDNS record carries them, and the one check
that they fit: the API (``set_session_info``, ``join``'s options) and the
host admitting an ``("info", ...)`` write both call :func:`info_fault`, so
nothing a host accepts can fail when it (or any later host) advertises it.
Pure functions, no I/O."""

from __future__ import annotations

from typing import Any

__all__ = [
    "MAX_TXT_ENTRY_BYTES",
    "MAX_TXT_TOTAL_BYTES",
    "info_fault",
    "info_properties",
    "txt_bytes",
]

#: RFC 6763 6.1: one TXT string (key=value) holds at most 255 bytes.
MAX_TXT_ENTRY_BYTES = 255
#: The whole record: keeps the answer (PTR+SRV+TXT+A) in one Ethernet frame.
MAX_TXT_TOTAL_BYTES = 1300


def info_properties(info: dict[str, Any]) -> dict[str, str]:
    """The TXT properties that advertise the session's settings (the lobby
    reads them back; see lobby.py)."""
    properties = {}
    if info.get("max_players") is not None:
        properties["max_players"] = str(info["max_players"])
    if info.get("joinable") is False:
        properties["joinable"] = "0"
    if info.get("version") is not None:
        properties["version"] = str(info["version"])
    for key, value in (info.get("metadata") or {}).items():
        properties[f"m.{key}"] = value
    return properties


def txt_bytes(properties: dict[str, str]) -> int:
    """What *properties* take in a TXT record: a length byte and key=value each.
    Raises UnicodeEncodeError for a str that is not valid text."""
    return sum(2 + len(k.encode()) + len(v.encode()) for k, v in properties.items())


def info_fault(info: dict[str, Any], room: int) -> str | None:
    """Why the settings *info* (the whole merged dict) cannot be advertised
    in *room* bytes of TXT record, or None if they can. *room* is what the
    record has left once every other entry is at its widest (the runtime
    works it out from the app and session names; see Config.advert_room)."""
    properties = info_properties(info)
    seen: set[str] = set()
    for key, value in properties.items():
        # RFC 6763 6.4: printable ASCII without '=', compared case-insensitively.
        if "=" in key or not all(" " <= ch <= "~" for ch in key):
            return f"metadata key {key[2:]!r} must be printable ASCII without '='"
        if key.lower() in seen:
            return f"metadata key {key[2:]!r} differs from another only by case"
        seen.add(key.lower())
        try:
            size = txt_bytes({key: value}) - 1
        except UnicodeEncodeError:
            return f"session setting {key!r} is not valid text"
        if size > MAX_TXT_ENTRY_BYTES:
            return f"{key}={value[:20]}... is {size} bytes; at most {MAX_TXT_ENTRY_BYTES}"
    total = txt_bytes(properties)
    if total > room:
        return f"the session's settings take {total} bytes of mDNS record; at most {room}"
    return None
