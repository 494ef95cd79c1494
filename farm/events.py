"""Events streamed by targets: one taxonomy for farm agents and Genode alike."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from farm.agent.protocol import EVENT_TYPES, JOB_EXIT_TYPES
from farm.errors import ProtocolError


class EventType(StrEnum):
    """Kinds of event; values are the wire strings."""

    START = "START"
    EXIT = "EXIT"  # job finished in time
    EXIT_CRITICAL = "EXIT_CRITICAL"  # finished after its critical time / deadline
    EXIT_ERROR = "EXIT_ERROR"  # non-zero exit, crash, or CPU budget exhausted
    OUT_OF_QUOTA = "OUT_OF_QUOTA"  # exceeded its memory quota
    EXIT_PERIOD = "EXIT_PERIOD"  # still running at its next release
    EXIT_EXTERNAL = "EXIT_EXTERNAL"  # stopped from outside (stop request)
    NOT_SCHEDULED = "NOT_SCHEDULED"  # release skipped
    JOBS_DONE = "JOBS_DONE"  # task finished all its jobs
    NOTICE = "NOTICE"  # agent remark, not a job exit (e.g. scheduling fallback)


assert {e.value for e in EventType} == set(EVENT_TYPES)
EXIT_TYPES = frozenset(EventType(t) for t in JOB_EXIT_TYPES)


@dataclass(frozen=True, slots=True)
class Event:
    """One event: task id, job number (None for task-level events), type, guest time (s)."""

    task_id: int
    job: int | None
    type: EventType
    timestamp: float
    detail: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_wire(cls, data: object) -> Event:
        """Build from the agent's JSON form; raise ProtocolError if malformed."""
        if not isinstance(data, dict):
            raise ProtocolError(f"event is not an object: {data!r}")
        try:
            job = data.get("job")
            return cls(
                task_id=int(data["task_id"]),
                job=None if job is None else int(job),
                type=EventType(data["type"]),
                timestamp=float(data["ts"]),
                detail=data.get("detail"),
                extra={k: v for k, v in data.items() if k not in _WIRE_KEYS},
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ProtocolError(f"malformed event {data!r}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["type"] = str(self.type)
        return d

    @property
    def is_exit(self) -> bool:
        return self.type in EXIT_TYPES


_WIRE_KEYS = frozenset({"task_id", "job", "type", "ts", "detail"})
