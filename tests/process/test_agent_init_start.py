"""The guest's way of starting the agent, run here: socket bound first, agent imported after.

The program is taken from farm/image/recipe/init.sh.in as it is, so what the image runs is what is
tested (only the interpreter differs: this host's python instead of the guest's).
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path

from farm.agent.protocol import client_handshake
from farm.qemu import free_port
from farm.resources import image_recipe_dir

REPO = Path(__file__).resolve().parents[2]
INIT = image_recipe_dir() / "init.sh.in"
#: stdlib modules the agent needs only for task sets or after the first handshake: each
#: costs milliseconds to tens of milliseconds in a fresh TCG guest before it could listen
HEAVY = {
    "logging",
    "dataclasses",
    "inspect",
    "ast",
    "pathlib",
    "typing",
    "subprocess",
    "argparse",
    "tempfile",
    "shutil",
    "random",
    "ctypes",
    "ipaddress",
    "urllib",
    "traceback",
    "socket",  # its enum set-up alone costs ~3 M instructions: the agent uses _socket
    "re",  # with enum: the agent speaks JSON through _json (farm.agent.wirejson)
    "enum",
    "selectors",  # the accept loop polls two descriptors with select.poll
    "hashlib",  # builds every builtin hash (_sha3, _blake2, ...): protocol takes _sha256
    "hmac",  # and warnings with it: protocol's HMAC-SHA256 is its own, over _sha256
    "warnings",
}


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}


def init_program() -> str:
    """The python program init.sh.in runs to start the agent (not the identity=wait one)."""
    match = re.search(r"python3 \$PYFLAGS -c '(.*?)' \\\n", INIT.read_text(), re.S)
    assert match, "the agent's start in init.sh.in changed shape"
    return match.group(1)


def test_init_program_serves_on_the_socket_it_bound_first() -> None:
    port, token = free_port(), secrets.token_hex(8)
    argv = [sys.executable, "-S", "-c", init_program(), str(port)]
    argv += ["--host", "0.0.0.0", "--port", str(port), "--token", token]
    proc = subprocess.Popen(argv, env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith(f"farm-init: listening on port {port}"), first
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.settimeout(30)
            channel = client_handshake(sock, token)
        assert channel.hello["type"] == "hello"
        assert proc.stdout.readline().startswith(f"farm-agent listening on 0.0.0.0:{port} ")
    finally:
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(30)
    assert status == 0


def test_a_bind_failure_ends_the_init_program_with_an_error() -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        argv = [sys.executable, "-S", "-c", init_program(), str(port), "--token", "t"]
        proc = subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "Address already in use" in proc.stderr


def test_the_agent_imports_nothing_heavy_before_it_serves(tmp_path: Path) -> None:
    # the guest's tree: an empty farm/__init__.py (the host's imports re, enum, ...)
    (tmp_path / "farm").mkdir()
    (tmp_path / "farm" / "__init__.py").write_text("")
    (tmp_path / "farm" / "agent").symlink_to(REPO / "farm" / "agent")
    probe = (
        "import sys; sys.modules['_hashlib'] = None\n"
        "before = set(sys.modules)\n"
        "import farm.agent.__main__\n"
        "print(' '.join(sorted(set(sys.modules) - before)))"
    )
    env = {**_env(), "PYTHONPATH": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run(
        [sys.executable, "-S", "-c", probe],
        env=env,
        cwd=tmp_path,  # "" on sys.path: not the checkout's farm
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    loaded = set(out.stdout.split())
    assert "farm.agent.server" in loaded
    assert not loaded & HEAVY, sorted(loaded & HEAVY)


def identity_program() -> str:
    """The python program init.sh.in runs for farm.identity=boot/wait."""
    match = re.search(r"python3 -S -c '\n(.*?)' \"\$IDENTITY\"", INIT.read_text(), re.S)
    assert match, "the identity start in init.sh.in changed shape"
    return match.group(1)


def test_the_identity_boot_imports_no_json_package_or_socket_module(tmp_path: Path) -> None:
    # the guest's tree; on this host there is no virtio port, so the program stops there
    (tmp_path / "farm").mkdir()
    (tmp_path / "farm" / "__init__.py").write_text("")
    (tmp_path / "farm" / "agent").symlink_to(REPO / "farm" / "agent")
    env = {**_env(), "PYTHONPATH": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run(
        [sys.executable, "-S", "-X", "importtime", "-c", identity_program(), "boot"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "no virtio port farm.identity" in out.stderr, out.stderr[-2000:]
    imported = {line.rsplit("|", 1)[1].strip() for line in out.stderr.splitlines() if "|" in line}
    assert "farm.agent.__main__" in imported
    heavy = {"json", "socket", "re", "enum"}
    assert not imported & heavy, sorted(imported & heavy)
