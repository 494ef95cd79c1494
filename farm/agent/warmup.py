"""A warm-up set: the work only a process's first task set does, done before any client asks.

A first set in a fresh agent process costs more than later ones: lazy imports,
the lookups of the native workloads program (:mod:`farm.agent.commands`), the
helper threads of :mod:`farm.agent.workers`, the first spawn, the job guard's
group, event encoding and sealing, the first log records. The warm-start
template (``farm.identity=wait`` in the image's /init, farm/backend/snapshot.py)
runs :func:`run` before it is saved, so every guest restored from it starts with
that done. (Under TCG the restored guest still translates that code again the
first time it runs: the translation cache is QEMU's, not the guest's.)
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


class _Client:
    """The warm-up set's client: seals each message as a connection would, keeps event types."""

    name = "warm-up"

    def __init__(self) -> None:
        self.events: list[str] = []
        self._sender = protocol.directions(b"warm-up", agent=True)[0]

    def send(self, message: dict[str, Any]) -> None:
        self._sender.seal(protocol.dumps(message))
        if message.get("type") == "event":
            self.events.append(str(message["event"]["type"]))


def run(tasks: list[dict[str, Any]] | None = None, timeout: float = TIMEOUT) -> list[str]:
    """Run one private set (``TASKS`` by default) through a private service; its event types.

    Never raises: a warm-up that fails is logged (the template is saved all the same,
    its guests' first sets then do that work).
    """
    client = _Client()
    try:
        service.load_machinery()
        agent = service.AgentService()
        try:
            raw = [dict(t) for t in (TASKS if tasks is None else tasks)]
            outcome = agent.handle(client, "start", {"tasks": raw, "binaries": {}, "params": []})
            if outcome.then is not None:
                outcome.then()
            runner = agent._runner
            if runner is not None and not runner.wait(timeout):
                log.warning("the warm-up set did not finish within %g s", timeout)
        finally:
            agent.shutdown()
        _prime_logging()
    except Exception:
        log.exception("the warm-up set failed")
    history.append(client.events)
    return client.events


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
