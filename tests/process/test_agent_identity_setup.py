"""/init's identity program (farm.identity=wait|boot) run here: the agent is set up first.

The program is taken from farm/image/recipe/init.sh.in as it is; only what a host must not do
is swapped out (set the clock and host name, reseed the kernel RNG), and the virtio port
farm.identity is a pseudo-terminal in raw mode. A warm-start template saves the guest while
the program waits for its identity, so whatever the agent sets up before that wait is in the
snapshot: no restored guest runs (or, under TCG, translates) it again.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import signal
import socket
import subprocess
import sys
import time
import tty
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from farm.agent.protocol import Channel, client_handshake, guest_key
from farm.qemu import free_port
from tests.process.test_agent_init_start import REPO, identity_program

TIMEOUT = 60.0


def _program(sysfs: Path, device: str) -> str:
    """The identity program, with the host-changing calls swapped out (each must be there)."""
    program = identity_program()
    swaps = {
        "from farm.agent.__main__ import main\n": "from farm.agent.__main__ import main\n"
        "time.clock_settime = lambda clock, value: None\n"
        "socket.sethostname = lambda name: None\n",
        'base = "/sys/class/virtio-ports"': f"ioctl = lambda *args: 0\nbase = {str(sysfs)!r}",
        'dev = "/dev/" + port': f"dev = {device!r}",
    }
    for old, new in swaps.items():
        assert program.count(old) == 1, f"the identity program changed shape: {old!r}"
        program = program.replace(old, new)
    return program


class Guest:
    """The identity program in a process; its identity port is a pty (``port`` its host end)."""

    def __init__(self, tmp_path: Path, mode: str) -> None:
        self.tcp = free_port()
        sysfs = tmp_path / "virtio-ports"
        (sysfs / "vport0p1").mkdir(parents=True)
        (sysfs / "vport0p1" / "name").write_text("farm.identity\n")
        self.port, self._pty = os.openpty()
        tty.setraw(self._pty)  # no echo, no line editing: bytes as a virtio port passes them
        argv = [sys.executable, "-S", "-c", _program(sysfs, os.ttyname(self._pty)), mode]
        argv += ["--host", "0.0.0.0", "--port", str(self.tcp)]
        env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path)}
        env.pop("FARM_STATIC_IP", None)
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
        self._buf = b""

    def line(self) -> bytes:
        """The next line the guest writes on its identity port."""
        deadline = time.monotonic() + TIMEOUT
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            assert left > 0 and self.proc.poll() is None, (self._buf, self.proc.returncode)
            if select.select([self.port], [], [], min(left, 0.5))[0]:
                self._buf += os.read(self.port, 4096)
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def send(self, ident: dict[str, object]) -> None:
        os.write(self.port, json.dumps(ident).encode() + b"\n")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(TIMEOUT)
        finally:
            os.close(self.port)
            os.close(self._pty)


@pytest.fixture
def template(tmp_path: Path) -> Iterator[Guest]:
    guest = Guest(tmp_path, "wait")
    try:
        yield guest
    finally:
        if guest.proc.poll() is None:
            guest.proc.kill()
            guest.proc.wait(TIMEOUT)


def _identity(name: str, token: str) -> dict[str, object]:
    return {"name": name, "token": token, "time": time.time(), "seed": secrets.token_hex(32)}


def _request(channel: Channel, op: str) -> dict[str, Any]:
    channel.send({"type": "request", "id": 1, "op": op, "args": {}})
    deadline = time.monotonic() + TIMEOUT
    while True:
        message = channel.recv(deadline)
        if message.get("type") == "reply":
            assert message["ok"], message
            return dict(message["result"])


def test_the_template_listens_before_its_identity_and_serves_nobody_until_it_comes(
    template: Guest,
) -> None:
    assert template.line() == b"farm-identity: waiting"  # the host saves the template now
    early = socket.create_connection(("127.0.0.1", template.tcp), timeout=TIMEOUT)
    with early:  # the listener is in the snapshot: a client's connect is taken at once...
        early.setblocking(False)
        with pytest.raises(BlockingIOError):  # ...but no greeting: nothing is accepted yet
            early.recv(1)
        early.setblocking(True)
        early.settimeout(TIMEOUT)
        token = secrets.token_hex(8)
        template.send(_identity("g1", guest_key(token, "g1")))
        assert template.line() == b"farm-identity: ok g1"
        deadline = time.monotonic() + TIMEOUT
        channel = client_handshake(early, token, deadline, guest="g1")  # the waiting client
        status = _request(channel, "status")
    assert status["before_identity"] is True
    assert status["pid"] == template.proc.pid
    assert status["warm_up"], status  # the template's private set ran in this very process
    with socket.create_connection(("127.0.0.1", template.tcp), timeout=TIMEOUT) as other:
        with pytest.raises(PermissionError):  # only the key of this guest opens it
            client_handshake(other, guest_key(token, "g2"), time.monotonic() + TIMEOUT)
    assert template.stop() == 0


def test_a_spare_warms_up_again_before_its_identity(template: Guest) -> None:
    assert template.line() == b"farm-identity: waiting"
    template.send({"warm_up": True})
    assert template.line() == b"farm-identity: warm"
    token = secrets.token_hex(8)
    template.send(_identity("g2", guest_key(token, "g2")))
    assert template.line() == b"farm-identity: ok g2"
    with socket.create_connection(("127.0.0.1", template.tcp), timeout=TIMEOUT) as sock:
        channel = client_handshake(sock, token, time.monotonic() + TIMEOUT, guest="g2")
        status = _request(channel, "status")
    assert len(status["warm_up"]) == 2, status
    assert template.stop() == 0


def test_a_cold_boot_serves_once_its_identity_comes(tmp_path: Path) -> None:
    guest = Guest(tmp_path, "boot")
    try:
        assert guest.line() == b"farm-identity: waiting"
        token = secrets.token_hex(8)
        guest.send(_identity("c1", guest_key(token, "c1")))
        assert guest.line() == b"farm-identity: ok c1"
        with socket.create_connection(("127.0.0.1", guest.tcp), timeout=TIMEOUT) as sock:
            channel = client_handshake(sock, token, time.monotonic() + TIMEOUT, guest="c1")
            status = _request(channel, "status")
        assert status["before_identity"] is True and status["warm_up"] == []
        assert guest.stop() == 0
    finally:
        if guest.proc.poll() is None:
            guest.proc.kill()
            guest.proc.wait(TIMEOUT)
