"""NetJobs start skew: three agents, one synchronised ``date +%s.%N`` test, many rounds.

Prints one JSON document: the measured start skew (spread of the agents'
recorded start instants, corrected for each agent's clock offset) and the
spread of the wall-clock stamps the commands printed, per round summarised
as median / p95 / max in milliseconds, plus the clock-offset RTTs.

    .venv/bin/python bench/netjobs_skew.py [--rounds 20] [--where loopback|netns|guests]

``loopback``: agents on 127.0.0.1 (one port each). ``netns`` (root): a private
namespace ``farmbench-XXXX`` with a bridge holding 10.203.0.1-3, one agent on
each address; the bench re-executes itself inside it and deletes it after.
``guests`` (root): in such a namespace (without the bridge), farm's qemu
backend in bridged mode brings up ``br0`` and its dhcpd and boots three TCG
guests (``qemu1..3``) on taps; the rounds run against their agents at their
reserved addresses, with the token of the backend's state dir. Whatever is
left in the namespace afterwards (QEMU, screen, dhcpd) is killed before the
namespace is deleted, also when the bench fails or is interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import psutil  # noqa: E402
from common import netns_processes, percentile  # noqa: E402

from farm.backend.base import Guest  # noqa: E402
from farm.backend.qemu import QemuBackend  # noqa: E402
from farm.config import FarmConfig  # noqa: E402
from farm.netjobs import run_config  # noqa: E402
from farm.session.agent import FarmSession  # noqa: E402
from farm.session.token import resolve_token  # noqa: E402

NETNS_ENV = "FARM_BENCH_NETNS"
SCRATCH_ENV = "FARM_BENCH_SCRATCH"
NS_ADDRESSES = ["10.203.0.1", "10.203.0.2", "10.203.0.3"]
GUESTS = 3
BOOT_TIMEOUT = 180.0


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(v * 1e3 for v in values)
    return {
        "median": round(statistics.median(ordered), 3),
        "p95": round(percentile(ordered, 95), 3),
        "max": round(ordered[-1], 3),
        "min": round(ordered[0], 3),
    }


def start_agents(
    hosts: list[str], token: str, workdir: Path
) -> list[tuple[subprocess.Popen[bytes], str]]:
    """One agent per host (port from its port file); returns (process, "host:port")."""
    agents = []
    for i, host in enumerate(hosts):
        port_file = workdir / f"agent{i}.port"
        argv = [sys.executable, "-m", "farm.agent", "--host", host, "--port", "0",
                "--port-file", str(port_file), "--token", token]  # fmt: skip
        with (workdir / f"agent{i}.log").open("wb") as log:
            proc = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=log)
        deadline = time.monotonic() + 20
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"agent on {host} did not start")
            time.sleep(0.05)
        agents.append((proc, f"{host}:{port_file.read_text().strip()}"))
    return agents


def write_rounds(path: Path, addresses: list[str], rounds: int) -> None:
    """A NetJobs file of ``rounds`` tests, each one ``date +%s.%N`` per address."""
    lines = "\n".join(f'{addr}: "date +%s.%N"' for addr in addresses)
    path.write_text("".join(f"r{i}:\n-generaltimeout: 30s\n{lines}\nend\n" for i in range(rounds)))


def _stamp(output: str) -> float | None:
    """The wall-clock stamp a ``date +%s.%N`` printed; None if it is no number."""
    try:
        return float(output)
    except ValueError:
        return None


def summarise(results: list[Any], agents: int, rounds: int) -> dict[str, Any]:
    """Median / p95 / max of the start skews, printed-date spreads and clock RTTs."""
    skews, stamps, rtts, unparsed = [], [], [], []
    for result in results:
        if not result.passed or result.skew is None:
            raise SystemExit(f"round {result.label} failed: {[r.detail for r in result.results]}")
        skews.append(result.skew)
        printed = [_stamp(r.output) for r in result.results]
        numbers = [x for x in printed if x is not None]
        if len(numbers) < len(printed):
            unparsed += [r.output.strip() for r in result.results]
        else:
            stamps.append(max(numbers) - min(numbers))
        rtts += [r.rtt for r in result.results if r.rtt is not None]
    doc: dict[str, Any] = {
        "agents": agents,
        "rounds": rounds,
        "start_skew_ms": _ms(skews),
        "printed_date_spread_ms": _ms(stamps) if stamps and not unparsed else None,
        "clock_rtt_ms": _ms(rtts),
    }
    if unparsed:  # busybox date (the guest image) has no %N: it prints it literally
        doc["printed_dates_unparsed"] = unparsed[:3]
    return doc


def measure(hosts: list[str], rounds: int) -> dict[str, Any]:
    """Start one local agent per host, run the rounds against them, summarise."""
    token = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="njbench") as tmp:
        workdir = Path(tmp)
        agents = start_agents(hosts, token, workdir)
        try:
            config = workdir / "skew.cfg"
            write_rounds(config, [addr for _, addr in agents], rounds)
            results = run_config(config, token=token, farm_config=FarmConfig(state_dir=workdir))
        finally:
            for proc, _ in agents:
                proc.terminate()
            for proc, _ in agents:
                proc.wait(15)
    return summarise(results, len(hosts), rounds)


def wait_agent(guest: Guest, token: str, deadline: float) -> str:
    """Block until ``guest``'s agent accepts our token; its "host:port"."""
    host, port = guest.address(timeout=max(1.0, deadline - time.monotonic()))
    session = FarmSession(host, port, token=token, connect_attempts=None,
                          connect_deadline=max(1.0, deadline - time.monotonic()))  # fmt: skip
    try:
        session.connect(alive=guest.alive)
    finally:
        session.close()
    return f"{host}:{port}"


def measure_guests(scratch: Path, rounds: int, count: int = GUESTS) -> dict[str, Any]:
    """Boot ``count`` bridged TCG guests with farm's qemu backend, run the rounds on them."""
    config = FarmConfig(
        backend="qemu", network="bridge", state_dir=scratch / "state", log_dir=scratch / "log",
        image_dir=REPO / "images", boot_timeout=BOOT_TIMEOUT,
        profile={"accel": "tcg", "memory": 256},
    )  # fmt: skip
    backend = QemuBackend(config)
    guests: list[Guest] = []
    try:
        backend.check()
        token = resolve_token(config.token, config.state_dir)  # the state dir's token file
        began = time.monotonic()
        for i in range(1, count + 1):  # one by one: a failed spawn leaves the others destroyable
            guests.append(backend.spawn(f"qemu{i}", token))
        deadline = began + BOOT_TIMEOUT
        addresses = [wait_agent(guest, token, deadline) for guest in guests]
        booted = time.monotonic() - began
        cfg = scratch / "guests.cfg"
        write_rounds(cfg, addresses, rounds)
        results = run_config(cfg, farm_config=config)  # token: from the same state dir
    finally:
        for guest in guests:
            guest.destroy()
        backend.close()
    return {"addresses": addresses, "boot_s": round(booted, 1),
            **summarise(results, count, rounds)}  # fmt: skip


def _empty_namespace(name: str) -> None:
    """SIGTERM, then SIGKILL, whatever still runs in ``name`` (QEMU, screen, dhcpd)."""
    left = netns_processes(name)
    for proc in left:
        print(f"netjobs_skew: killing leftover {proc.pid} in {name}", file=sys.stderr)
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(left, timeout=5)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)


def run_in_namespace(argv: list[str], bridge: bool) -> int:
    """Re-run this bench inside a fresh namespace (with a bridge holding NS_ADDRESSES)."""
    if os.geteuid() != 0:
        raise SystemExit("--where netns|guests needs root (ip netns)")
    name = f"farmbench-{uuid.uuid4().hex[:8]}"
    scratch = Path(tempfile.mkdtemp(prefix="njb"))  # short: QEMU's QMP socket path lives here
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        cmds = [["link", "set", "lo", "up"]]
        if bridge:
            cmds += [["link", "add", "njb0", "type", "bridge"],
                     *(["addr", "add", f"{a}/24", "dev", "njb0"] for a in NS_ADDRESSES),
                     ["link", "set", "njb0", "up"]]  # fmt: skip
        for cmd in cmds:
            subprocess.run(["ip", "-n", name, *cmd], check=True)
        env = {**os.environ, NETNS_ENV: name, SCRATCH_ENV: str(scratch), "PYTHONPATH": str(REPO)}
        return subprocess.run(
            ["ip", "netns", "exec", name, sys.executable, *argv], env=env
        ).returncode
    finally:
        _empty_namespace(name)
        subprocess.run(["ip", "netns", "del", name], check=False)
        shutil.rmtree(scratch, ignore_errors=True)


def _terminated(signum: int, frame: object) -> None:
    """SIGTERM: unwind (guests destroyed, namespace emptied and deleted) instead of dying."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--where", choices=("loopback", "netns", "guests"), default="loopback")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminated)
    if args.where != "loopback" and not os.environ.get(NETNS_ENV):
        me = [str(Path(__file__).resolve()), *sys.argv[1:]]
        return run_in_namespace(me, bridge=args.where == "netns")
    if args.where == "guests":
        figures = measure_guests(Path(os.environ[SCRATCH_ENV]), args.rounds)
    else:
        hosts = NS_ADDRESSES if args.where == "netns" else ["127.0.0.1"] * 3
        figures = measure(hosts, args.rounds)
    doc = {"where": args.where, **figures}
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
