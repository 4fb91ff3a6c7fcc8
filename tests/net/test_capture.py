"""With a secret, no value crosses the wire in plaintext: what an eavesdropper
on the LAN would record, captured on loopback with a raw packet socket.

Needs root (CAP_NET_RAW) and Linux (AF_PACKET); skipped otherwise. Only the
loopback interface is read, and nothing is sent by the capture.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
from collections import defaultdict
from collections.abc import Iterator

import pytest
from netkit import Join

_ETH_P_ALL = 0x0003
_ETH_P_IP = 0x0800
_ETH_HEADER = 14
_PACKET_OUTGOING = 4  # on lo every packet shows twice: keep the incoming copy
_TCP = 6


class LoopbackCapture:
    """Every TCP payload seen on ``lo`` while it runs, by (source, destination) port."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.05)
        self.flows: dict[tuple[int, int], bytearray] = defaultdict(bytearray)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lo-capture", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame, address = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            if address[2] != _PACKET_OUTGOING:
                self._take(frame)

    def _take(self, frame: bytes) -> None:
        if int.from_bytes(frame[12:14], "big") != _ETH_P_IP:
            return
        ip = frame[_ETH_HEADER:]
        if ip[9] != _TCP:
            return
        header = (ip[0] & 0x0F) * 4
        tcp = ip[header : int.from_bytes(ip[2:4], "big")]
        ports = (int.from_bytes(tcp[0:2], "big"), int.from_bytes(tcp[2:4], "big"))
        payload = tcp[(tcp[12] >> 4) * 4 :]
        if payload:
            self.flows[ports] += payload

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()

    def on_ports(self, ports: set[int]) -> list[bytes]:
        """The byte streams of every TCP connection with one end on *ports*."""
        return [bytes(data) for (a, b), data in self.flows.items() if a in ports or b in ports]


@pytest.fixture
def capture() -> Iterator[LoopbackCapture]:
    if not hasattr(socket, "AF_PACKET"):
        pytest.skip("needs AF_PACKET raw sockets (Linux)")
    if os.geteuid() != 0:
        pytest.skip("capturing packets on lo needs root (CAP_NET_RAW)")
    try:
        cap = LoopbackCapture()
    except PermissionError as exc:
        pytest.skip(f"no raw socket allowed here: {exc}")
    yield cap
    cap.stop()


@pytest.mark.parametrize("secured", [False, True], ids=["no-secret", "secret"])
def test_no_value_in_plaintext_with_a_secret(
    join: Join, capture: LoopbackCapture, secured: bool
) -> None:
    secret = f"secret-{secrets.token_hex(8)}"
    options = {"secret": secret} if secured else {}
    host = join(**options)
    peer = join(**options)
    key, value, reply = (f"marker-{secrets.token_hex(12)}" for _ in range(3))
    peer[key] = value  # acknowledged: the host holds it
    host[key + "-reply"] = reply
    assert peer[key + "-reply"] == reply and host[key] == value
    peer.close()
    host.close()
    ports = {int(s.me.endpoint.rsplit(":", 1)[1]) for s in (host, peer)}
    capture.stop()
    streams = capture.on_ports(ports)
    assert sum(map(len, streams)) > 1000, "the capture saw no session traffic"
    seen = b"".join(streams)
    if not secured:
        # The control: without a secret an eavesdropper reads it all.
        assert value.encode() in seen and key.encode() in seen and reply.encode() in seen
        return
    for marker in (key, value, reply, secret, peer.me.name, host.me.name):
        assert marker.encode() not in seen, marker
