"""Arena: a small real-time LAN game on p2pstate and pygame-ce, with no server.

Run it in two or three terminals, or on two or three machines of one LAN:

    pip install -e ".[demo]"
    python demos/arena.py --name alice
    python demos/arena.py --name bob

Move with the arrow keys or WASD and pick up the gems; press Enter to chat and
Esc to quit. The first copy hosts the match. Quit it (or kill it) mid-match:
the others play on, and a banner says who hosts now.

What is shared, and how:

- ``pos/<peer id>``: each player's position, written every frame with
  ``s.set(key, value, wait=False)``. That returns at once, and while one write
  is on its way newer ones replace each other (latest wins): no frame waits.
- ``board``: the gems and the scores. Whoever touches a gem takes it with
  ``apply_op``, so two players reaching it at once cannot both score.
- ``chat``: the last 8 lines, appended with ``apply_op``.
- ``colors``: which color each player wears, handed out with ``apply_op``.

``apply_op`` waits for the host, so the game runs it on a worker thread and the
frame never waits. p2pstate's events reach the game in pygame's own event
queue (``p2pstate.pygame.attach``).

Options for tests and screenshots: ``--bot`` plays by itself, ``--frames N``
stops after N frames, ``--screenshot PATH`` saves a frame. Set
P2PSTATE_INTERFACES=127.0.0.1 to keep everything on this machine, and
SDL_VIDEODRIVER=dummy to run with no window.
"""

from __future__ import annotations

import argparse
import math
import os
import queue
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

try:
    import pygame
except ImportError:
    sys.exit("This demo needs pygame-ce: pip install -e '.[demo]'")

import p2pstate
import p2pstate.pygame as p2pg

APP = "p2pstate-demo-arena"
FPS = 60
WIDTH, HEIGHT = 960, 600
FIELD = pygame.Rect(0, 0, 640, HEIGHT)
SIDEBAR = pygame.Rect(FIELD.right, 0, WIDTH - FIELD.right, HEIGHT)
SPEED = 220  # pixels per second
RADIUS = 16  # a player
GEM = 9  # a gem's half size
GEMS = 6  # gems on the field at any time
CHAT_LINES = 8
BANNER_SECONDS = 4.0

BACKGROUND = (18, 22, 34)
GRID = (30, 36, 52)
PANEL = (26, 30, 44)
TEXT = (225, 228, 240)
DIM = (130, 136, 156)
GOLD = (255, 205, 60)
PALETTE = [
    (235, 87, 87),
    (86, 180, 233),
    (120, 210, 110),
    (240, 160, 60),
    (190, 120, 230),
    (70, 210, 190),
    (240, 120, 190),
    (200, 200, 90),
]
BOT_LINES = ["mine!", "nice one", "so close", "too slow", "over here", "wow", "lag? what lag"]


# =============================================================================
# The shared state: what each value is, and the functions apply_op runs.
# =============================================================================


def spot() -> list[int]:
    """A random place on the field for a gem."""
    margin = 30
    return [
        random.randint(margin, FIELD.width - margin),
        random.randint(margin, FIELD.height - margin),
    ]


def new_board() -> dict[str, Any]:
    return {"gems": {str(i): spot() for i in range(GEMS)}, "next": GEMS, "scores": {}}


class GoneError(Exception):
    """Someone else took the gem first."""


def take(gem: str, name: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """What apply_op runs to take *gem*: it gets a fresh copy of the board on
    every try, so when another player's take lands first it sees that."""

    def fn(board: dict[str, Any]) -> dict[str, Any]:
        if gem not in board["gems"]:
            raise GoneError  # apply_op passes it on and writes nothing
        del board["gems"][gem]
        board["scores"][name] = board["scores"].get(name, 0) + 1
        board["gems"][str(board["next"])] = spot()
        board["next"] += 1
        return board

    return fn


def pick_color(me: str, present: set[str]) -> Callable[[dict[str, int]], dict[str, int]]:
    """Give *me* the first color nobody present wears; forget those who left."""

    def fn(colors: dict[str, int]) -> dict[str, int]:
        colors = {pid: c for pid, c in colors.items() if pid in present and pid != me}
        used = set(colors.values())
        colors[me] = next(i for i in range(len(PALETTE) + 1) if i not in used) % len(PALETTE)
        return colors

    return fn


class Writer(threading.Thread):
    """Runs the writes that wait for the host (apply_op) off the game loop."""

    def __init__(self) -> None:
        super().__init__(name="arena-writer", daemon=True)
        self.jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()

    def run(self) -> None:
        while (job := self.jobs.get()) is not None:
            try:
                job()
            except GoneError:
                pass
            except p2pstate.P2PStateError as exc:  # no host for a while, or closing
                print(f"WRITE FAILED {type(exc).__name__}: {exc}", flush=True)

    def stop(self) -> None:
        self.jobs.put(None)
        self.join(3.0)


# =============================================================================
# The game.
# =============================================================================


class Game:
    def __init__(self, s: p2pstate.SharedState, bot: bool) -> None:
        self.s = s
        self.bot = bot
        self.me = s.me.id
        self.name = s.me.name
        self.key = f"pos/{self.me}"
        self.x, self.y = (float(v) for v in spot())
        self.others: dict[str, list[int]] = {  # peer id -> position, from KEY_CHANGED
            key[4:]: s[key] for key in list(s) if key.startswith("pos/") and key != self.key
        }
        self.taking: set[str] = set()  # gems we asked to take, not yet gone
        self.typing: str | None = None  # the chat line being typed
        self.banner = ("", 0.0)  # text, shown until
        self.notices: list[tuple[str, float]] = []  # "carol joined", until
        self.writer = Writer()
        self.writer.start()
        self.first_chat = self.next_chat = time.monotonic() + random.uniform(1.0, 3.0)
        self.wobble = random.uniform(0, math.tau)
        self.work_ms: list[float] = []
        self.set_us: list[float] = []
        self.big = pygame.font.Font(None, 40)
        self.font = pygame.font.Font(None, 24)
        self.small = pygame.font.Font(None, 20)

    # ----------------------------------------------------------- shared state

    def board(self) -> dict[str, Any]:
        board: dict[str, Any] = self.s.get("board") or {"gems": {}, "scores": {}}
        return board

    def say(self, text: str) -> None:
        line = f"{self.name}: {text}"[:60]
        self.writer.jobs.put(
            lambda: self.s.apply_op(
                "chat", lambda lines: [*lines, line][-CHAT_LINES:], create=True, defaultvalue=[line]
            )
        )

    def color(self, peer_id: str) -> tuple[int, int, int]:
        colors = self.s.get("colors") or {}
        return PALETTE[colors.get(peer_id, 0) % len(PALETTE)]

    # ----------------------------------------------------------- events

    def handle(self, event: pygame.event.Event, now: float) -> bool:
        """One event of pygame's queue; False to quit."""
        if event.type == pygame.QUIT:
            return False
        if event.type == p2pg.KEY_CHANGED:
            if event.key.startswith("pos/") and event.key != self.key:
                self.others[event.key[4:]] = event.value
            elif event.key == "board":
                self.taking &= set(event.value["gems"])
        elif event.type == p2pg.KEY_DELETED and event.key.startswith("pos/"):
            self.others.pop(event.key[4:], None)
        elif event.type == p2pg.HOST_CHANGED:
            text = f"{event.new.name} is now hosting (epoch {event.epoch})"
            self.banner = (text, now + BANNER_SECONDS)
            print(f"BANNER {text}", flush=True)
        elif event.type == p2pg.PEER_JOINED:
            self.notice(f"{event.peer.name} joined", now)
        elif event.type == p2pg.PEER_LEFT:
            self.others.pop(event.peer.id, None)
            how = {"left": "left", "timeout": "timed out"}.get(event.reason, "dropped out")
            self.notice(f"{event.peer.name} {how}", now)
            print(f"PEER_LEFT {event.peer.name} {event.reason}", flush=True)
        elif event.type == pygame.KEYDOWN:
            return self.key_down(event)
        return True

    def notice(self, text: str, now: float) -> None:
        recent = [(t, u) for t, u in self.notices if u > now][-2:]
        self.notices = [*recent, (text, now + 3.0)]

    def key_down(self, event: pygame.event.Event) -> bool:
        if self.typing is None:
            if event.key == pygame.K_ESCAPE:
                return False
            if event.key in (pygame.K_RETURN, pygame.K_KP_ENTER):
                self.typing = ""
            return True
        if event.key in (pygame.K_RETURN, pygame.K_KP_ENTER):
            if self.typing.strip():
                self.say(self.typing.strip())
            self.typing = None
        elif event.key == pygame.K_ESCAPE:
            self.typing = None
        elif event.key == pygame.K_BACKSPACE:
            self.typing = self.typing[:-1]
        elif event.unicode and event.unicode.isprintable() and len(self.typing) < 40:
            self.typing += event.unicode
        return True

    # ----------------------------------------------------------- one frame

    def step(self, dt: float, now: float) -> None:
        dx, dy = self.steer(now)
        norm = math.hypot(dx, dy)
        if norm > 0:
            self.x += SPEED * dt * dx / norm
            self.y += SPEED * dt * dy / norm
        self.x = min(max(self.x, FIELD.left + RADIUS), FIELD.right - RADIUS)
        self.y = min(max(self.y, FIELD.top + RADIUS), FIELD.bottom - RADIUS)

        # The per-frame write: returns at once, coalesced while one is in flight.
        started = time.perf_counter()
        self.s.set(self.key, [round(self.x), round(self.y)], wait=False)
        self.set_us.append((time.perf_counter() - started) * 1e6)

        for gem, (gx, gy) in self.board()["gems"].items():
            if gem not in self.taking and math.hypot(gx - self.x, gy - self.y) < RADIUS + GEM:
                self.taking.add(gem)
                fn = take(gem, self.name)
                self.writer.jobs.put(lambda fn=fn: self.s.apply_op("board", fn))

        if self.bot and now >= self.next_chat:
            first = self.next_chat == self.first_chat
            self.next_chat = now + random.uniform(3.0, 6.0)
            self.say("gl hf" if first else random.choice(BOT_LINES))

    def steer(self, now: float) -> tuple[float, float]:
        if self.bot:
            gems = [g for k, g in self.board()["gems"].items() if k not in self.taking]
            if not gems:
                return 0.0, 0.0
            gx, gy = min(gems, key=lambda g: math.hypot(g[0] - self.x, g[1] - self.y))
            wobble = 0.6 * math.sin(now * 2.5 + self.wobble)
            dx, dy = gx - self.x, gy - self.y
            return dx - wobble * dy, dy + wobble * dx
        keys = pygame.key.get_pressed()
        wasd = self.typing is None  # while typing, letters are text
        left = keys[pygame.K_LEFT] or (wasd and keys[pygame.K_a])
        right = keys[pygame.K_RIGHT] or (wasd and keys[pygame.K_d])
        up = keys[pygame.K_UP] or (wasd and keys[pygame.K_w])
        down = keys[pygame.K_DOWN] or (wasd and keys[pygame.K_s])
        return float(right) - float(left), float(down) - float(up)

    # ----------------------------------------------------------- drawing

    def draw(self, screen: pygame.Surface, now: float, fps: float) -> None:
        screen.fill(BACKGROUND)
        for x in range(FIELD.left, FIELD.right, 40):
            pygame.draw.line(screen, GRID, (x, FIELD.top), (x, FIELD.bottom))
        for y in range(FIELD.top, FIELD.bottom, 40):
            pygame.draw.line(screen, GRID, (FIELD.left, y), (FIELD.right, y))

        board = self.board()
        for gx, gy in board["gems"].values():
            points = [(gx, gy - GEM), (gx + GEM, gy), (gx, gy + GEM), (gx - GEM, gy)]
            pygame.draw.polygon(screen, GOLD, points)
            pygame.draw.polygon(screen, (255, 240, 170), points, 2)

        peers = {p.id: p for p in self.s.peers}
        for pid, pos in list(self.others.items()):
            if pid in peers:
                self.draw_player(screen, pos, peers[pid].name, self.color(pid), False)
        self.draw_player(screen, (self.x, self.y), self.name, self.color(self.me), True)

        text, until = self.banner
        if now < until:
            self.draw_banner(screen, text)
        shown = [note for note, expires in self.notices if expires > now]
        for i, note in enumerate(shown):
            self.blit(screen, self.font, note, DIM, (FIELD.left + 12, FIELD.bottom - 28 - 22 * i))
        self.draw_sidebar(screen, board, peers, fps)

    def draw_player(
        self, screen: pygame.Surface, pos: Any, name: str, color: tuple[int, int, int], me: bool
    ) -> None:
        x, y = round(pos[0]), round(pos[1])
        pygame.draw.circle(screen, (0, 0, 0), (x + 2, y + 3), RADIUS)  # shadow
        pygame.draw.circle(screen, color, (x, y), RADIUS)
        if me:
            pygame.draw.circle(screen, (255, 255, 255), (x, y), RADIUS + 3, 2)
        label = self.small.render(name, True, TEXT)
        screen.blit(label, label.get_rect(midbottom=(x, y - RADIUS - 4)))

    def draw_banner(self, screen: pygame.Surface, text: str) -> None:
        label = self.big.render(text, True, (20, 20, 28))
        box = label.get_rect(center=(FIELD.centerx, FIELD.top + 60)).inflate(36, 20)
        pygame.draw.rect(screen, GOLD, box, border_radius=10)
        screen.blit(label, label.get_rect(center=box.center))

    def draw_sidebar(
        self,
        screen: pygame.Surface,
        board: dict[str, Any],
        peers: dict[str, p2pstate.Peer],
        fps: float,
    ) -> None:
        pygame.draw.rect(screen, PANEL, SIDEBAR)
        left, y = SIDEBAR.left + 18, 16
        y = self.blit(screen, self.big, "ARENA", GOLD, (left, y)) + 2
        y = self.blit(screen, self.small, f"session {self.s.session!r}", DIM, (left, y)) + 10
        host = self.s.host
        hosting = f"{host.name} (epoch {self.s.epoch})" if host else "looking for a host..."
        y = self.blit(screen, self.font, f"host: {hosting}", TEXT, (left, y)) + 14

        y = self.blit(screen, self.font, "SCORES", DIM, (left, y)) + 4
        scores = board.get("scores", {})
        names = {p.name: pid for pid, p in peers.items()}
        for name in sorted(set(scores) | set(names), key=lambda n: (-scores.get(n, 0), n)):
            pid = names.get(name)
            color = self.color(pid) if pid else DIM
            pygame.draw.circle(screen, color, (left + 6, y + 9), 6)
            who = f"{name} (you)" if name == self.name else name
            self.blit(screen, self.font, who, TEXT if pid else DIM, (left + 20, y))
            self.blit(screen, self.font, str(scores.get(name, 0)), GOLD, (SIDEBAR.right - 50, y))
            y += 24
        y += 12

        y = self.blit(screen, self.font, "CHAT", DIM, (left, y)) + 4
        for line in self.s.get("chat", []):
            y = self.blit(screen, self.small, line, TEXT, (left, y)) + 2
        y = max(y + 8, HEIGHT - 90)
        prompt = "Enter: chat" if self.typing is None else f"> {self.typing}_"
        self.blit(screen, self.font, prompt, GOLD if self.typing is not None else DIM, (left, y))
        hint = "arrows/WASD move   Esc quit"
        self.blit(screen, self.small, hint, DIM, (left, HEIGHT - 50))
        players = f"{len(peers)} player" + ("s" if len(peers) != 1 else "")
        stats = f"{players}   {fps:.0f} fps"
        self.blit(screen, self.small, stats, DIM, (left, HEIGHT - 30))

    @staticmethod
    def blit(
        screen: pygame.Surface,
        font: pygame.font.Font,
        text: str,
        color: tuple[int, int, int],
        at: tuple[int, int],
    ) -> int:
        """Draw *text* with its top left at *at*; return the y below it."""
        label = font.render(text, True, color)
        screen.blit(label, at)
        return at[1] + label.get_height()


def play(args: argparse.Namespace) -> int:
    pygame.init()
    screen = pygame.display.set_mode((WIDTH, HEIGHT))
    pygame.display.set_caption(f"p2pstate arena: {args.name or 'you'}")
    # join() returns as soon as it finds a host; only the first player waits the
    # whole window before hosting.
    s = p2pstate.join(APP, args.session, name=args.name, discovery_window=1.5)
    detach = p2pg.attach(s)  # from now on, p2pstate's events arrive in pygame's queue
    if "board" not in s:  # the first player sets the field up
        s.apply_op("board", lambda board: board, create=True, defaultvalue=new_board())
    present = {p.id for p in s.peers}
    s.apply_op("colors", pick_color(s.me.id, present), create=True, defaultvalue={s.me.id: 0})
    host = s.host.name if s.host else "?"
    print(f"READY {s.me.name} host={host} epoch={s.epoch} is_host={s.is_host}", flush=True)

    game = Game(s, bot=args.bot)
    clock = pygame.time.Clock()
    frame, running = 0, True
    shot_at = min(args.shot_at, args.frames - 1) if args.frames else args.shot_at
    try:
        while running and (args.frames is None or frame < args.frames):
            dt = clock.tick(FPS) / 1000
            started = time.perf_counter()
            now = time.monotonic()
            for event in pygame.event.get():
                running = game.handle(event, now) and running
            game.step(min(dt, 0.1), now)
            game.draw(screen, now, clock.get_fps())
            pygame.display.flip()
            work = (time.perf_counter() - started) * 1000
            game.work_ms.append(work)
            if work > 1000 / FPS:  # a frame that took longer than its slot
                print(f"SLOW frame={frame} work_ms={work:.1f} set_us={game.set_us[-1]:.0f}")
            if frame % 30 == 0:
                total = sum(game.board()["scores"].values())
                host = s.host.name if s.host else "?"
                print(f"SCORE {total} frame={frame} host={host}", flush=True)
                s.poll()  # we read events from pygame's queue: drop p2pstate's own copies
            if args.screenshot and frame == shot_at:
                pygame.image.save(screen, args.screenshot)
                print(f"SCREENSHOT {args.screenshot}", flush=True)
            frame += 1
    except KeyboardInterrupt:
        pass
    finally:
        game.writer.stop()
        detach()
        s.close()
        pygame.quit()
    report(game, frame)
    return 0


def report(game: Game, frames: int) -> None:
    if not game.work_ms:
        return
    work = sorted(game.work_ms)
    sets = sorted(game.set_us)
    p99 = work[min(len(work) - 1, int(len(work) * 0.99))]
    print(
        f"FRAMES {frames} work_ms median={statistics.median(work):.2f} p99={p99:.2f} "
        f"max={work[-1]:.2f} over16={sum(w > 16 for w in work)} "
        f"set_us median={statistics.median(sets):.0f} max={sets[-1]:.0f}",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description="A small LAN game on p2pstate and pygame-ce.")
    parser.add_argument("--name", help="your name (default: host name and pid)")
    parser.add_argument("--session", default="default", help="which match to join")
    parser.add_argument("--bot", action="store_true", help="play by itself")
    parser.add_argument("--frames", type=int, help="quit after this many frames")
    parser.add_argument("--screenshot", metavar="PATH", help="save a frame as an image")
    parser.add_argument("--shot-at", type=int, default=300, help="which frame to save")
    return play(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
