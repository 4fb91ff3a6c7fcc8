"""Permission modes in the lobby: the TXT keys readmode, writemode and admin,
SessionInfo's fields, and quick_join passing over sessions that would not
let this identity in. Real mDNS on 127.0.0.1; fake adverts stand for hosts
(they listen nowhere, so joining one would fail the test)."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator

import pytest
from netkit import eventually, new_installation

import p2pstate
from p2pstate.core.access import Access
from p2pstate.discovery import Discovery, HostRecord
from p2pstate.identity import load_identity
from p2pstate.lobby import TXT_WIRE, _sessions, access_txt
from p2pstate.messages import WIRE_VERSION

LOOPBACK = ["127.0.0.1"]
QUICK = {"browse_timeout": 0.6, "interfaces": LOOPBACK, "discovery_window": 0.3}


def record(properties: dict[str, str]) -> HostRecord:
    return HostRecord(
        app="a",
        session="s",
        node_id="ab",
        host_name="h",
        endpoints=("tcp://127.0.0.1:9",),
        epoch=1,
        session_id="sid",
        properties=properties,
    )


def test_modes_are_read_from_the_txt_record() -> None:
    (plain,) = _sessions([record({})]).values()
    assert (plain.readmode, plain.writemode, plain.admin) == ("any", "any", None)
    props = {"readmode": "authorized_only", "writemode": "admin_only", "admin": "00ff00ff00ff00ff"}
    (info,) = _sessions([record(props)]).values()
    assert (info.readmode, info.writemode, info.admin) == (
        p2pstate.AUTHORIZED_ONLY,
        p2pstate.ADMIN_ONLY,
        "00ff00ff00ff00ff",
    )


@pytest.mark.parametrize(
    "props",
    [
        {"readmode": "everyone", "writemode": "", "admin": "a.b"},
        {"readmode": "ANY", "writemode": "admin", "admin": "x" * 65},
        {"admin": ""},
    ],
)
def test_garbled_modes_fall_back_to_any(props: dict[str, str]) -> None:
    (info,) = _sessions([record(props)]).values()
    assert (info.readmode, info.writemode, info.admin) == ("any", "any", None)


def test_only_modes_that_are_not_any_are_advertised() -> None:
    assert access_txt(Access(admin="ad")) == {}
    assert access_txt(Access(admin="ad", writemode="admin_only")) == {"writemode": "admin_only"}
    assert access_txt(Access(admin="ad", readmode="unbanned_only")) == {"readmode": "unbanned_only"}
    for mode in ("admin_only", "authorized_only"):  # the admin too: quick_join needs it
        assert access_txt(Access(admin="ad", readmode=mode)) == {"readmode": mode, "admin": "ad"}


@pytest.fixture
def app_and_adverts() -> Iterator[tuple[str, Callable[..., None]]]:
    app = f"modes-{secrets.token_hex(4)}"
    adverts: list[Discovery] = []

    def advertise(session: str, **properties: str) -> None:
        d = Discovery(LOOPBACK)
        d.advertise(
            app=app,
            session=session,
            node_id=secrets.token_hex(8),
            host_name=session,
            port=9,
            addresses=LOOPBACK,
            epoch=1,
            session_id=secrets.token_hex(8),
            properties={"players": "3", TXT_WIRE: str(WIRE_VERSION), **properties},
        )
        adverts.append(d)

    yield app, advertise
    for d in adverts:
        d.close()


def test_quick_join_passes_over_sessions_that_would_refuse_it(
    app_and_adverts: tuple[str, Callable[..., None]],
) -> None:
    app, advertise = app_and_adverts
    home = new_installation()
    someone_else = "0123456789abcdef"
    assert load_identity(home).fingerprint != someone_else
    advertise("admins", readmode="admin_only", admin=someone_else)
    advertise("friends", readmode="authorized_only", admin=someone_else)
    listed = {i.session: i for i in p2pstate.browse(app, 1.0, interfaces=LOOPBACK)}
    assert listed["friends"].readmode == "authorized_only"
    assert listed["admins"].admin == someone_else
    s = p2pstate.quick_join(app, identity_dir=home, **QUICK)  # type: ignore[arg-type]
    try:
        # Neither fake was tried (joining one would time out): a new session.
        assert s.is_host and s.session.startswith("quick-")
    finally:
        s.close()


def test_a_real_session_advertises_its_modes_and_quick_join_follows_them() -> None:
    app = f"modes-{secrets.token_hex(4)}"
    admin_home = new_installation()
    opened: list[p2pstate.SharedState] = []
    try:
        admin = p2pstate.join(
            app,
            interfaces=LOOPBACK,
            discovery_window=0.3,
            identity_dir=admin_home,
            readmode=p2pstate.AUTHORIZED_ONLY,
        )
        opened.append(admin)
        (info,) = p2pstate.browse(app, 1.0, interfaces=LOOPBACK)
        assert (info.readmode, info.writemode) == ("authorized_only", "any")
        assert info.admin == admin.admin

        stranger = p2pstate.quick_join(app, identity_dir=new_installation(), **QUICK)  # type: ignore[arg-type]
        opened.append(stranger)
        assert stranger.is_host and stranger.session != admin.session  # passed over
        stranger.close()
        # The admin's own quick_join finds its session.
        mine = p2pstate.quick_join(app, identity_dir=admin_home, **QUICK)  # type: ignore[arg-type]
        opened.append(mine)
        assert not mine.is_host and mine.session == admin.session
        mine.close()

        with p2pstate.Lobby(app, interfaces=LOOPBACK, session=admin.session) as lobby:
            admin.set_access(readmode=p2pstate.ANY, writemode=p2pstate.ADMIN_ONLY)
            eventually(
                lambda: (
                    [(i.readmode, i.writemode, i.admin) for i in lobby.sessions]
                    == [("any", "admin_only", None)]
                ),
                timeout=8,
            )
        guest = p2pstate.quick_join(app, identity_dir=new_installation(), **QUICK)  # type: ignore[arg-type]
        opened.append(guest)
        assert not guest.is_host and guest.session == admin.session
    finally:
        for s in reversed(opened):
            s.close()


def test_settings_too_big_for_the_record_with_modes_are_refused_by_join() -> None:
    """Modes take room in the TXT record: join() checks the settings with the
    widest modes at once (it used to fail later, in the I/O thread)."""
    metadata = {f"k{i}": "x" * 100 for i in range(11)}  # fits without modes only
    with pytest.raises(ValueError, match="record"):
        p2pstate.join(
            f"modes-{secrets.token_hex(4)}",
            interfaces=LOOPBACK,
            discovery_window=0.3,
            identity_dir=new_installation(),
            metadata=metadata,
            timeout=3.0,
        )
