"""``farm netjobs CONFIG [-s] [-v] [-l]``: exit 0 all passed, 1 a test failed, 2 bad input."""

from __future__ import annotations

import os
from pathlib import Path

import click

from farm.cli.errors import EXIT_FAILED, EXIT_OK, fail
from farm.errors import ConfigError, FarmError


def _monitor(spec: str) -> object:
    """``NAME`` or ``NAME=PATH`` (e.g. ``SqliteMonitor=results.db``) -> a monitor instance."""
    from farm.monitors import resolve

    name, _, arg = spec.partition("=")
    cls = resolve(name)
    return cls(arg) if arg else cls()  # type: ignore[call-arg]


def _require_token(token: str | None, state_dir: Path) -> None:
    """ConfigError unless a token is given or the farm's token file exists: a token
    made up here (in the cwd's state dir) could never match the agents' token."""
    from farm.session.token import ENV_TOKEN, TOKEN_FILE

    if token or os.environ.get(ENV_TOKEN) or (state_dir / TOKEN_FILE).is_file():
        return
    raise ConfigError(
        f"no agent token: no --token, no FARM_TOKEN and no {state_dir / TOKEN_FILE}; "
        "pass the token of the farm that started the agents (or run from its directory)"
    )


@click.command("netjobs", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("-s", "--simulate", is_flag=True, help="Simulate: no network, print the plan.")
@click.option("-v", "--verbose", is_flag=True, help="Narrate each step (on stderr).")
@click.option("-l", "--log", "log_results", is_flag=True, help="A log file per test beside CONFIG.")
@click.option(
    "--token", default=None, help="Agent token (default: farm config, FARM_TOKEN, state dir)."
)
@click.option("--port", type=int, default=None, help="Agent port for targets without one.")
@click.option(
    "--agent",
    type=click.Choice(["farm", "netjobs"]),
    default="farm",
    show_default=True,
    help="Agent of targets without '-agent:': farm's own, or a stock NetJobsAgent.py "
    "(port 16192, UNAUTHENTICATED).",
)
@click.option(
    "--monitor",
    "monitors",
    multiple=True,
    metavar="NAME[=PATH]",
    help="Also report to a farm monitor, e.g. SqliteMonitor=results.db (repeatable).",
)
@click.pass_context
def netjobs(
    ctx: click.Context,
    config: str,
    simulate: bool,
    verbose: bool,
    log_results: bool,
    token: str | None,
    port: int | None,
    agent: str,
    monitors: tuple[str, ...],
) -> None:
    """Run the synchronised NetJobs tests of CONFIG (seed 003 grammar) on farm agents
    or on stock NetJobsAgent.py hosts (--agent netjobs / -agent: netjobs; unauthenticated).
    """
    from farm.config import FarmConfig
    from farm.monitors import FanoutMonitor
    from farm.netjobs import parse_file
    from farm.netjobs.api import run_config
    from farm.netjobs.report import format_result
    from farm.netjobs.runner import TestResult

    def narrate(text: str) -> None:
        click.echo(f"netjobs: {text}", err=True)

    def show(result: TestResult) -> None:
        click.echo(format_result(result))

    instances: list[object] = []
    try:
        cfg_path = (ctx.obj or {}).get("config") if ctx.obj else None
        farm_config = FarmConfig.load(cfg_path)
        parsed = parse_file(config)  # syntax errors first, before any token question
        if not simulate and agent == "farm":
            _require_token(token or farm_config.token, farm_config.state_dir)
        instances = [_monitor(spec) for spec in monitors]
        monitor = None
        if len(instances) == 1:
            monitor = instances[0]
        elif instances:
            monitor = FanoutMonitor(instances)
        results = run_config(
            parsed,
            simulate_only=simulate,
            log_results=log_results,
            monitor=monitor,
            narrate=narrate if verbose else None,
            on_result=show,
            token=token,
            port=port,
            farm_config=farm_config,
            agent=agent,
        )
    except FarmError as exc:
        fail(exc)
    finally:
        for instance in instances:
            close = getattr(instance, "close", None)
            if close is not None:
                close()
    failed = [r.label for r in results if not r.passed]
    if failed:
        click.secho(f"farm netjobs: failed: {', '.join(failed)}", fg="red", err=True)
        ctx.exit(EXIT_FAILED)
    ctx.exit(EXIT_OK)
