"""The failure policy: ONE function decides what a failure means for the set and the guest.

The slot loop obeys :func:`classify` and nothing else::

    while booting a guest
        ConfigError, ImageError            -> GIVE_UP       no retries: booting again cannot help
        anything else (BootError, spawn    -> RETRY_BOOT    back off, at most boot_retries times
        failure, session, OSError, a hung
        boot, an unexpected TypeError)
    while starting or running a set
        TaskSetError, ConfigError          -> BAD_INPUT     the set fails at once (no retries);
        AgentError bad_request,                             the guest is kept for the next set
        invalid_taskset, unknown_op
        SessionError, BackendError,        -> REPLACE_GUEST the guest is replaced and the set
        OSError, any other exception                        re-queued (a counted try)

A bad input therefore never costs a healthy guest, and a broken configuration
never burns ``boot_retries`` boots with back-off.
"""

from __future__ import annotations

import enum

from farm.errors import AgentError, ConfigError, ImageError

#: agent reply codes that blame the request (the set), not the guest (see farm/agent/service.py)
BAD_INPUT_CODES = frozenset({"bad_request", "invalid_taskset", "unknown_op"})


class Phase(enum.Enum):
    """Where the failure happened."""

    BOOT = "boot"  # spawning a guest and attaching its session
    RUN = "run"  # starting or running a set on a ready guest


class Verdict(enum.Enum):
    """What the slot does about a failure."""

    GIVE_UP = "give up"  # boot: stop this slot now
    RETRY_BOOT = "retry boot"  # boot: back off, then boot again
    BAD_INPUT = "bad input"  # run: the set is given up at once, the guest kept
    REPLACE_GUEST = "replace guest"  # run: destroy the guest, re-queue the set

    @property
    def keeps_guest(self) -> bool:
        return self is Verdict.BAD_INPUT


def classify(error: BaseException, phase: Phase) -> Verdict:
    """The verdict for ``error`` raised in ``phase`` (see the module docstring)."""
    if phase is Phase.BOOT:
        if isinstance(error, ConfigError | ImageError):
            return Verdict.GIVE_UP
        return Verdict.RETRY_BOOT
    if isinstance(error, ConfigError):  # TaskSetError included; also an unreadable binary
        return Verdict.BAD_INPUT
    if isinstance(error, AgentError) and error.code in BAD_INPUT_CODES:
        return Verdict.BAD_INPUT
    return Verdict.REPLACE_GUEST
