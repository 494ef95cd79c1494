"""Benchmark: events per second one Distributor (+ monitors) sustains from fast agents.

A synthetic agent process speaks farm's real protocol (hello / HMAC auth /
welcome, framed JSON requests and replies) on loopback and, on ``start``,
answers at once and then emits every task's START/EXIT pairs and JOBS_DONE
as fast as its socket takes them -- no processes, no scheduling: the
distributor side (sessions, Machine threads, monitor threads, SQLite) is the
bottleneck being measured. A backend of the bench spawns one such agent per
machine. For 1, 2 and 4 machines it runs a job and prints events/s through
a counting monitor alone and through SqliteMonitor (the default store).

    .venv/bin/python bench/event_rate.py [--sets 8] [--tasks 4] [--jobs 2500]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from farm import Distributor  # noqa: E402
from farm.backend.base import Backend, Guest  # noqa: E402
from farm.config import FarmConfig  # noqa: E402
from farm.monitors import SqliteMonitor  # noqa: E402
from farm.taskset import Task, TaskSet  # noqa: E402

AGENT = r"""
import os, socket, sys, threading, time
sys.path.insert(0, sys.argv[3])
from farm.agent import protocol
from farm.agent.protocol import PROTOCOL_VERSION, agent_version, new_nonce, read_frame, write_frame

token, port_file = sys.argv[1], sys.argv[2]
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(4)
open(port_file, "w").write(str(srv.getsockname()[1]))
version = agent_version()

def serve(sock):
    hello = protocol.encode({"type": "hello", "protocol": PROTOCOL_VERSION,
                             "agent_version": version, "nonce": new_nonce()})
    sock.sendall(hello)
    auth = read_frame(sock)
    secret = protocol.session_secret(token, hello[4:], str(auth.get("cnonce")))
    if not protocol.check_proof(secret, "client", auth.get("mac")):
        write_frame(sock, {"type": "error", "code": "auth", "message": "bad token"})
        return
    write_frame(sock, {"type": "welcome", "mac": protocol.proof(secret, "agent"),
                       "heartbeat": 1.0})
    out, into = protocol.directions(secret, agent=True)
    def encode(msg):  # sealed in the order built, which is the order sent
        return out.seal(protocol.encode(msg)[4:])
    def read_frame_(s):
        return protocol.decode_body(into.open(protocol.read_raw(s, 1 << 26)))
    lock = threading.Lock()
    def send(msg):
        with lock:
            sock.sendall(msg)
    while True:
        req = read_frame_(sock)
        if req.get("type") != "request":
            continue
        send(encode({"type": "reply", "id": req["id"], "ok": True, "result": {}}))
        if req["op"] == "start":
            tasks = req["args"]["tasks"]
            batch = []
            for task in tasks:
                tid = task["id"]
                for job in range(1, int(task.get("numberofjobs") or 1) + 1):
                    ts = time.time()
                    batch.append(encode({"type": "event", "event": {
                        "task_id": tid, "job": job, "type": "START", "ts": ts}}))
                    batch.append(encode({"type": "event", "event": {
                        "task_id": tid, "job": job, "type": "EXIT", "ts": ts}}))
                    if len(batch) >= 256:
                        send(b"".join(batch)); batch = []
                batch.append(encode({"type": "event", "event": {
                    "task_id": tid, "job": None, "type": "JOBS_DONE", "ts": time.time()}}))
            send(b"".join(batch))

while True:
    conn, _ = srv.accept()
    def _run(c=conn):
        try:
            serve(c)
        except Exception:
            pass
        finally:
            c.close()
    threading.Thread(target=_run, daemon=True).start()
"""


class FastGuest(Guest):
    """A synthetic agent process standing in for a guest."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes], port: int) -> None:
        self.name = name
        self.proc = proc
        self.port = port

    def address(self, timeout: float) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def destroy(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    @property
    def pid(self) -> int | None:
        return self.proc.pid


class FastAgentBackend(Backend):
    """Spawns one synthetic fast agent per machine."""

    kind = "fast-agent"

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.script = tmp / "fast_agent.py"
        self.script.write_text(AGENT)

    def spawn(self, name: str, token: str) -> Guest:
        port_file = self.tmp / f"{name}.port"
        port_file.unlink(missing_ok=True)
        proc = subprocess.Popen(
            [sys.executable, str(self.script), token, str(port_file), str(ROOT)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(500):
            if port_file.exists() and port_file.read_text():
                return FastGuest(name, proc, int(port_file.read_text()))
            time.sleep(0.01)
        proc.kill()
        raise RuntimeError("fast agent did not start")


class CountingMonitor:
    """Counts events; notes the first set start and last set finish."""

    def __init__(self) -> None:
        self.events = 0
        self.first: float | None = None
        self.last = 0.0
        self._lock = threading.Lock()

    def __taskset_start__(self, taskset: Any) -> None:
        with self._lock:
            self.first = self.first or time.perf_counter()

    def __taskset_event__(self, taskset: Any, event: Any) -> None:
        self.events += 1  # calls to one monitor are serialised by farm

    def __taskset_finish__(self, taskset: Any) -> None:
        self.last = time.perf_counter()

    def __taskset_stop__(self, taskset: Any) -> None:
        pass

    def __taskset_bad__(self, taskset: Any, tries: int) -> None:
        pass


class Both(CountingMonitor):
    """Counting + SqliteMonitor (every event stored)."""

    def __init__(self, db: Path) -> None:
        super().__init__()
        self.sqlite = SqliteMonitor(db)

    def __taskset_start__(self, taskset: Any) -> None:
        super().__taskset_start__(taskset)
        self.sqlite.__taskset_start__(taskset)

    def __taskset_event__(self, taskset: Any, event: Any) -> None:
        super().__taskset_event__(taskset, event)
        self.sqlite.__taskset_event__(taskset, event)

    def __taskset_finish__(self, taskset: Any) -> None:
        self.sqlite.__taskset_finish__(taskset)
        super().__taskset_finish__(taskset)

    def flush(self) -> None:
        flush = getattr(self.sqlite, "flush", None)
        if flush is not None:
            flush()


def run(machines: int, sets: int, tasks: int, jobs: int, sqlite: bool, tmp: Path) -> dict[str, Any]:
    """One job on ``machines`` fast agents; events/s between first start and last finish."""
    state = tmp / f"s{machines}{int(sqlite)}"
    config = FarmConfig(
        state_dir=state, log_dir=tmp / "log", max_machines=machines, journal=False, token="bench"
    )
    monitor: CountingMonitor = Both(tmp / f"r{machines}.db") if sqlite else CountingMonitor()
    taskset = TaskSet(
        [
            Task({"id": t, "pkg": "hey", "numberofjobs": jobs, "x-run": range(sets)})
            if t == 1
            else Task({"id": t, "pkg": "hey", "numberofjobs": jobs})
            for t in range(1, tasks + 1)
        ]
    )
    dist = Distributor(config, backend=FastAgentBackend(tmp))
    try:
        cpu0 = time.process_time()
        dist.add_job(taskset, monitor)
        ok = dist.wait_finished(timeout=600)
        cpu = time.process_time() - cpu0
    finally:
        dist.close()
    span = monitor.last - (monitor.first or monitor.last)
    return {
        "machines": machines,
        "monitor": "sqlite+count" if sqlite else "count",
        "finished": ok,
        "events": monitor.events,
        "seconds": round(span, 3),
        "events_per_s": round(monitor.events / span) if span else None,
        "distributor_cpu_s": round(cpu, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", type=int, default=8)
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=2500)
    parser.add_argument("--machines", default="1,2,4")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="farm-evrate") as tmp:
        for sqlite in (False, True):
            for n in (int(x) for x in args.machines.split(",")):
                results.append(run(n, args.sets, args.tasks, args.jobs, sqlite, Path(tmp)))
    print(
        json.dumps(
            {
                "bench": "event_rate",
                "cores": os.cpu_count(),
                "events_per_set": args.tasks * (2 * args.jobs + 1),
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
