"""p2pstate events in pygame's own event queue.

    import pygame
    import p2pstate
    import p2pstate.pygame

    pygame.init()
    s = p2pstate.join("MyName+AstroMaxBlaster")
    p2pstate.pygame.attach(s)
    ...
    for event in pygame.event.get():
        if event.type == p2pstate.pygame.KEY_CHANGED:
            print(event.key, event.value, event.version)
        elif event.type == p2pstate.pygame.HOST_CHANGED:
            print(f"{event.new.name} is now hosting (epoch {event.epoch})")

After :func:`attach`, every p2pstate event is posted to pygame's queue as a
custom event type, so a game handles it in its usual ``pygame.event.get()``
loop, on its own thread. The event carries the fields of the p2pstate event
under the same names: ``KEY_CHANGED`` has ``key``, ``value`` and ``version``;
``KEY_DELETED`` has ``key`` and ``version``; ``PEER_JOINED`` has ``peer``;
``PEER_LEFT`` has ``peer`` and ``reason``; ``PEER_UPDATED`` (a peer changed
its profile, ``set_profile``) has ``peer``; ``HOST_CHANGED`` has ``old``,
``new`` and ``epoch``; ``WRITES_ROLLED_BACK`` has ``writes`` and ``mine``;
``EXPELLED`` (this peer was banned or is no longer authorized) has ``reason``.

``MESSAGE`` is reserved for the messages a later version of p2pstate sends
(``s.broadcast(...)``). No p2pstate event is a message yet: this module maps any
event whose class is named ``Message`` to ``MESSAGE``, with that class's fields
(``sender``, ``payload``, ...), so it works as soon as messages land.

The event types come from ``pygame.event.custom_type()``, allocated once when
this module is first imported. It works with pygame-ce (``pip install
p2pstate[demo]``) and with pygame 2; neither is a dependency of p2pstate itself.

Events are posted from the state's callback thread (see ``on_change``), never
from its I/O thread; pygame 2's ``event.post`` is safe to call from any thread
(SDL's queue has its own lock; pygame 1 needed ``fastevent`` for that). Call
``pygame.init()`` (or ``pygame.display.init()``) before :func:`attach`, and
detach (or close the state) before ``pygame.quit()``.
An event pygame refuses (its queue is full, or the type is blocked with
``pygame.event.set_blocked``) is dropped and counted in the ``dropped``
attribute of what :func:`attach` returns; it never raises.

p2pstate still keeps every event for ``s.poll()`` too, up to the
``max_pending_events`` option. A game that only reads pygame's queue can empty
that buffer now and then with ``s.poll()``.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

try:
    import pygame  # type: ignore[import-not-found,unused-ignore]
except ImportError as exc:  # pragma: no cover (the demo extra is not installed)
    raise ImportError(
        "p2pstate.pygame needs pygame-ce (or pygame 2): pip install 'p2pstate[demo]' "
        "(or pip install pygame-ce)"
    ) from exc

if TYPE_CHECKING:
    from .state import SharedState

__all__ = [
    "EVENT_TYPES",
    "EXPELLED",
    "HOST_CHANGED",
    "KEY_CHANGED",
    "KEY_DELETED",
    "MESSAGE",
    "PEER_JOINED",
    "PEER_LEFT",
    "PEER_UPDATED",
    "WRITES_ROLLED_BACK",
    "Attachment",
    "attach",
]

log = logging.getLogger(__name__)

if not hasattr(pygame.event, "custom_type"):  # pragma: no cover (pygame 1.9)
    raise ImportError("p2pstate.pygame needs pygame 2 or pygame-ce: pip install 'p2pstate[demo]'")

KEY_CHANGED: int = pygame.event.custom_type()
KEY_DELETED: int = pygame.event.custom_type()
PEER_JOINED: int = pygame.event.custom_type()
PEER_LEFT: int = pygame.event.custom_type()
HOST_CHANGED: int = pygame.event.custom_type()
MESSAGE: int = pygame.event.custom_type()
WRITES_ROLLED_BACK: int = pygame.event.custom_type()
EXPELLED: int = pygame.event.custom_type()
PEER_UPDATED: int = pygame.event.custom_type()

#: The pygame event type of each p2pstate event class, by class name (so that a
#: class added later, such as Message, needs no import here).
EVENT_TYPES: dict[str, int] = {
    "KeyChanged": KEY_CHANGED,
    "KeyDeleted": KEY_DELETED,
    "PeerJoined": PEER_JOINED,
    "PeerLeft": PEER_LEFT,
    "PeerUpdated": PEER_UPDATED,
    "HostChanged": HOST_CHANGED,
    "Message": MESSAGE,
    "WritesRolledBack": WRITES_ROLLED_BACK,
    "Expelled": EXPELLED,
}


class Attachment:
    """What :func:`attach` returns: call it to detach (again is harmless).

    ``posted`` and ``dropped`` count the events handed to pygame and those it
    refused (queue full, type blocked, pygame not initialised)."""

    def __init__(self, state: SharedState) -> None:
        self.posted = 0
        self.dropped = 0
        self._remove = state.on_change(self._on_event)

    def __call__(self) -> None:
        self._remove()

    def _on_event(self, event: object) -> None:
        """On the state's callback thread: post *event* to pygame's queue."""
        kind = EVENT_TYPES.get(type(event).__name__)
        if kind is None:
            return  # an event this version does not know: nothing to post
        fields = _fields(event)
        try:
            ok = bool(pygame.event.post(pygame.event.Event(kind, fields)))
        except (pygame.error, ValueError, TypeError):
            ok = False
        if ok:
            self.posted += 1
            return
        self.dropped += 1
        if self.dropped == 1:
            log.warning(
                "pygame refused a p2pstate event (queue full, type blocked, or pygame "
                "not initialised); counting drops in attach(...).dropped"
            )


def attach(state: SharedState) -> Attachment:
    """From now on, post every event of *state* to pygame's event queue.

    Returns a function that stops it (an :class:`Attachment`, which also
    counts what was posted and dropped). Needs ``pygame.init()`` first."""
    if not pygame.display.get_init():
        raise RuntimeError("call pygame.init() before p2pstate.pygame.attach()")
    return Attachment(state)


def _fields(event: object) -> dict[str, Any]:
    """The fields of a p2pstate event, by name ("type" is pygame's own)."""
    if dataclasses.is_dataclass(event) and not isinstance(event, type):
        names = [f.name for f in dataclasses.fields(event)]
    else:
        names = list(getattr(event, "__slots__", ())) or list(getattr(event, "__dict__", {}))
    return {
        ("type_" if name == "type" else name): getattr(event, name)
        for name in names
        if hasattr(event, name)
    }
