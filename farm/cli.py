"""The ``farm`` command. Maps FarmError to exit codes; the library never exits."""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click

from farm.errors import ConfigError, FarmError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _debug() -> bool:
    """True when ``farm -d`` asked for full tracebacks."""
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root() if ctx is not None else None
    return bool(root is not None and isinstance(root.obj, dict) and root.obj.get("debug"))


def _fail(exc: BaseException) -> None:
    """Print ``exc`` as one clear line (its traceback too with ``-d``) and exit 2 or 1.

    Exit 2 for bad input (ConfigError), 1 for everything else. Subcommands in
    other modules may call this to honour ``-d``.
    """
    if _debug():
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    click.secho(f"farm: error: {exc}", fg="red", err=True)
    code = EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILED
    raise SystemExit(code)


# Subcommands that live in their own modules, imported only when invoked so
# that ``farm --help`` and ``farm run`` stay fast: name -> "module:attribute".
_LAZY_COMMANDS = {
    "net": "farm.network.cli:net",
    "netjobs": "farm.netjobs.cli:netjobs",
    "report": "farm.report.cli:report",
    "doctor": "farm.doctor:doctor",
    "status": "farm.control.cli:status",
}


def _load_lazy(name: str) -> click.Command:
    import importlib

    module, _, attr = _LAZY_COMMANDS[name].partition(":")
    cmd = getattr(importlib.import_module(module), attr)
    assert isinstance(cmd, click.Command), f"{_LAZY_COMMANDS[name]} is not a click command"
    return cmd


class _LazyGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        """Run the subcommand; errors that escape it become one line and exit 1 or 2."""
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("farm: interrupted", err=True)
            raise SystemExit(EXIT_INTERRUPTED) from None
        except FarmError as exc:
            _fail(exc)
        except Exception as exc:  # a bug: say so in one line, the traceback with -d
            if _debug():
                raise
            click.secho(
                f"farm: internal error: {type(exc).__name__}: {exc} (farm -d shows the traceback)",
                fg="red",
                err=True,
            )
            raise SystemExit(EXIT_FAILED) from None

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _LAZY_COMMANDS and cmd_name not in self.commands:
            return _load_lazy(cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=_LazyGroup)
@click.option("-v", "--verbose", count=True, help="More log output on stderr.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="farm.toml to use.")
@click.option("-d", "--debug", is_flag=True, help="Full traceback on errors.")
@click.pass_context
def main(ctx: click.Context, verbose: int, config_path: str | None, debug: bool) -> None:
    """farm: run real-time task-set experiments on a farm of QEMU guests.

    Exit codes: 0 ok, 1 failure (e.g. a set given up), 2 bad input, 130 interrupted.
    """
    level = max(logging.WARNING - 10 * verbose, logging.DEBUG)
    handler = logging.StreamHandler()
    handler.setLevel(level)  # the farm logger may be more verbose (its log file is)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    ctx.obj = {"config": config_path, "debug": debug}


@main.command()
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
        ts_cls = tasksets.resolve(taskset)
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
        _fail(exc)
        return
    interrupted = {"n": 0}

    def on_sigint(signum: int, frame: Any) -> None:
        interrupted["n"] += 1
        if interrupted["n"] == 1:
            click.echo("\nfarm: stopping (Ctrl-C again to kill)", err=True)
            raise KeyboardInterrupt
        dist.kill_all_machines()
        raise SystemExit(EXIT_INTERRUPTED)

    signal.signal(signal.SIGINT, on_sigint)
    signal.signal(signal.SIGTERM, on_sigint)
    t0 = time.monotonic()
    try:
        if machines is not None:
            dist.set_max_machine_value(machines)
        job = dist.add_job(ts_cls(), FanoutMonitor(mons))
        if as_json:
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
        dist.close()
        raise SystemExit(EXIT_INTERRUPTED) from None
    except FarmError as exc:
        dist.close()
        _fail(exc)
        return
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


@main.group()
def image() -> None:
    """Build and inspect the guest image."""


@image.command("build")
@click.option("--force", is_flag=True, help="Rebuild even if nothing changed.")
@click.option("--out", type=click.Path(file_okay=False), default="images", show_default=True)
@click.option(
    "--kernel",
    type=click.Choice(["farm", "debian"]),
    default="farm",
    show_default=True,
    help="farm: PREEMPT_RT built from linux-source with farm's config (boots ~1 s "
    "faster); debian: Debian's packaged RT kernel and its modules.",
)
def image_build(force: bool, out: str, kernel: str) -> None:
    """Build images/image.elf and images/initrd.img (cached)."""
    from farm.image import build

    try:
        info = build(force=force, out_dir=Path(out), kernel=kernel)
    except FarmError as exc:
        _fail(exc)
        return
    click.echo(json.dumps(info.to_dict() if hasattr(info, "to_dict") else str(info), indent=2))


@main.command()
@click.argument("name")
def console(name: str) -> None:
    """Attach to guest NAME's console (screen -xr NAME)."""
    import os
    import shutil

    screen = shutil.which("screen")
    if screen is None:
        _fail(ConfigError("screen is not installed (apt-get install screen)"))
        return
    os.execv(screen, [screen, "-xr", name])


@main.command("list")
@click.option("--tasksets", "what", flag_value="tasksets", default=True)
@click.option("--monitors", "what", flag_value="monitors")
@click.option("--sessions", "what", flag_value="sessions")
def list_(what: str) -> None:
    """List task sets, monitors or sessions with their first docstring line."""
    import importlib

    mod = importlib.import_module(f"farm.{'session' if what == 'sessions' else what}")
    for name, doc in mod.available():
        click.echo(f"{name:32} {doc}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
