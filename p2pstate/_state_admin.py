"""SharedState's administration: the session's settings (shown in
lobbies), its access state (admin, modes, limits, authorized and banned
identities), and backup and restore of its lasting keys."""

from __future__ import annotations

import os
import time
from typing import Any

from ._state_base import UNSET, StateBase, Unset
from .backup import Backup, read_backup, write_backup
from .codec import encode, fresh_copy
from .core.access import check_identity
from .core.ids import identity_of
from .core.ops import Acl, ChangeSettings, Info
from .core.replica import Entry
from .errors import PermissionDeniedError, ProtocolError, ValueTooLargeError
from .messages import EPHEMERAL, session_info
from .options import check_access_settings

__all__ = ["AdminAPI"]


class AdminAPI(StateBase):
    """The session's settings, access state, backup and restore."""

    @property
    def session_info(self) -> dict[str, Any]:
        """The session's settings: max_players, joinable, version, metadata."""
        info: dict[str, Any] = fresh_copy(dict(self._view().info))
        return info

    def set_session_info(
        self,
        *,
        max_players: int | Unset | None = UNSET,
        joinable: bool | Unset = UNSET,
        version: str | Unset | None = UNSET,
        metadata: dict[str, str] | Unset = UNSET,
    ) -> None:
        """Change the session's settings, which the host advertises for the
        lobby (``p2pstate.browse``) and every later host keeps. ``metadata``
        (small str to str) replaces the previous one. ValueError if the
        settings would not fit the mDNS record (255 bytes an entry, about
        1300 in all)."""
        given = {
            "max_players": max_players,
            "joinable": joinable,
            "version": version,
            "metadata": metadata,
        }
        info = {k: v for k, v in given.items() if v is not UNSET}
        try:
            info = session_info(info)  # plain types, as every peer will hold them
        except ProtocolError as exc:  # the wire's check, an API caller's ValueError
            raise ValueError(str(exc)) from None
        self._rt.check_session_info(info)
        self._write((Info(info),), ())

    # ------------------------------------------------------------ permissions

    def authorize(self, peer_id: str) -> None:
        """Admin only: let this identity (or the identity of this peer id) in
        where ``readmode`` or ``writemode`` is AUTHORIZED_ONLY."""
        self._acl("authorize", peer_id)

    def unauthorize(self, peer_id: str) -> None:
        """Admin only: take the authorization back; under an AUTHORIZED_ONLY
        readmode its peers are removed from the session."""
        self._acl("unauthorize", peer_id)

    def ban(self, peer_id: str) -> None:
        """Admin only: ban this identity (or the identity of this peer id).
        Its peers are removed from the session at once and refused from then
        on, by this host and every later one. The admin cannot be banned."""
        identity = self._identity(peer_id)
        if identity == self.admin:
            raise ValueError("the admin cannot be banned")
        self._acl("ban", identity)

    def unban(self, peer_id: str) -> None:
        """Admin only: lift a ban; that player may join again."""
        self._acl("unban", peer_id)

    def _acl(self, action: str, peer_id: str) -> None:
        identity = self._identity(peer_id)
        # As the host checks it: a typo (upper case, a digit short) would be
        # listed and shown but match nobody. One listed may be taken off.
        if not self._rt.node.replica.access.well_formed(action, identity):
            raise ValueError(
                f"{peer_id!r} is not a peer id (IDENTITY.INSTANCE) or an identity "
                "(16 lower-case hex digits: see .peers, .banned, .authorized)"
            )
        self._require_admin(action)
        self._write((Acl(action, identity),), ())

    def set_access(
        self,
        *,
        readmode: str | Unset = UNSET,
        writemode: str | Unset = UNSET,
        max_keys: int | Unset = UNSET,
        max_total_bytes: int | Unset = UNSET,
        write_rate: float | Unset = UNSET,
        write_burst: int | Unset = UNSET,
    ) -> None:
        """Admin only: change some of the session's modes and limits (the
        others stay), checked as ``join`` checks them, in one ordered change
        every replica and later host keeps. A readmode that no longer lets a
        member in removes it, as a ban does. PermissionDeniedError from
        anyone but the admin; limits act on later writes only."""
        given = {
            "readmode": readmode,
            "writemode": writemode,
            "max_keys": max_keys,
            "max_total_bytes": max_total_bytes,
            "write_rate": write_rate,
            "write_burst": write_burst,
        }
        settings = {k: v for k, v in given.items() if v is not UNSET}
        if not settings:
            raise TypeError("set_access() needs at least one setting to change")
        check_access_settings(settings)
        if "write_rate" in settings:
            settings["write_rate"] = float(settings["write_rate"])
        self._require_admin("set_access")
        self._write((ChangeSettings(settings),), ())

    def _require_admin(self, action: str) -> None:
        admin = self.admin
        if identity_of(self._rt.node_id) != admin:
            raise PermissionDeniedError(
                f"only the session's admin ({admin}) may {action}; this peer is "
                f"{identity_of(self._rt.node_id)}"
            )

    @staticmethod
    def _identity(peer_id: str) -> str:
        if not isinstance(peer_id, str):
            raise TypeError("give the str id of a peer (see .peers) or its identity")
        try:
            return check_identity(identity_of(peer_id))
        except ProtocolError:
            raise ValueError(f"{peer_id!r} is not a peer id or an identity") from None

    @property
    def admin(self) -> str:
        """The identity of the session's admin: the one that created it."""
        return self._view().access.admin

    @property
    def readmode(self) -> str:
        """Who may join (and so read): one of p2pstate.ANY, ADMIN_ONLY,
        AUTHORIZED_ONLY, UNBANNED_ONLY."""
        return self._view().access.readmode

    @property
    def writemode(self) -> str:
        """Who may set, delete and send messages: one of the same modes."""
        return self._view().access.writemode

    @property
    def banned(self) -> frozenset[str]:
        """The banned identities."""
        return self._view().access.banned

    @property
    def authorized(self) -> frozenset[str]:
        """The identities the admin authorized."""
        return self._view().access.authorized

    @property
    def limits(self) -> dict[str, Any]:
        """The host's limits: max_keys, max_total_bytes, write_rate, write_burst."""
        settings = self._view().access.settings()
        return {k: v for k, v in settings.items() if k not in ("readmode", "writemode")}

    # ------------------------------------------------------------ backup and restore

    def backup(self, path: str | os.PathLike[str]) -> int:
        """Write every lasting key of this replica (not ephemeral ones) to the
        backup file *path*, whole or not at all. Returns the number of keys."""
        node = self._rt.node

        def take() -> tuple[int, list[tuple[str, Entry]], dict[str, float]]:
            return node.replica.seq, list(node.replica.data.items()), node.ttl_left()

        seq, items, ttl_left = self._rt.run_on_io(take, self._rt.options.write_timeout)
        now = time.time()
        entries = tuple(
            (key, e.value, e.owner, e.flags, now + ttl_left.get(key, e.ttl) if e.ttl else 0.0)
            for key, e in items
            if not e.flags & EPHEMERAL
        )
        write_backup(
            path,
            Backup(
                app=self._rt.app, session=self._rt.session, created=now, seq=seq, entries=entries
            ),
        )
        return len(entries)

    def restore(self, path: str | os.PathLike[str]) -> int:
        """Replace the session's lasting keys by those of the backup file
        *path*, as one change every peer sees (KeyChanged and KeyDeleted for
        what differs); the players' ephemeral keys stay. The whole file is
        checked first: a corrupt, truncated or foreign file, or a backup of
        another app, raises BackupError and changes nothing. Keys whose ttl
        ran out since the backup are left out. Returns the number of keys."""
        backup = read_backup(path, app=self._rt.app)
        op = backup.restore_op(time.time())
        limit = self._rt.options.max_value_size
        for key, value, *_ in op.entries:
            size = len(encode(value))
            if size > limit:
                raise ValueTooLargeError(
                    f"the backup's value of {key!r} is {size} bytes; max_value_size is {limit}"
                )
        size, frame_limit = len(encode(op)), self._rt.options.max_frame_size // 2
        if size > frame_limit:
            raise ValueTooLargeError(
                f"the backup is {size} bytes encoded; a restore travels as one message "
                f"of at most half of max_frame_size ({frame_limit} bytes)"
            )
        self._write((op,), ())
        return len(op.entries)
