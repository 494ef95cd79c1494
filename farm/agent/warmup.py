"""A warm-up set: the work only a process's first task set does, done before any client asks.

A first set in a fresh agent process costs more than later ones: lazy imports,
the lookups of the native workloads program (:mod:`farm.agent.commands`), the
helper threads of :mod:`farm.agent.workers`, the first spawn, the job guard's
group, event encoding and sealing, the first log records. The warm-start
template (``farm.identity=wait`` in the image's /init, farm/backend/snapshot.py)
runs :func:`run` before it is saved, so every guest restored from it starts with
that done. Under TCG a restored guest still translates that code again the
first time it runs (the translation cache is QEMU's, not the guest's): the qemu
backend's spare guest (farm/backend/qemu_spare.py) runs :func:`run` once more
after its restore, before it is handed its identity.
"""

from __future__ import annotations

from farm.agent import logs, protocol, service

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is slow to import in a TCG guest
if TYPE_CHECKING:
    from typing import Any

log = logs.get_logger(__name__)


def _task(task_id: int, priority: int, period: int, jobs: int) -> dict[str, Any]:
    """A ``hey`` task with every field the host sends (zeros where the host sends zeros)."""
    zeros = dict.fromkeys(("executiontime", "criticaltime", "deadline", "offset", "quota"), 0)
    return {"id": task_id, "pkg": "hey", "config": {}, "priority": priority, "period": period,
            "numberofjobs": jobs, **zeros}  # fmt: skip


#: the template's warm-up: built-ins that print a line, real-time like most sets, every
#: field given as the host's sessions send them (farm.session.base); two tasks, one of
#: them periodic, so the set is a timed one (:func:`farm.agent.spawner.timed`) like the
#: experiments: its jobs 0 wait pre-spawned before t0, a launcher thread spawns the
#: periodic task's next job ahead of its release
TASKS = [_task(0, priority=10, period=100, jobs=2), _task(1, priority=9, period=0, jobs=1)]
TIMEOUT = 30.0

#: event types of each warm-up set run in this process, in order (for status and tests)
history: list[list[str]] = []


def run(tasks: list[dict[str, Any]] | None = None, timeout: float = TIMEOUT) -> list[str]:
    """Run one private set (``TASKS`` by default) through a private service; its event types.

    The set goes over the wire as a host's would (:func:`_over_the_wire`). Never raises:
    a warm-up that fails is logged (the template is saved all the same, its guests' first
    sets then do that work).
    """
    events: list[str] = []
    try:
        service.load_machinery()
        agent = service.AgentService()
        try:
            _over_the_wire(agent, TASKS if tasks is None else tasks, timeout, events)
        finally:
            agent.shutdown()
        _prime_logging()
    except Exception:
        log.exception("the warm-up set failed")
    history.append(events)
    return events


def _over_the_wire(
    agent: service.AgentService, tasks: list[dict[str, Any]], timeout: float, events: list[str]
) -> None:
    """Serve a connection on a socket pair, handshake, ``start`` the set, read to its end.

    The agent's own request path (handshake, MAC, decoding, dispatch, reply, the writer
    thread, events on a socket) is code a first set runs too: done here, in the template
    (its lazy imports then in the snapshot) and in a spare (translated in its QEMU).
    """
    import socket
    import threading
    import time

    from farm.agent.connection import Connection

    deadline = time.monotonic() + timeout
    mine, theirs = socket.socketpair()
    conn = Connection(theirs, "warm-up", agent, "warm-up", 1.0, timeout, lambda c: None)
    reader = threading.Thread(target=conn.run, name="warm-up", daemon=True)
    reader.start()
    try:
        channel = protocol.client_handshake(mine, "warm-up", deadline)
        args = {"tasks": [dict(t) for t in tasks], "binaries": {}, "params": []}
        channel.send({"type": "request", "id": 1, "op": "start", "args": args})
        ends: set[object] = set()
        while len(ends) < len(tasks):
            message = channel.recv(deadline)
            if message.get("type") == "error":
                raise RuntimeError(f"the agent refused the warm-up set: {message}")
            if message.get("type") == "event":
                event = message["event"]
                events.append(str(event["type"]))
                if event["type"] == "JOBS_DONE":
                    ends.add(event.get("task_id"))
    finally:
        mine.close()
        reader.join(timeout)


def _prime_logging() -> None:
    """Format and write one record as the agent's logging will (to a buffer): its first
    record costs the imports and lookups of the logging machinery (time zone, formats)."""
    import io
    import logging

    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(logging.Formatter(logs.FORMAT))
    handler.handle(
        logging.LogRecord(__name__, logging.INFO, "(held)", 0, "warm-up %s", ("done",), None)
    )
