"""``farm net up|down|status``: the bridged network by hand (click group ``net``).

Loaded lazily by :mod:`farm.cli.root`. The config comes
from ``--config`` of the parent command (``ctx.obj["config"]``), else
``FARM_CONFIG`` / ``./farm.toml``. ``up`` leaves dhcpd running after the
command exits; ``down`` stops it and removes the taps and the bridge.
"""

from __future__ import annotations

import json
from typing import Any

import click

from farm.cli.errors import fail
from farm.errors import FarmError


def _config(ctx: click.Context) -> Any:
    from farm.config import FarmConfig

    path = (ctx.obj or {}).get("config") if isinstance(ctx.obj, dict) else None
    return FarmConfig.load(path)


@click.group()
def net() -> None:
    """The bridged network: br0, one tap per machine, farm's dhcpd."""


@net.command("up")
@click.pass_context
def net_up_cmd(ctx: click.Context) -> None:
    """Create br0 with its address and start farm's dhcpd on it (idempotent)."""
    from farm.bridge.bridge import net_up

    try:
        network = net_up(_config(ctx))
    except FarmError as exc:
        fail(exc)
    plan = network.plan
    click.echo(
        f"{plan.bridge} {plan.bridge_interface} up; dhcpd pid {network.dhcp.pid}; "
        f"{plan.machines} reservations from {plan.ip_for(1)}, "
        f"dynamic {plan.range_start}-{plan.range_end}"
    )


@net.command("down")
@click.pass_context
def net_down_cmd(ctx: click.Context) -> None:
    """Stop farm's dhcpd, remove every farm tap and br0 (idempotent)."""
    from farm.bridge.bridge import net_down

    try:
        net_down(_config(ctx))
    except FarmError as exc:
        fail(exc)
    click.echo("bridged network removed")


@net.command("status")
@click.pass_context
def net_status_cmd(ctx: click.Context) -> None:
    """Print the bridged network's state as JSON (bridge, dhcpd, taps, leases)."""
    from farm.bridge.bridge import BridgeNetwork

    try:
        network = BridgeNetwork.from_config(_config(ctx))
        state = {
            "bridge": network.plan.bridge,
            "exists": network.bridge.exists(),
            "address": str(network.plan.bridge_interface),
            "dhcpd_pid": network.dhcp.pid,
            "taps": network.bridge.taps(),
            "leases": [lease.__dict__ for lease in network.dhcp.leases()],
        }
    except FarmError as exc:
        fail(exc)
    click.echo(json.dumps(state, indent=2))
