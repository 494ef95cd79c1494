"""A NetJobs link to one farm agent: clock offset, synchronised exec, polling, kill.

Built on :class:`farm.session.agent.FarmSession` (framed JSON, HMAC token
handshake, request ids, heartbeats); adds the agent's ``exec*`` ops
(:mod:`farm.agent.netexec`).
"""

from __future__ import annotations

import base64
import logging
import time
from typing import Any, Protocol

from farm.errors import AgentError, SessionError
from farm.netjobs.targets import Address
from farm.session.agent import FarmSession

log = logging.getLogger(__name__)

CLOCK_SAMPLES = 8
REQUEST_GRACE = 10.0


class AgentLink(Protocol):
    """What the runner needs of one connected agent (a fake in unit tests)."""

    def clock(self, samples: int = CLOCK_SAMPLES) -> tuple[float, float]:
        """(offset, rtt): agent monotonic minus host monotonic, from the fastest sample."""
        ...

    def exec(self, command: str, at: float, timeout: float | None) -> dict[str, Any]:
        """Schedule ``command`` at agent monotonic ``at``; the agent's reply (``id``...)."""
        ...

    def poll(self, rid: str, offset: int, wait: float) -> dict[str, Any]:
        """State of command ``rid`` and its output from ``offset`` (``data`` as bytes)."""
        ...

    def kill(self, rid: str) -> dict[str, Any]:
        """Kill command ``rid``."""
        ...

    def close(self) -> None:
        """Drop the connection (the agent kills what is still running of ours)."""
        ...


def best_offset(samples: list[tuple[float, float, float]]) -> tuple[float, float]:
    """NTP-style offset from (t0 host, t agent, t1 host) samples: the one with the least RTT."""
    if not samples:
        raise ValueError("no clock samples")
    t0, agent, t1 = min(samples, key=lambda s: s[2] - s[0])
    return agent - (t0 + t1) / 2.0, t1 - t0


class FarmAgentLink:
    """An :class:`AgentLink` over a real farm agent connection."""

    def __init__(self, address: Address, token: str | None, connect_timeout: float = 10.0):
        """Connect and authenticate (SessionError, AuthError or ProtocolError if it fails)."""
        self.address = address
        self.session = FarmSession(
            address.host,
            address.port,
            token=token,
            connect_timeout=min(5.0, connect_timeout),
            connect_attempts=3,
            connect_deadline=connect_timeout,
            check_version=False,  # only the exec ops matter; an old agent says unknown_op
        )
        self.session.connect()

    def _call(self, op: str, args: dict[str, Any], timeout: float = REQUEST_GRACE) -> Any:
        try:
            return self.session.call(op, args, timeout=timeout)
        except AgentError as exc:
            if exc.code == "unknown_op":
                raise SessionError(
                    f"agent at {self.address} has no {op!r} op (an older agent or guest image; "
                    "update it / rebuild the image)"
                ) from exc
            raise

    def clock(self, samples: int = CLOCK_SAMPLES) -> tuple[float, float]:
        """See :meth:`AgentLink.clock`."""
        taken = []
        for _ in range(samples):
            t0 = time.monotonic()
            reply = self._call("time", {})
            t1 = time.monotonic()
            taken.append((t0, float(reply["monotonic"]), t1))
        return best_offset(taken)

    def exec(self, command: str, at: float, timeout: float | None) -> dict[str, Any]:
        """See :meth:`AgentLink.exec`."""
        result: dict[str, Any] = self._call(
            "exec", {"command": command, "at": at, "timeout": timeout}
        )
        return result

    def poll(self, rid: str, offset: int, wait: float) -> dict[str, Any]:
        """See :meth:`AgentLink.poll`."""
        reply: dict[str, Any] = self._call(
            "exec_poll", {"id": rid, "offset": offset, "wait": wait}, wait + REQUEST_GRACE
        )
        reply["data"] = base64.b64decode(reply.get("data") or "")
        return reply

    def kill(self, rid: str) -> dict[str, Any]:
        """See :meth:`AgentLink.kill`."""
        result: dict[str, Any] = self._call("exec_kill", {"id": rid})
        return result

    def close(self) -> None:
        """See :meth:`AgentLink.close`."""
        self.session.close()
