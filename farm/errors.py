"""Exceptions of farm: one root, one branch per concern.

::

    FarmError
    ├── ConfigError            bad configuration or argument (raised before anything starts)
    │   └── TaskSetError       invalid task attribute (names task and attribute)
    ├── ProtocolError          malformed frame, bad greeting, version mismatch
    │   └── AuthError          token refused
    ├── SessionError           a target session failed (connect, lost, timeout)
    │   └── SessionTimeout
    ├── AgentError             the agent answered a request with an error reply
    ├── BackendError           a VM backend failed (infrastructure)
    │   ├── BootError          the guest did not come up (its fault, not the host's)
    │   └── LaunchError        QEMU could not be started (exit code, command, output)
    ├── ImageError             guest image missing or cannot be built
    ├── NetworkError           bridge, tap, DHCP or address-pool failure
    ├── ResultsError           a results database (PostgreSQL) cannot be written
    └── MissingDependency      an optional dependency is not installed (names the extra)

``ConfigError`` and ``TaskSetError`` also derive from ``ValueError`` so that
callers validating input can catch the builtin.
"""

from __future__ import annotations

import re
from collections.abc import Sequence


class FarmError(Exception):
    """Root of every error farm raises on purpose."""


class ConfigError(FarmError, ValueError):
    """A configuration value or argument is invalid."""


class TaskSetError(ConfigError):
    """A task attribute is invalid; the message names the task and the attribute."""

    def __init__(self, message: str, *, task: object = None, attribute: str | None = None):
        super().__init__(message)
        self.task = task
        self.attribute = attribute


class ProtocolError(FarmError):
    """A frame or message does not follow the farm wire protocol."""


class AuthError(ProtocolError):
    """The peer refused our token (or we refused theirs)."""


class SessionError(FarmError):
    """A session to a target failed: connect, lost connection, bad reply."""


class SessionTimeout(SessionError):
    """A session operation did not complete in time."""


class AgentError(SessionError):
    """The agent replied to a request with an error; ``code`` says which."""

    def __init__(self, message: str, code: str = "error"):
        super().__init__(message)
        self.code = code


class BackendError(FarmError):
    """A VM backend operation failed (host-side infrastructure problem)."""


class BootError(BackendError):
    """The guest started but never became ready (a problem of the guest)."""


_TOKEN_ARG = re.compile(r"(farm\.token=)\S+")


class LaunchError(BackendError):
    """QEMU could not be started or did not come up: ``exitcode``, ``command``, ``output``.

    ``command`` is the argv with any ``farm.token=`` value replaced by ``***``
    (farm's own guests get their key over the identity port; a hand-booted image
    may still carry one); ``output`` is the tail of QEMU's log.
    """

    def __init__(
        self,
        message: str,
        *,
        exitcode: int | None = None,
        command: Sequence[str] = (),
        output: str = "",
    ) -> None:
        super().__init__(message)
        self.exitcode = exitcode
        self.command = [_TOKEN_ARG.sub(r"\1***", arg) for arg in command]
        self.output = output


class ImageError(FarmError):
    """The guest image is missing, stale or cannot be built."""


class NetworkError(FarmError):
    """Bridge, tap, DHCP or address-pool failure."""


class ResultsError(FarmError):
    """A results database cannot be reached or written (PostgresMonitor)."""


class MissingDependency(FarmError):
    """An optional dependency is not installed; the message names the extra that brings it."""
