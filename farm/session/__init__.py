"""Host side of the target protocols: one session per target connection.

Sessions: FarmSession (farm's own agent), GenodeSession (Genode dom0
Taskloader, tested against FakeDom0Server), StdioSession and FileSession
(pretend targets for dry runs). ``resolve(name)`` finds a session class by
name, ``available()`` lists them.
"""

from __future__ import annotations

from farm.session.agent import AgentVersionMismatch, FarmSession
from farm.session.base import AbstractSession, RunProgress, TaskSetLike
from farm.session.dry import FileSession, SimulatedSession, StdioSession
from farm.session.genode import GenodeSession
from farm.session.registry import first_doc_line, resolve_class
from farm.session.token import resolve_token

SESSIONS: dict[str, type[AbstractSession]] = {
    cls.__name__: cls for cls in (FarmSession, GenodeSession, StdioSession, FileSession)
}


def resolve(name: str) -> type[AbstractSession]:
    """Session class for ``"FarmSession"``, ``"session.FarmSession"`` or ``"module:Class"``."""
    return resolve_class(name, SESSIONS, AbstractSession, __name__)


def available() -> list[tuple[str, str]]:
    """(name, first docstring line) of every shipped session class."""
    return [(name, first_doc_line(cls)) for name, cls in sorted(SESSIONS.items())]


__all__ = [
    "SESSIONS",
    "AbstractSession",
    "AgentVersionMismatch",
    "FarmSession",
    "FileSession",
    "GenodeSession",
    "RunProgress",
    "SimulatedSession",
    "StdioSession",
    "TaskSetLike",
    "available",
    "resolve",
    "resolve_token",
]
