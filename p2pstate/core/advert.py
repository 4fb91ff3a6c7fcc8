"""The mDNS record's schema, both directions: the TXT properties a host
advertises (:func:`host_properties`) and what a reader makes of them
(:func:`read_properties`), and the one check that a session's settings fit:
the API (``set_session_info``, ``join``'s options) and the host admitting an
``("info", ...)`` write both call :func:`info_fault`, so nothing a host
accepts can fail when it (or any later host) advertises it. Pure functions,
no I/O.

TXT keys of this schema (``discovery.py`` owns the record's own: app,
session, id, name, epoch, sid):

- ``players``: decimal count of members, host included (absent or
  unreadable: 1);
- ``max_players``: decimal, at least 1 (absent: None, no limit);
- ``joinable``: "1" or "0" (also true/false, yes/no) (absent: True);
- ``secured``: "1" or "0" (likewise) (absent: False);
- ``wire``: decimal, the host's wire format (``messages.WIRE_VERSION``;
  absent: a version from before the field existed);
- ``version``: any text, e.g. the game's version (absent: None);
- ``m.<name>``: any text, the session's own small str-to-str metadata
  (map, mode...). Each TXT entry is at most 255 bytes and the whole record
  at most 1300;
- ``readmode``, ``writemode``: "admin_only", "authorized_only" or
  "unbanned_only" (absent, the usual case, or unknown: "any");
- ``admin``: the admin's identity, only where the readmode is admin_only or
  authorized_only (absent: None);
- ``rev``: decimal, raised by the host with every change of its record, so
  that readers order records of one epoch that arrive out of order.

An unreadable value is logged at debug level and the default is used: what
comes from the network never raises here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ..errors import ProtocolError
from .access import ADMIN_ONLY, ANY, AUTHORIZED_ONLY, MODES, Access, check_identity

__all__ = [
    "MAX_TXT_ENTRY_BYTES",
    "MAX_TXT_TOTAL_BYTES",
    "TXT_ADMIN",
    "TXT_JOINABLE",
    "TXT_MAX_PLAYERS",
    "TXT_METADATA_PREFIX",
    "TXT_PLAYERS",
    "TXT_READMODE",
    "TXT_REVISION",
    "TXT_SECURED",
    "TXT_VERSION",
    "TXT_WIRE",
    "TXT_WRITEMODE",
    "Advertised",
    "access_properties",
    "advertised_players",
    "advertised_revision",
    "advertised_secured",
    "advertised_wire",
    "host_properties",
    "info_fault",
    "info_properties",
    "read_properties",
    "txt_bytes",
]

log = logging.getLogger(__name__)

TXT_PLAYERS: Final = "players"
TXT_MAX_PLAYERS: Final = "max_players"
TXT_JOINABLE: Final = "joinable"
TXT_SECURED: Final = "secured"
TXT_WIRE: Final = "wire"
TXT_VERSION: Final = "version"
TXT_METADATA_PREFIX: Final = "m."
TXT_REVISION: Final = "rev"
TXT_READMODE: Final = "readmode"
TXT_WRITEMODE: Final = "writemode"
TXT_ADMIN: Final = "admin"

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})
_MAX_INT_DIGITS: Final = 9

#: RFC 6763 6.1: one TXT string (key=value) holds at most 255 bytes.
MAX_TXT_ENTRY_BYTES = 255
#: The whole record: keeps the answer (PTR+SRV+TXT+A) in one Ethernet frame.
MAX_TXT_TOTAL_BYTES = 1300


# --------------------------------------------------------------------------- building


def info_properties(info: dict[str, Any]) -> dict[str, str]:
    """The TXT properties that advertise the session's settings."""
    properties = {}
    if info.get("max_players") is not None:
        properties[TXT_MAX_PLAYERS] = str(info["max_players"])
    if info.get("joinable") is False:
        properties[TXT_JOINABLE] = "0"
    if info.get("version") is not None:
        properties[TXT_VERSION] = str(info["version"])
    for key, value in (info.get("metadata") or {}).items():
        properties[f"{TXT_METADATA_PREFIX}{key}"] = value
    return properties


def access_properties(access: Access) -> dict[str, str]:
    """The TXT properties that advertise *access*: the modes that are not ANY
    (most sessions add nothing), and the admin where only it or those it
    authorized may join."""
    properties = {}
    if access.readmode != ANY:
        properties[TXT_READMODE] = access.readmode
    if access.writemode != ANY:
        properties[TXT_WRITEMODE] = access.writemode
    if access.readmode in (ADMIN_ONLY, AUTHORIZED_ONLY) and access.admin:
        properties[TXT_ADMIN] = access.admin
    return properties


def host_properties(
    info: dict[str, Any], players: int, access: Access, *, wire: int, secured: bool
) -> dict[str, str]:
    """Every TXT property of this schema a host advertises, but ``rev``
    (the advertiser numbers its records)."""
    properties = {TXT_PLAYERS: str(players), **info_properties(info)}
    properties.update(access_properties(access))
    properties[TXT_WIRE] = str(wire)
    if secured:
        properties[TXT_SECURED] = "1"  # the lobby shows it; joiners without a secret stop
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


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True, kw_only=True)
class Advertised:
    """What a host's TXT properties say, each field read with its default."""

    players: int = 1
    max_players: int | None = None
    joinable: bool = True
    secured: bool = False
    wire: int | None = None
    version: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    readmode: str = ANY
    writemode: str = ANY
    admin: str | None = None


def read_properties(props: Mapping[str, str], *, where: str = "a host") -> Advertised:
    """The schema's fields in a host's TXT properties (*where* names the
    host in debug logs). Never raises: an unreadable value is its default."""
    players = _parse_int(props.get(TXT_PLAYERS), 1, minimum=0, what=f"players of {where}")
    max_players = _parse_int(
        props.get(TXT_MAX_PLAYERS), None, minimum=1, what=f"max_players of {where}"
    )
    metadata = {
        key[len(TXT_METADATA_PREFIX) :]: value
        for key, value in props.items()
        if key.startswith(TXT_METADATA_PREFIX) and len(key) > len(TXT_METADATA_PREFIX)
    }
    return Advertised(
        players=players if players is not None else 1,
        max_players=max_players,
        joinable=_parse_bool(props.get(TXT_JOINABLE), True, what=f"joinable of {where}"),
        secured=_parse_bool(props.get(TXT_SECURED), False, what=f"secured of {where}"),
        wire=advertised_wire(props),
        version=props.get(TXT_VERSION),
        metadata=metadata,
        readmode=_parse_mode(props.get(TXT_READMODE), what=f"readmode of {where}"),
        writemode=_parse_mode(props.get(TXT_WRITEMODE), what=f"writemode of {where}"),
        admin=_parse_admin(props.get(TXT_ADMIN), what=f"admin of {where}"),
    )


def advertised_wire(properties: Mapping[str, str]) -> int | None:
    """The wire format a host's TXT properties name; None if they name none."""
    return _parse_int(properties.get(TXT_WIRE), None, minimum=1, what="wire")


def advertised_secured(properties: Mapping[str, str]) -> bool:
    """Whether a host's TXT properties say its session needs a secret."""
    return _parse_bool(properties.get(TXT_SECURED), False, what="secured")


def advertised_players(properties: Mapping[str, str]) -> int:
    """The player count a host's TXT properties name (1 if unreadable)."""
    players = _parse_int(properties.get(TXT_PLAYERS), 1, minimum=0, what="players")
    return 1 if players is None else players


def advertised_revision(properties: Mapping[str, str]) -> int:
    """The record's ``rev``; -1 when it has none (or an unreadable one)."""
    text = properties.get(TXT_REVISION, "")
    return int(text) if _is_decimal(text) else -1


def _parse_int(text: str | None, default: int | None, *, minimum: int, what: str) -> int | None:
    if text is None:
        return default
    text = text.strip()
    # isdigit() alone takes "²", which int() refuses: ASCII digits only.
    if not _is_decimal(text) or int(text) < minimum:
        log.debug("ignoring %s: %r", what, text)
        return default
    return int(text)


def _is_decimal(text: str) -> bool:
    """Whether *text* is a short run of ASCII digits, so int() takes it."""
    return text.isascii() and text.isdigit() and len(text) <= _MAX_INT_DIGITS


def _parse_bool(text: str | None, default: bool, *, what: str) -> bool:
    if text is None:
        return default
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    log.debug("ignoring %s: %r", what, text)
    return default


def _parse_mode(text: str | None, *, what: str) -> str:
    if text is None:
        return ANY
    if text not in MODES:
        log.debug("ignoring %s: %r", what, text)
        return ANY
    return text


def _parse_admin(text: str | None, *, what: str) -> str | None:
    if text is None:
        return None
    try:
        return check_identity(text)
    except ProtocolError:
        log.debug("ignoring %s: %r", what, text)
        return None
