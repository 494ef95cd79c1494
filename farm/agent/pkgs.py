"""Names of the workloads the agent knows (stdlib only; shared with the task model)."""

from __future__ import annotations

#: taskgen's pkg names, each a built-in workload of the agent.
BUILTIN_PKGS: frozenset[str] = frozenset(
    {"hey", "pi", "cond_42", "cond_mod", "linpack", "tumatmul", "idle", "namaste", "memhog"}
)
#: run ``config["command"]`` with /bin/sh
SHELL_PKG = "shell"

#: traffic-generation workloads (seed 002): ``farm.agent.traffic`` (docs/traffic.md).
TRAFFIC_PKGS: frozenset[str] = frozenset({"traffic_server", "traffic_client"})


#: native programs shipped in the guest image, each with its own config (cyclictest: Debian's
#: rt-tests latency measurement, ``farm.agent.cyclictest``).
PROGRAM_PKGS: frozenset[str] = frozenset({"cyclictest"})


def is_known(pkg: str, uploaded: frozenset[str] | set[str] = frozenset()) -> bool:
    """True if the agent can run ``pkg``: built in, shell, a shipped program or an upload."""
    return (
        pkg in BUILTIN_PKGS
        or pkg == SHELL_PKG
        or pkg in TRAFFIC_PKGS
        or pkg in PROGRAM_PKGS
        or pkg in uploaded
    )
