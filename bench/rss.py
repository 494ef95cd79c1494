"""Host memory of idle guests: RSS and PSS of 1 guest vs N guests, cold and warm (issue 18).

For each mode the qemu backend (user-mode network, TCG unless ``--accel``)
spawns one guest, waits for its agent's handshake and lets it idle for
``--settle`` seconds, then measures its processes; then it spawns the
other N-1 guests, lets them idle, and measures the sum over all N guests.
``rss``/``pss``/``uss`` come from psutil's ``memory_full_info`` (PSS splits a
page shared by k processes into k parts, so it is the honest total; USS is
what each process alone holds), summed over every process farm runs per guest:
QEMU and the screen session it runs in (``N_qemu_only``: the QEMUs alone, the
figure before screens were counted). ``last_guest_ram_file``: how much of the
template's RAM file the last guest has resident and how much it copied on write;
``last_guest_private``: what its QEMU alone holds, by kind (TCG translation
buffer, RAM copied on write, heap, other anonymous, relocated library data);
``last_guest_tcg``: how many blocks TCG translated for it and their host code
(``info jit``), after its spawn returned (restored, warmed up, identity taken),
after the first handshake and once settled (``last_guest_tcg_stages``).
``--no-warm-up``: restored guests skip the warm-up set (farm always runs it, for
the first set's sake: farm.agent.warmup), to show what it costs an idle guest.
``--tb-size`` caps TCG's translation buffer (profile ``tb_size``), most of an
idle QEMU's own memory. Modes:

- ``cold``: every guest boots (``warm_start = false``);
- ``warm``: guests restored from the template, RAM shared copy-on-write
  (farm.backend.snapshot_mem: each QEMU maps the template's RAM file privately);
- ``warm-private``: restored with the RAM inside the snapshot (each guest its
  own copy: the warm start before shared memory).

The backend's spare guest (farm.backend.qemu_spare) is turned off: it maps the
template's RAM file too, and counting guests without it would hand it part of
their shared pages' PSS. A farm holds that one spare on top (about one guest).

The issue's target: N=7 warm guests' total <= 3 x one guest. Prints one JSON
document (MiB, ratios, spawn -> session seconds)::

    .venv/bin/python bench/rss.py [--guests 7] [--settle 5] [--modes cold,warm,warm-private]
                                  [--tb-size MIB] [--network user|bridge]

``--network bridge`` (root) runs the same inside a fresh network namespace
``farmbench-XXXX`` (farm's bridge, dhcpd and taps there; deleted afterwards):
``spawn_session_s`` is then the bridged spawn -> authenticated session time.

Re-run it quietly (it is noisy on a busy host): ``python bench/compare.py
--script-from after --before <checkout> --runs 3 -- rss.py`` (the before side
has no shared RAM: its ``warm`` equals ``warm-private``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

from farm.agent.protocol import ProtocolViolation, client_handshake
from farm.backend.base import Guest
from farm.backend.qemu import QemuBackend
from farm.config import FarmConfig
from farm.qemu.qmp import QmpError

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from common import netns_inode, netns_processes  # noqa: E402

TOKEN = "bench-rss-token"
NETNS_ENV = "FARM_BENCH_RSS_NETNS"
MODES = ("cold", "warm", "warm-private")
JIT_FIGURES = {"TB count": "blocks", "TB flush count": "flushes"}  # of HMP "info jit"
JIT_CODE = re.compile(r"^gen code size\s+(\d+)/", re.M)  # bytes of host code in use


def wait_session(guest: Guest, timeout: float) -> None:
    """Return once the guest's agent completes a handshake with its key."""
    deadline = time.monotonic() + timeout
    while True:
        host, port = guest.address(timeout)
        try:
            with socket.create_connection((host, port), timeout=5.0) as sock:
                client_handshake(sock, TOKEN)
                return
        except (OSError, ProtocolViolation, ValueError):
            if not guest.alive() or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def helpers(pid: int) -> list[int]:
    """The processes farm started for the guest whose QEMU is ``pid``: its screen session."""
    try:
        parent = psutil.Process(pid).parent()
    except psutil.Error:
        return []
    return [parent.pid] if parent is not None and "screen" in parent.name().lower() else []


def memory(pids: list[int]) -> dict[str, float]:
    """Summed RSS, PSS and USS of ``pids`` in MiB."""
    total = {"rss": 0.0, "pss": 0.0, "uss": 0.0}
    for pid in pids:
        info = psutil.Process(pid).memory_full_info()
        for key in total:
            total[key] += getattr(info, key) / (1 << 20)
    return {k: round(v, 1) for k, v in total.items()}


def ram_file(pid: int) -> dict[str, float]:
    """MiB of the template's RAM file (``*.ram``) mapped in ``pid``: resident, copied on write."""
    for m in psutil.Process(pid).memory_maps(grouped=True):
        if m.path.endswith(".ram"):
            return {
                "rss": round(m.rss / (1 << 20), 1),
                "cow": round(m.anonymous / (1 << 20), 1),  # copied pages are anonymous
            }
    return {}


def private_breakdown(pid: int) -> dict[str, float]:
    """MiB that ``pid`` alone holds (private dirty), by kind of mapping.

    ``tcg_tb``: the TCG translation buffer (the anonymous rwx mapping);
    ``ram_cow``: template RAM pages the guest copied on write (its anonymous
    pages: the file's own count as private dirty while one guest alone maps them
    before they are written back); ``heap``: malloc's main heap; ``anon``: other
    anonymous memory (thread arenas, large allocations, ROM blocks, stacks);
    ``files``: relocated data of QEMU and its libraries.
    """
    out = dict.fromkeys(("tcg_tb", "ram_cow", "heap", "anon", "files"), 0.0)
    for m in psutil.Process(pid).memory_maps(grouped=False):
        path, perms = m.path, m.perms
        kind = (
            "tcg_tb"
            if path in ("", "[anon]") and "x" in perms
            else "ram_cow"
            if path.endswith(".ram")
            else "heap"
            if path == "[heap]"
            else "anon"
            if not path or path.startswith("[")
            else "files"
        )
        out[kind] += (m.anonymous if kind == "ram_cow" else m.private_dirty) / (1 << 20)
    return {k: round(v, 1) for k, v in out.items()}


def translations(guest: Guest) -> dict[str, float]:
    """TCG's translated blocks, flushes and host code MiB of ``guest``'s QEMU ({} if none).

    What the guest ran since its QEMU started (after a restore: since the restore)
    is what fills the translation buffer, the largest part of an idle QEMU's own memory.
    """
    qmp = getattr(getattr(guest, "process", None), "qmp", None)
    if qmp is None:
        return {}
    try:
        text = str(qmp.execute("human-monitor-command", **{"command-line": "info jit"}))
    except QmpError:  # KVM: no TCG
        return {}
    counts = dict(re.findall(r"^(TB count|TB flush count)\s+(\d+)", text, re.M))
    out: dict[str, float] = {
        key: int(counts[label]) for label, key in JIT_FIGURES.items() if label in counts
    }
    code = JIT_CODE.search(text)
    if code is not None:
        out["code_mib"] = round(int(code.group(1)) / (1 << 20), 1)
    return out


def skip_warm_up() -> bool:
    """``--no-warm-up``: restored guests go straight to their identity (False if no warm-up)."""
    from farm.backend import snapshot

    if not hasattr(snapshot, "warm_up_guest"):  # a before checkout without the warm-up
        return False
    snapshot.warm_up_guest = lambda *args, **kwargs: None
    return True


def run_mode(mode: str, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Spawn 1 then N guests in ``mode``; their memory and spawn -> session times."""
    config = FarmConfig(
        backend="qemu",
        state_dir=root / mode / "state",
        log_dir=root / mode / "log",
        image_dir=Path(args.image_dir).resolve(),
        boot_timeout=args.timeout,
        warm_start=mode != "cold",
        network=args.network,
        profile={
            "accel": args.accel,
            "memory": args.memory,
            **({"tb_size": args.tb_size} if args.tb_size else {}),
        },
    )
    backend = QemuBackend(config)
    backend.shared_ram = mode == "warm"  # a before checkout without the attribute ignores it
    spares = getattr(backend, "spares", None)
    if spares is not None:  # the guests alone: a spare maps the template's RAM file too, so
        # it would take a share of each page's PSS away from the guests it is not counted with
        spares.off = "bench/rss.py measures the guests alone"
    guests: list[Guest] = []
    seconds: list[float] = []
    stages: dict[str, dict[str, float]] = {}  # the last guest's translations
    try:
        if mode != "cold":  # the template is built once, before the timed spawns
            backend.spawn(f"qemu{args.guests + 1}", TOKEN).destroy()
        out: dict[str, Any] = {}
        for count in (1, args.guests):
            while len(guests) < count:
                started = time.monotonic()
                guests.append(backend.spawn(f"qemu{len(guests) + 1}", TOKEN))
                asked = time.monotonic()
                if len(guests) == args.guests:
                    stages["spawned"] = translations(guests[-1])
                started += time.monotonic() - asked  # untimed
                wait_session(guests[-1], args.timeout)
                seconds.append(time.monotonic() - started)
            if len(guests) == args.guests:
                stages["session"] = translations(guests[-1])
            time.sleep(args.settle)
            qemus = [g.pid for g in guests if g.pid is not None]
            out[str(count)] = memory([*qemus, *(h for pid in qemus for h in helpers(pid))])
            out[f"{count}_qemu_only"] = memory(qemus)
        if guests[-1].pid is not None:
            out["last_guest_ram_file"] = ram_file(guests[-1].pid)
            out["last_guest_private"] = private_breakdown(guests[-1].pid)
            out["last_guest_tcg"] = stages["settled"] = translations(guests[-1])
            out["last_guest_tcg_stages"] = stages
        one, all_ = out["1"], out[str(args.guests)]
        out["ratio"] = {k: round(all_[k] / one[k], 2) for k in one if one[k]}
        one, all_ = out["1_qemu_only"], out[f"{args.guests}_qemu_only"]
        out["ratio_qemu_only"] = {k: round(all_[k] / one[k], 2) for k in one if one[k]}
        out["spawn_session_s"] = {
            "median": round(statistics.median(seconds), 3),
            "max": round(max(seconds), 3),
        }
        return out
    finally:
        for guest in guests:
            guest.destroy()
        backend.close()


def in_namespace(argv: list[str]) -> int:
    """``--network bridge``: run this bench again inside a fresh namespace, then delete it."""
    name = f"farmbench-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=10)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, timeout=10)
        child = ["ip", "netns", "exec", name, sys.executable, str(Path(__file__).resolve())]
        return subprocess.run([*child, *argv], env={**os.environ, NETNS_ENV: name}).returncode
    finally:
        left = netns_processes(name)
        for proc in left:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(left, timeout=5)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10, check=False)
        if netns_inode(name) is not None:
            print(f"warning: namespace {name} could not be deleted", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--guests", type=int, default=7)
    parser.add_argument("--settle", type=float, default=5.0, help="idle seconds before measuring")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--image-dir", default="images")
    parser.add_argument("--accel", default="tcg")
    parser.add_argument("--memory", type=int, default=256, help="guest MiB")
    parser.add_argument("--timeout", type=float, default=180.0)
    parser.add_argument(
        "--network",
        default="user",
        choices=("user", "bridge"),
        help="bridge (root): farm's bridge + dhcpd in a private network namespace",
    )
    parser.add_argument("--tb-size", type=int, default=0, help="profile tb_size (MiB; 0: QEMU's)")
    parser.add_argument(
        "--no-warm-up",
        action="store_true",
        help="restored guests skip the warm-up set (what it costs; farm always runs it)",
    )
    args = parser.parse_args(argv)
    if args.network == "bridge" and not os.environ.get(NETNS_ENV):
        return in_namespace(sys.argv[1:] if argv is None else argv)
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown mode(s) {sorted(unknown)}; known: {', '.join(MODES)}")
    warm_up = not (args.no_warm_up and skip_warm_up())
    root = Path(tempfile.mkdtemp(prefix="farmrss"))
    try:
        doc: dict[str, Any] = {
            "guests": args.guests,
            "memory_mib": args.memory,
            "accel": args.accel,
            "tb_size": args.tb_size,
            "network": args.network,
            "warm_up": warm_up,
            "unit": "MiB, summed over the guests' QEMU and screen processes",
        }
        for mode in modes:
            doc[mode] = run_mode(mode, args, root)
        print(json.dumps(doc, indent=1))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
