"""``farm run TASKSET [DEST...]``: run a task set on spawned guests or existing targets."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import time
from typing import Any

import click

from farm.cli.errors import EXIT_FAILED, EXIT_INTERRUPTED, fail
from farm.errors import ConfigError, FarmError


@click.command("run")
@click.argument("taskset")
@click.argument("dest", nargs=-1)
@click.option("--machines", "-m", type=int, default=None, help="Machines to run (1..cap).")
@click.option(
    "--monitor",
    "monitors",
    multiple=True,
    default=("SqliteMonitor",),
    show_default=True,
    help="Monitor class (repeatable), e.g. monitors.CsvMonitor.",
)
@click.option(
    "--session", "session_name", default=None, help="Session class (default FarmSession)."
)
@click.option("--backend", type=click.Choice(["libvirt", "qemu", "local"]), default=None)
@click.option("--network", type=click.Choice(["user", "bridge"]), default=None)
@click.option(
    "--port",
    "-p",
    type=int,
    default=None,
    help="Agent port of DEST targets given without one (overrides config agent_port).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print a JSON summary instead of the live view."
)
@click.option(
    "--session-params",
    "params_json",
    default=None,
    metavar="JSON",
    help="Session parameters as JSON: an object is one parameter (e.g. taskgen's admission "
    "control dict '{\"optimize\": {...}}'), an array one parameter per element.",
)
@click.pass_context
def run(
    ctx: click.Context,
    taskset: str,
    dest: tuple[str, ...],
    machines: int | None,
    monitors: tuple[str, ...],
    session_name: str | None,
    backend: str | None,
    network: str | None,
    port: int | None,
    as_json: bool,
    params_json: str | None,
) -> None:
    """Run TASKSET (e.g. example.Hey0TaskSet or module:Class) on spawned guests.

    With DEST (CIDR ranges, addresses, host:port) it runs on those existing
    targets instead; without, it spawns guests of the configured backend.
    """
    from farm import monitors as monitor_mod
    from farm import session as session_mod
    from farm import tasksets
    from farm.core.distributor import Distributor
    from farm.monitors.fanout import FanoutMonitor

    try:
        params = session_params(params_json)
        ts_cls = tasksets.resolve(taskset)
        if getattr(ts_cls, "until_stopped", False):
            raise ConfigError(
                f"{taskset} serves until its set is stopped, so `farm run` would never end; "
                "run it from Python beside a client set (Distributor.add_job, then stop it)"
            )
        mons = [monitor_mod.resolve(name)() for name in monitors]
        session_cls = session_mod.resolve(session_name) if session_name else None
        overrides: dict[str, Any] = {"backend": backend, "network": network, "log_file": True}
        if machines is not None:
            overrides["max_machines"] = machines  # validated with the config, before any boot
        if port is not None:
            overrides["agent_port"] = port  # validated (1..65535) with the config
        if dest:  # existing targets: CIDR ranges, addresses, host:port (hosts backend)
            if backend is not None:
                raise ConfigError("--backend does not apply to existing targets (DEST)")
            dist = Distributor(
                list(dest), config=ctx.obj["config"], session_class=session_cls, **overrides
            )
        else:
            dist = Distributor(ctx.obj["config"], session_class=session_cls, **overrides)
    except FarmError as exc:
        fail(exc)
    interrupted = {"n": 0}

    def on_sigint(signum: int, frame: Any) -> None:
        # The handler only raises: the work (closing, killing) runs in the except
        # clauses below, outside the handler, where no lock of farm's can be held.
        interrupted["n"] += 1
        if interrupted["n"] == 1:  # said once the live view is down (a raw write tears it)
            raise KeyboardInterrupt
        if interrupted["n"] == 2:
            raise _KillRequested
        # later ones: the kill is under way

    signal.signal(signal.SIGINT, on_sigint)
    signal.signal(signal.SIGTERM, on_sigint)
    t0 = time.monotonic()
    try:
        if machines is not None:
            dist.set_max_machine_value(machines)
        job = dist.add_job(ts_cls(), FanoutMonitor(mons), *params)
        if as_json:  # stdout holds the one JSON document: sessions print on stderr
            with contextlib.redirect_stdout(sys.stderr):
                dist.wait_finished()
        else:
            from farm.view import live_view

            live_view(dist)
        summary: dict[str, Any] = {
            "job": job.summary(),
            "seconds": round(time.monotonic() - t0, 3),
            "machines": dist.get_max_machine_value(),
        }
    except KeyboardInterrupt:
        try:
            click.echo("farm: stopping (Ctrl-C again to kill)", err=True)
            dist.close()
        except _KillRequested:
            dist.kill_all_machines()
            dist.close()
        finally:
            interrupted["n"] = 3  # later ones are ignored: farm is ending
        raise SystemExit(EXIT_INTERRUPTED) from None
    except _KillRequested:  # the second came before the first was handled
        dist.kill_all_machines()
        dist.close()
        raise SystemExit(EXIT_INTERRUPTED) from None
    except FarmError as exc:
        dist.close()
        fail(exc)
    dist.close()
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        s = summary["job"]
        click.echo(
            f"{s['name']}: {s['finished']} finished, {s['stopped']} stopped, "
            f"{s['bad']} bad in {summary['seconds']:.1f}s"
        )
    if not summary["job"]["done"]:  # e.g. no machine could boot: the job stalled
        click.secho(
            "farm: error: the job did not complete (no machine could boot? "
            f"see {dist.config.log_dir / 'distributor.log'})",
            fg="red",
            err=True,
        )
        raise SystemExit(EXIT_FAILED)
    if summary["job"]["bad"] or summary["job"]["error"]:
        raise SystemExit(EXIT_FAILED)


class _KillRequested(BaseException):
    """A second Ctrl-C (or SIGTERM) while farm run stops: kill the guests now."""


def session_params(text: str | None) -> list[Any]:
    """The session parameters of ``--session-params``: ConfigError unless a JSON object/array."""
    if text is None:
        return []
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--session-params is not valid JSON: {exc}") from exc
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return value
    raise ConfigError(
        f"--session-params must be a JSON object (one parameter) or array, got {text!r}"
    )
